"""Poisoning with NAD carriers and the flipped basis (docs/science.md, section 4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nadcore.poison.engine as poison
from nadcore.nads.engine import Cancelled
from nadcore.poison.datasets import ImageDataset, limit, load_digits
from nadcore.poison.engine import (
    class_carrier,
    complete_basis,
    example_images,
    flip_dataset,
    poison_dataset,
    run_poison,
    train_classifier,
)
from nadcore.poison.spec import PoisonSpec

# Digits with LeNet: NADs from NUM_NETWORKS networks, poisoned at index 0 and HIGH_INDEX.
NUM_NETWORKS = 100
HIGH_INDEX = 90
GAP_EPS = 2.0
GAP_EPOCHS = 6
MIN_GAP = 20.0  # percentage points of clean test accuracy


def _orthonormal_rows(k: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q.T[:k].astype(np.float32)


def _spec(**kw) -> PoisonSpec:
    base = {"architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"job": "J"},
            "indices": [0], "training": {"epochs": 1}}
    return PoisonSpec(**{**base, **kw})


def test_class_carrier_mapping_as_nads_md():
    i = 7
    assert class_carrier(0, i, 3) == (i, 0, -1)
    assert class_carrier(5, i, 3) == (i, 2, 1)  # 5 // 6 = 0
    assert class_carrier(7, i, 3) == (i + 1, 1, 1)
    assert class_carrier(6, i, 3) == (i + 1, 0, -1)
    assert [class_carrier(t, 0, 1) for t in range(4)] == [(0, 0, -1), (0, 0, 1), (1, 0, -1),
                                                         (1, 0, 1)]


@pytest.mark.parametrize("channels", [1, 3])
def test_poisoned_coefficient_is_exactly_eps(channels):
    h = w = 6
    k_classes, index, eps = 10, 3, 0.05
    nads = _orthonormal_rows(20, h * w)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((200, channels, h, w), generator=gen)
    y = torch.arange(200) % k_classes
    before = x.clone()
    xp = poison_dataset(x, y, nads, index, eps, num_classes=k_classes)
    assert torch.equal(x, before)  # a copy: the input (the clean set) is untouched
    assert xp.dtype == torch.float32 and xp.shape == x.shape
    for n in range(x.shape[0]):  # independent reference, one sample at a time
        row, ch, sign = class_carrier(int(y[n]), index, channels)
        carrier = torch.zeros((channels, h, w), dtype=torch.float64)
        v = torch.from_numpy(nads[row]).double()
        carrier[ch] = (v / v.norm()).view(h, w)
        coef = float((xp[n].double() * carrier).sum())
        assert coef == pytest.approx(sign * eps, abs=1e-6)
        orth_before = x[n].double() - float((x[n].double() * carrier).sum()) * carrier
        orth_after = xp[n].double() - coef * carrier
        assert torch.allclose(orth_after, orth_before, atol=1e-6)
        others = [c for c in range(channels) if c != ch]
        assert torch.equal(xp[n, others], x[n, others])


def test_poison_errors():
    x = torch.rand((10, 3, 4, 4))
    y = torch.arange(10)
    with pytest.raises(ValueError, match="1-channel H x W"):
        poison_dataset(x, y, _orthonormal_rows(10, 48), 0, 0.1)
    nads = _orthonormal_rows(5, 16)
    poison_dataset(x, y, nads, 3, 0.1)  # 10 classes, 3 channels: rows 3..4
    with pytest.raises(ValueError, match="largest index is 3"):
        poison_dataset(x, y, nads, 4, 0.1)
    with pytest.raises(ValueError, match="more classes than the NAD array can carry"):
        poison_dataset(torch.rand((10, 1, 4, 4)), y, nads, 1, 0.1)  # 1 channel: rows 1..5


@pytest.mark.parametrize("missing", [0, 1])
def test_flip_is_an_isometry_and_its_own_inverse(missing):
    h = w = 5
    d = h * w
    nads = _orthonormal_rows(d - missing, d, seed=3)
    x = torch.rand((30, 2, h, w), generator=torch.Generator().manual_seed(1))
    xf = flip_dataset(x, nads)
    assert xf.shape == x.shape and xf.dtype == torch.float32
    norms = x.flatten(2).double().norm(dim=2)
    assert torch.allclose(xf.flatten(2).double().norm(dim=2), norms, rtol=1e-6)
    assert torch.allclose(flip_dataset(xf, nads), x, atol=1e-6)
    u = complete_basis(nads)
    assert torch.allclose(u.T @ u, torch.eye(d, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(u[:, : d - missing].T.float(), torch.from_numpy(nads), atol=1e-6)
    # the first NAD becomes the last basis vector and vice versa
    first = torch.from_numpy(nads[0]).view(1, 1, h, w)
    assert torch.allclose(flip_dataset(first, nads).double().view(-1), u[:, -1], atol=1e-6)
    with pytest.raises(ValueError, match="complete NAD basis"):
        flip_dataset(x, nads[:-2] if missing == 0 else nads[:-1])


def _tiny_digits(n_train: int = 200, n_test: int = 100) -> ImageDataset:
    return limit(load_digits(), n_train, n_test)


def test_run_poison_trains_on_poisoned_set_and_tests_clean(monkeypatch):
    data = _tiny_digits()
    nads = _orthonormal_rows(40, 1024)
    seen = []
    real = poison.train_classifier

    def spy(spec, d, x_train, **kw):
        seen.append((d, x_train, kw["index_position"]))
        return real(spec, d, x_train, **kw)

    monkeypatch.setattr(poison, "train_classifier", spy)
    spec = _spec(indices=[2, 30], eps=0.3, training={"epochs": 1})
    results = run_poison(spec, data, nads, device="cpu")
    assert [r.info["index"] for r in results] == [2, 30]
    for (d, x_train, _), index in zip(seen, [2, 30], strict=True):
        assert torch.equal(d.x_test, data.x_test)  # the clean test set
        assert torch.equal(x_train, poison_dataset(data.x_train, data.y_train, nads, index, 0.3,
                                                   num_classes=10))
    seen.clear()
    basis = np.eye(1024, dtype=np.float32)  # a cheap complete basis: flip reverses the pixels
    flip = run_poison(_spec(mode="flip", training={"epochs": 1}), data, basis, device="cpu")
    assert len(flip) == 1 and flip[0].info["mode"] == "flip"
    assert torch.equal(seen[0][0].x_test, data.x_test.flip(2, 3))
    assert torch.equal(seen[0][1], data.x_train.flip(2, 3))


def test_shard_gives_the_numbers_of_the_whole_run():
    data = _tiny_digits()
    nads = _orthonormal_rows(40, 1024)
    spec = _spec(indices=[0, 5, 20], eps=0.5, training={"epochs": 2})
    whole = run_poison(spec, data, nads, device="cpu")
    shard = run_poison(spec, data, nads, positions=range(2, 3), device="cpu")
    assert np.array_equal(shard[0].test_accuracy, whole[2].test_accuracy)
    assert np.array_equal(shard[0].train_accuracy, whole[2].train_accuracy)
    assert whole[0].train_accuracy.shape == (2,) and whole[0].info["index_position"] == 0
    assert whole[0].info["normalization"]["source"] == "training set"


def test_progress_cancel_and_examples():
    data = _tiny_digits(100, 50)
    nads = _orthonormal_rows(40, 1024)
    x = poison_dataset(data.x_train, data.y_train, nads, 0, 1.0, num_classes=10)
    calls = []
    res = train_classifier(_spec(training={"epochs": 2}), data, x, device="cpu",
                           progress=lambda e, n: calls.append((e, n)))
    assert calls == [(1, 2), (2, 2)]
    assert res.test_accuracy.shape == (2,) and np.all((res.test_accuracy >= 0)
                                                      & (res.test_accuracy <= 100))
    with pytest.raises(Cancelled):
        train_classifier(_spec(), data, x, device="cpu", should_stop=lambda: True)
    ex = example_images(data, x, n=4)
    assert ex["clean"].shape == ex["poisoned"].shape == ex["difference"].shape == (4, 1, 32, 32)
    assert ex["labels"].tolist() == [0, 1, 2, 3]
    assert np.allclose(ex["poisoned"] - ex["clean"], ex["difference"])


@pytest.fixture(scope="module")
def lenet_nads() -> np.ndarray:
    from nadcore import estimate_nads

    return estimate_nads("lenet", (1, 32, 32), num_networks=NUM_NETWORKS, seed=0).nads


@pytest.mark.slow
def test_digits_low_index_hurts_more_than_high_index(lenet_nads):
    """The paper's finding on digits: carriers at NAD index 0 are picked up and clean test
    accuracy drops; at a high index the network ignores them (BENCHMARKS.md has the figures)."""
    data = load_digits()
    spec = _spec(indices=[0, HIGH_INDEX], eps=GAP_EPS, training={"epochs": GAP_EPOCHS})
    low, high = run_poison(spec, data, lenet_nads, device="cpu")
    print(f"\ndigits lenet eps {GAP_EPS}: index 0 train {low.train_accuracy[-1]:.1f} test "
          f"{low.test_accuracy[-1]:.1f}; index {HIGH_INDEX} train {high.train_accuracy[-1]:.1f}"
          f" test {high.test_accuracy[-1]:.1f}")
    assert low.train_accuracy[-1] > 90 and high.train_accuracy[-1] > 90
    assert high.test_accuracy[-1] - low.test_accuracy[-1] > MIN_GAP


def _chance_bound(num_test: int, delta: float = 1e-6) -> float:
    """Percentage points around 50 % that a 2-class predictor independent of the test labels
    exceeds with probability at most delta (Hoeffding: 2 exp(-2 n t^2) <= delta)."""
    return 100 * math.sqrt(math.log(2 / delta) / (2 * num_test))


def test_carrier_against_the_clean_baseline_of_the_same_run():
    """Two classes whose ONLY label information is their coefficient along NAD row 0: +1 for class
    0, -1 for class 1 (the rest is label-independent noise orthogonal to it). Poisoning at index
    0 with eps 1 sets that coefficient to -1 for class 0 and +1 for class 1 (docs/science.md,
    section 4: sign - for even t): the carrier carries the labels inverted. Trained on the clean
    set the classifier must beat chance on the clean test set; trained, with the same spec and
    seeds, on the poisoned set it must fall below chance by the same margin (it can only have
    learned the inverted carrier). Margins: _chance_bound(400) = 13.5 pp, outside which a
    predictor that learned nothing lands with probability <= 1e-6."""
    d, n = 16, 400
    nads = _orthonormal_rows(d, d, seed=4)
    v = torch.from_numpy(nads[0]).double()
    gen = torch.Generator().manual_seed(0)

    def draw(num: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num) % 2
        noise = torch.randn((num, d), generator=gen, dtype=torch.float64) * 0.3
        noise -= torch.outer(noise @ v, v)
        x = noise + torch.outer(1.0 - 2.0 * y.double(), v)  # +1 for class 0, -1 for class 1
        return x.float().view(num, 1, 4, 4), y

    x_train, y_train = draw(n)
    x_test, y_test = draw(n)
    data = ImageDataset(x_train, y_train, x_test, y_test, 2, "carrier-only")
    spec = _spec(architecture="logreg", indices=[0], eps=1.0,
                 training={"epochs": 10, "batch_size": 50, "lr": 0.1, "mean": (0.0,),
                           "std": (1.0,)})
    poisoned_x = poison_dataset(x_train, y_train, nads, 0, 1.0, num_classes=2)
    clean = train_classifier(spec, data, x_train, device="cpu")
    poisoned = train_classifier(spec, data, poisoned_x, device="cpu")
    bound = _chance_bound(n)
    print(f"clean baseline {clean.test_accuracy[-1]:.1f} %, poisoned "
          f"{poisoned.test_accuracy[-1]:.1f} % (chance +- {bound:.1f})")
    assert clean.test_accuracy[-1] > 50 + bound
    assert poisoned.test_accuracy[-1] < 50 - bound
    # both fit what they were given: the train accuracy is measured on their own training set
    assert clean.train_accuracy[-1] > 50 + bound and poisoned.train_accuracy[-1] > 50 + bound
