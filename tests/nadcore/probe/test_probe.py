"""nadcore.probe.engine: the distribution D(v), the direction families, batched and one-at-a-time
training, and the paper's directional-bias findings at test scale."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nadcore.nads.engine import Cancelled
from nadcore.probe.engine import (
    _Direction,
    direction_frequencies,
    make_directions,
    run_probe,
    sample_dataset,
)
from nadcore.probe.spec import ProbeSpec
from store.settings import SHIPPED_CATALOG_DIR


def _spec(directions: dict, arch: str = "logreg", shape=(1, 32, 32), **kw) -> ProbeSpec:
    return ProbeSpec(architecture=arch, input_shape=shape, directions=directions, **kw)


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------
# D(v)


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 8, 8)])
def test_dataset_signal_noise_and_labels(shape):
    d = int(np.prod(shape))
    v = _unit(np.random.default_rng(1), d)
    num, sigma, eps = 2001, 3.0, 1.0
    x, labels = sample_dataset(v, shape, num, sigma, eps, torch.Generator().manual_seed(0))
    assert x.shape == (num, *shape) and x.dtype == torch.float32
    assert labels.dtype == torch.int64
    x64 = x.reshape(num, -1).double().numpy()
    coef = x64 @ v
    y = labels.numpy() * 2 - 1  # class 1 <-> y = +1
    # the component along v is exactly y eps/2 (float32 rounding of x only)
    assert np.abs(coef - y * eps / 2).max() < 2e-5
    # the rest is the noise, orthogonal to v, with per-pixel std sigma (1022 or 191 dims)
    noise = x64 - np.outer(coef, v)
    assert np.abs(noise @ v).max() < 1e-9
    assert abs(noise.std() - sigma) < 0.02 * sigma
    # balanced (odd num: one more -1) and shuffled
    assert int(labels.sum()) == num // 2
    assert 0 < labels[: num // 2].sum() < num // 2


def test_dataset_draws_are_independent():
    shape = (1, 32, 32)
    v = _unit(np.random.default_rng(2), 1024)
    a, la = sample_dataset(v, shape, 200, 3.0, 1.0, torch.Generator().manual_seed(1))
    b, lb = sample_dataset(v, shape, 200, 3.0, 1.0, torch.Generator().manual_seed(2))
    again, _ = sample_dataset(v, shape, 200, 3.0, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, again)  # seeded
    # different seeds: no sample of one draw resembles any sample of the other (not a shift
    # or a permutation); independent 1022-dim noises have |corr| ~ 1/32, max ~ 0.16
    na = a.reshape(200, -1).double()
    nb = b.reshape(200, -1).double()
    na, nb = na / na.norm(dim=1, keepdim=True), nb / nb.norm(dim=1, keepdim=True)
    assert (na @ nb.T).abs().max() < 0.3
    assert not torch.equal(la, lb)


def test_train_and_test_sets_of_a_direction_are_independent():
    spec = _spec({"kind": "random", "count": 1}, data={"num_train": 300, "num_test": 300})
    d = _Direction(spec, make_directions(spec)[0], index=0)
    tr = d.x_train.reshape(300, -1).double()
    te = d.x_test.reshape(300, -1).double()
    tr, te = tr / tr.norm(dim=1, keepdim=True), te / te.norm(dim=1, keepdim=True)
    assert (tr @ te.T).abs().max() < 0.3
    # another direction index of the same job gets other data
    other = _Direction(spec, make_directions(spec)[0], index=1)
    assert not torch.equal(other.x_train, d.x_train)


# ---------------------------------------------------------------------------------------------
# Directions


def test_fourier_directions_are_real_unit_single_frequency():
    freqs = [(0, 1), (3, 4), (8, 8), (15, 15), (16, 3), (31, 2)]
    for phase in ("cos", "sin"):
        dirs = make_directions(_spec({"kind": "fourier", "frequencies": freqs, "phase": phase}))
        assert dirs.shape == (len(freqs), 1024) and dirs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-6)
        for (ky, kx), row in zip(freqs, dirs, strict=True):
            energy = np.abs(np.fft.fft2(row.reshape(32, 32).astype(np.float64))) ** 2
            mirror = ((-ky) % 32, (-kx) % 32)
            on = energy[ky, kx] + (energy[mirror] if mirror != (ky, kx) else 0.0)
            assert on / energy.sum() > 1 - 1e-10, (phase, ky, kx)
    cos = make_directions(_spec({"kind": "fourier", "frequencies": [(3, 4)], "phase": "cos"}))
    sin = make_directions(_spec({"kind": "fourier", "frequencies": [(3, 4)], "phase": "sin"}))
    assert abs(float(cos[0] @ sin[0])) < 1e-6
    # the paper's example: imaginary part of rfft2 coefficient (3, 4) set to 1 -> a sine image
    spectrum = np.zeros((32, 17), dtype=np.complex128)
    spectrum[3, 4] = 1j
    paper = np.fft.irfft2(spectrum, s=(32, 32)).ravel()
    paper /= np.linalg.norm(paper)
    assert abs(abs(float(paper @ sin[0])) - 1) < 1e-6


def test_fourier_multichannel_is_the_same_image_in_every_channel():
    dirs = make_directions(_spec({"kind": "fourier", "frequencies": [(1, 2)]}, shape=(3, 8, 8)))
    img = dirs[0].reshape(3, 8, 8)
    np.testing.assert_allclose(img[0], img[2])
    assert abs(np.linalg.norm(img) - 1) < 1e-6


def test_fourier_grid_counts_order_and_dc():
    """A 32 x 32 grid: 1,024 frequencies, of which 4 are their own conjugates (ky, kx in
    {0, 16}) and 1,020 form 510 conjugate pairs, so the half-plane holds 514 cosines (510
    pairs + 4) and 510 sines (the 4 self-conjugate sine images are zero); stride 4: 64
    frequencies, the same 4 self-conjugate ones, 30 pairs -> 34 cosines, 30 sines."""
    spec = _spec({"kind": "fourier"})
    assert make_directions(spec).shape == (514, 1024)
    freqs = direction_frequencies(spec)
    assert freqs[:3] == [(0, 0), (0, 1), (0, 2)] and freqs[17] == (1, 0)  # row-major (ky, kx)
    assert (0, 16) in freqs and (0, 17) not in freqs  # (0, 17) is the conjugate of (0, 15)
    strided = _spec({"kind": "fourier", "grid_stride": 4})
    assert make_directions(strided).shape == (34, 1024)
    assert direction_frequencies(strided)[:2] == [(0, 0), (0, 4)]
    assert len(direction_frequencies(_spec({"kind": "fourier", "grid_stride": 4,
                                            "phase": "sin"}))) == 30
    odd = _spec({"kind": "fourier", "grid_stride": 3}, shape=(1, 10, 10))
    # 0, 3, 6, 9 on each axis: the conjugate of 3 is 7, off the grid, so no pair but DC
    assert len(direction_frequencies(odd)) == 16
    # sine: DC and Nyquist images are zero; a grid skips them, a list is rejected
    sin_grid = _spec({"kind": "fourier", "phase": "sin"})
    sin_freqs = direction_frequencies(sin_grid)
    assert len(sin_freqs) == 510
    assert (0, 0) not in sin_freqs and (16, 16) not in sin_freqs
    with pytest.raises(ValidationError, match=r"directions.frequencies.*\(0, 0\).*zero"):
        _spec({"kind": "fourier", "frequencies": [(0, 0)], "phase": "sin"})
    # cosine DC is the constant image
    dc = make_directions(_spec({"kind": "fourier", "frequencies": [(0, 0)]}))
    np.testing.assert_allclose(dc[0], 1 / 32, rtol=1e-6)
    assert direction_frequencies(_spec({"kind": "random", "count": 2})) is None


def _slow_fourier_image(ky: int, kx: int, h: int, w: int, phase: str) -> np.ndarray | None:
    """The real image of frequency (ky, kx), from its definition, without the engine."""
    image = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            angle = 2 * math.pi * (ky * y / h + kx * x / w)
            image[y, x] = math.cos(angle) if phase == "cos" else math.sin(angle)
    norm = np.linalg.norm(image)
    return None if norm < 1e-9 else (image / norm).ravel()


@pytest.mark.parametrize(("shape", "stride"), [((32, 32), 4), ((32, 32), 1), ((10, 10), 3),
                                                ((7, 9), 2), ((6, 5), 1), ((1, 4), 1)])
@pytest.mark.parametrize("phase", ["cos", "sin"])
def test_the_half_plane_trains_each_direction_once_and_covers_the_grid(shape, stride, phase):
    """The independent check of the half-plane, by explicit dot products: (a) no two trained
    directions are the same up to sign (|<u, v>| = 1 would be a duplicate; distinct Fourier
    directions are orthogonal, so every other |<u, v>| is ~0), and (b) every non-zero image of
    the whole grid, (ky, kx) and (-ky, -kx) alike, is +-1 times a trained direction: the
    trained set with its mirrors covers the grid."""
    h, w = shape
    spec = _spec({"kind": "fourier", "grid_stride": stride, "phase": phase}, shape=(1, h, w))
    trained = make_directions(spec).astype(np.float64)
    gram = np.abs(trained @ trained.T)
    np.fill_diagonal(gram, 0.0)
    assert gram.max() < 1e-5, "two trained directions are the same up to sign"
    full = [(ky, kx) for ky in range(0, h, stride) for kx in range(0, w, stride)]
    covered = 0
    for ky, kx in full:
        image = _slow_fourier_image(ky, kx, h, w, phase)
        if image is None:  # a zero sine image: not a direction
            continue
        assert np.abs(trained @ image).max() == pytest.approx(1.0, abs=1e-6), (ky, kx)
        covered += 1
    assert covered >= len(trained)  # ... and nothing was trained that is not on the grid


def test_listing_a_frequency_and_its_conjugate_is_refused():
    with pytest.raises(ValidationError, match=r"\(0, 28\) is the conjugate of \(0, 4\)"):
        _spec({"kind": "fourier", "frequencies": [(0, 4), (0, 28)]})
    with pytest.raises(ValidationError, match=r"\(3, 1\) repeats \(3, 1\)"):
        _spec({"kind": "fourier", "frequencies": [(3, 1), (1, 2), (3, 1)]})
    # the Nyquist column is its own conjugate along x: (5, 16) pairs with (27, 16)
    with pytest.raises(ValidationError, match=r"\(27, 16\) is the conjugate of \(5, 16\)"):
        _spec({"kind": "fourier", "frequencies": [(5, 16), (27, 16)]})
    assert len(make_directions(_spec({"kind": "fourier", "frequencies": [(0, 4), (4, 0)]}))) == 2


def test_random_custom_and_nad_directions():
    r1 = make_directions(_spec({"kind": "random", "count": 5, "seed": 3}))
    r2 = make_directions(_spec({"kind": "random", "count": 5, "seed": 3}))
    r3 = make_directions(_spec({"kind": "random", "count": 5, "seed": 4}))
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, r3)
    np.testing.assert_allclose(np.linalg.norm(r1, axis=1), 1.0, atol=1e-6)

    rows = [[0.0] * 63 + [2.0], [1.0] * 64]
    custom = make_directions(_spec({"kind": "custom", "values": rows}, shape=(1, 8, 8)))
    np.testing.assert_allclose(custom[0, -1], 1.0)
    np.testing.assert_allclose(custom[1], 1 / 8, rtol=1e-6)

    nads = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))[0].T
    got = make_directions(_spec({"kind": "nad", "indices": [3, 0]}, shape=(1, 8, 8)), nads)
    np.testing.assert_allclose(got, nads[[3, 0]], atol=1e-6)
    got = make_directions(
        _spec({"kind": "nad", "start": 10, "stop": 20, "step": 5}, shape=(1, 8, 8)), nads)
    np.testing.assert_allclose(got, nads[[10, 15]], atol=1e-6)


def test_direction_errors():
    nads = np.eye(64, dtype=np.float32)[:40]
    with pytest.raises(ValueError, match=r"directions.indices.*40.*< 40"):
        make_directions(_spec({"kind": "nad", "indices": [1, 40]}, shape=(1, 8, 8)), nads)
    with pytest.raises(ValueError, match=r"directions.stop.*40"):
        make_directions(_spec({"kind": "nad", "start": 30, "stop": 45}, shape=(1, 8, 8)), nads)
    with pytest.raises(ValueError, match=r"1-channel.*3 channels"):
        make_directions(_spec({"kind": "nad", "indices": [0]}, shape=(3, 8, 8)), nads)
    with pytest.raises(ValueError, match=r"D = 64.*C\*H\*W = 100"):
        make_directions(_spec({"kind": "nad", "indices": [0]}, shape=(1, 10, 10)), nads)
    with pytest.raises(ValueError, match="needs the NAD array"):
        make_directions(_spec({"kind": "nad", "indices": [0]}, shape=(1, 8, 8)))
    with pytest.raises(ValueError, match=r"directions.values: row 1 is zero"):
        make_directions(_spec({"kind": "custom", "values": [[1.0] * 64, [0.0] * 64]},
                              shape=(1, 8, 8)))
    with pytest.raises(ValidationError, match=r"row 0 has 63 values"):
        _spec({"kind": "custom", "values": [[1.0] * 63]}, shape=(1, 8, 8))
    empty = _spec({"kind": "fourier", "grid_stride": 16, "phase": "sin"})
    with pytest.raises(ValueError, match="sine image is zero"):
        make_directions(empty)


# ---------------------------------------------------------------------------------------------
# Training


def _chance_bound(num_test: int, delta: float = 1e-6) -> float:
    """Half-width (percentage points) around 50 % that a classifier whose predictions are
    independent of the test labels leaves with probability at most `delta`: the labels are a
    balanced random permutation, so the number right is hypergeometric with mean num_test / 2,
    and Hoeffding's bound (valid without replacement) gives
    P(|acc - 1/2| >= t) <= 2 exp(-2 num_test t^2)."""
    return 100 * math.sqrt(math.log(2 / delta) / (2 * num_test))


def test_logreg_must_learn_any_direction_at_the_papers_recipe():
    """The paper's full recipe (10,000 / 10,000 samples, 20 epochs, docs/science.md, section 3) for
    logistic regression, which learns every direction: D(v) has no noise along v, so the Bayes
    accuracy is 100 % and the paper reports ~100 % for logreg on every direction. Near-perfect
    is asserted: >= 99 %, the paper's ~100 % less 1 pp, while a trainer that learns nothing
    stays within 50 +- 2.7 pp (_chance_bound(10,000)). (At the issue's 2,000 training samples
    the same recipe gives 51-56 %: BENCHMARKS.md.)"""
    spec = ProbeSpec.model_validate({
        "architecture": "logreg", "input_shape": [1, 32, 32],
        "directions": {"kind": "fourier", "grid_stride": 16, "phase": "cos"},
        "data": {"num_train": 10_000, "num_test": 10_000, "sigma": 3.0, "epsilon": 1.0},
        "training": {"epochs": 20}, "seed": 0})
    result = run_probe(spec, make_directions(spec))
    print("logreg, paper's recipe, stride-16 grid of cosines:", result.accuracies)
    assert result.accuracies.shape == (4,) and result.curves.shape == (4, 20, 4)
    assert result.accuracies.min() >= 99.0
    curves = result.curves
    assert np.all(curves[:, -1, 0] < curves[:, 0, 0])  # train loss decreases
    np.testing.assert_allclose(curves[:, -1, 3], result.accuracies)


def test_a_probe_without_signal_must_stay_at_chance():
    """epsilon = 1e-30: the signal y (eps/2) v is 1e-32 per pixel, below float32's resolution
    of every input value larger than ~1e-25 (probability ~1e-26 per N(0, 9) pixel), so the
    float32 inputs are the label-independent noise w_perp and nothing can be learned. The
    test accuracy must be 50 % within _chance_bound(num_test) (delta 1e-6). logreg in
    D = 1,024 on 2,000 samples can fit its training set by the noise, so a probe that reported
    training accuracy, or evaluated on the training draw, would fail here."""
    num_test = 10_000
    spec = ProbeSpec.model_validate({
        "architecture": "logreg", "input_shape": [1, 32, 32],
        "directions": {"kind": "fourier", "frequencies": [[0, 1], [8, 8]], "phase": "cos"},
        "data": {"num_train": 2000, "num_test": num_test, "sigma": 3.0, "epsilon": 1e-30},
        "training": {"epochs": 5}, "seed": 0})
    result = run_probe(spec, make_directions(spec))
    bound = _chance_bound(num_test)
    print("no signal:", result.accuracies, "bound", bound, "train acc", result.curves[:, -1, 1])
    assert np.all(np.abs(result.accuracies - 50.0) < bound)


def test_vmap_and_loop_agree():
    """Same seeds, same math. LogReg (10,000 samples: it learns): identical arithmetic
    up to summation order, so the accuracies agree to 0.1 pp. LeNet: vmap runs grouped
    convolutions whose float32 rounding differs from the plain ones by ~1e-7 relative; SGD
    amplifies it slowly, so losses agree to 1e-3 and accuracies (1,000 test samples,
    0.1 pp each) to 1.5 pp (measured: 0 to 0.5 pp on the CPU, up to 0.95 pp on an H100)."""
    for arch, num_train, epochs, tol in (("logreg", 10_000, 5, 0.1), ("lenet", 1000, 2, 1.5)):
        spec = _spec({"kind": "fourier", "frequencies": [(0, 1), (5, 3), (12, 30)]}, arch,
                     data={"num_train": num_train, "num_test": 1000},
                     training={"epochs": epochs})
        dirs = make_directions(spec)
        a = run_probe(spec, dirs, strategy="vmap")
        b = run_probe(spec, dirs, strategy="loop")
        print(arch, "vmap", a.accuracies, "loop", b.accuracies)
        assert a.info["strategy"] == "vmap" and b.info["strategy"] == "loop"
        np.testing.assert_allclose(a.curves[..., 0], b.curves[..., 0], rtol=1e-3)
        assert np.abs(a.accuracies - b.accuracies).max() <= tol
        if arch == "logreg":
            assert a.accuracies.min() > 95


@pytest.mark.slow
def test_vmap_batchnorm_matches_loop():
    """ResNet-18 (BatchNorm): batched training uses batch statistics and updates each model's
    running statistics, which the test pass then uses (eval mode), exactly like the loop.
    num_train 129 with batch 64: the trailing batch of one sample is dropped for BatchNorm.
    At 25x25, the least ResNet-18 takes (0.6 of 32x32's cost: the semantics do not depend on it)."""
    spec = _spec({"kind": "random", "count": 2}, "resnet18", shape=(1, 25, 25),
                 data={"num_train": 129, "num_test": 64},
                 training={"epochs": 1, "batch_size": 64, "momentum": 0.9,
                           "weight_decay": 5e-4})
    dirs = make_directions(spec)
    a = run_probe(spec, dirs, strategy="vmap")
    b = run_probe(spec, dirs, strategy="loop")
    assert a.info["batches_per_epoch"] == 2
    np.testing.assert_allclose(a.curves[..., :3], b.curves[..., :3], rtol=1e-3)
    np.testing.assert_array_equal(a.accuracies, b.accuracies)


def test_shards_and_chunks_give_the_same_numbers():
    spec = _spec({"kind": "random", "count": 5}, data={"num_train": 300, "num_test": 200},
                 training={"epochs": 2, "momentum": 0.9, "weight_decay": 1e-3})
    dirs = make_directions(spec)
    whole = run_probe(spec, dirs, strategy="vmap")
    shard = run_probe(spec, dirs[3:], first_index=3, strategy="vmap", chunk_size=1)
    np.testing.assert_allclose(shard.curves, whole.curves[3:], rtol=1e-5, atol=1e-4)
    seen = []
    run_probe(spec, dirs[:2], strategy="loop", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (4, 4) and all(t == 4 for _, t in seen)
    with pytest.raises(Cancelled):
        run_probe(spec, dirs, should_stop=lambda: True)


@pytest.mark.slow
def test_lenet_first_nads_beat_last_nads(lenet_nads):
    """The paper (figure 3): LeNet learns D(u_i) along its first NADs, not along its last.

    Paper scale is 10,000 / 10,000 samples and 20 epochs (~100 % vs ~50 %); here 10,000 /
    1,000 and 4 epochs, where LeNet has only started to escape the 50 % plateau along its
    first NADs (measured on the catalog's NADs: 70.7, 77.3, 69.2 % vs 50.7, 48.7, 49.7 %;
    the paper's published LeNet Fourier accuracies top out at ~81 % for comparison)."""
    first, last = [0, 1, 2], [1020, 1021, 1022]
    spec = _spec({"kind": "nad", "indices": first + last}, "lenet",
                 data={"num_train": 10_000, "num_test": 1000}, training={"epochs": 4})
    t0 = time.perf_counter()
    result = run_probe(spec, make_directions(spec, lenet_nads))
    acc = result.accuracies
    print(f"LeNet NADs {first}: {acc[:3]}, NADs {last}: {acc[3:]} "
          f"({time.perf_counter() - t0:.1f} s)")
    # Thresholds from the test size, not from the measured figures: with 1,000 test samples a
    # direction that is not learned stays within 50 +- 8.5 pp (_chance_bound, delta 1e-6), so
    # the last NADs (the paper: ~50 % beyond index 800) must lie below 58.5 %, and every first
    # NAD must be learned beyond that noise (> 58.5 %: it is not at chance). Their means differ
    # by more than 5 sd of the binomial noise of a difference of two means of 3 accuracies
    # (sd 100 sqrt(2 * 0.25 / (3 * 1000)) = 1.3 pp, so > 6.5 pp).
    bound = _chance_bound(1000)
    assert acc[3:].max() < 50 + bound
    assert acc[:3].min() > 50 + bound
    assert acc[:3].mean() - acc[3:].mean() > 5 * 100 * math.sqrt(2 * 0.25 / 3000)


@pytest.fixture(scope="module")
def lenet_nads() -> np.ndarray:
    """The paper's LeNet NADs as the catalog ships them: finite differences over 10,000
    networks, all 1,024 rows (tests/nads/test_catalog_data.py checks that the shipped arrays are
    what their provenance says; computing 1,100 networks here took 115 s of the suite)."""
    nads = np.load(SHIPPED_CATALOG_DIR / "lenet" / "nads.npy")
    assert nads.shape == (1024, 1024), nads.shape
    return nads


# ---------------------------------------------------------------------------------------------
# Replicates and intervals


def test_replicates_have_their_own_seeds_and_shard_anywhere():
    """Unit u of a job with R replicates trains direction u mod n with the seed of replicate
    u // n: replicate 0 is the job without replicates, replicate 1 differs from it (its own
    networks and data), and a shard boundary inside a replicate changes nothing."""
    from nadcore.training.shards import run_probe_shard

    base = {"kind": "random", "count": 3, "seed": 1}
    one = _spec(base, shape=(1, 4, 4), data={"num_train": 32, "num_test": 200},
                training={"epochs": 1})
    two = one.model_copy(update={"replicates": 2})
    dirs = make_directions(one)
    quiet = {"progress": lambda d, t: None, "should_stop": lambda: False}
    single = run_probe_shard(one, dirs, 0, 3, **quiet)
    whole = run_probe_shard(two, dirs, 0, 6, **quiet)
    np.testing.assert_array_equal(whole.accuracies[:3], single.accuracies)
    assert not np.array_equal(whole.curves[3:], whole.curves[:3])
    split = [run_probe_shard(two, dirs, a, b, **quiet) for a, b in ((0, 2), (2, 5), (5, 6))]
    np.testing.assert_array_equal(np.concatenate([p.accuracies for p in split]),
                                  whole.accuracies)
    np.testing.assert_array_equal(np.concatenate([p.curves for p in split]), whole.curves)
    with pytest.raises(ValueError, match=r"\[4, 7\).*\[0, 6\)"):
        run_probe_shard(two, dirs, 4, 7, **quiet)


def test_wilson_and_t_intervals_against_closed_forms():
    from nadcore.probe.intervals import across_replicates, direction_intervals, wilson

    # 0 of n right: Wilson's upper end is z^2 / (n + z^2) (z = 1.96 at 95 %), its lower 0
    low, high = wilson(np.array([0.0]), 10)
    z2 = 1.959964 ** 2
    assert low[0] == pytest.approx(0.0, abs=1e-9)
    assert high[0] == pytest.approx(100 * z2 / (10 + z2), abs=1e-4)
    # p = 1/2: symmetric about 50, centre exactly 50
    low, high = wilson(np.array([50.0]), 10_000)
    assert (low[0] + high[0]) / 2 == pytest.approx(50.0)
    # half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 0.97998 points at n = 10,000
    assert high[0] - 50 == pytest.approx(100 * 1.959964 * math.sqrt(0.25 / 1e4 + z2 / 4e8)
                                         / (1 + z2 / 1e4), rel=1e-6)
    # two replicates 50 and 60: mean 55, s = 7.0711, t(0.975, 1) = 12.7062: +-63.53
    low, high = across_replicates(np.array([[50.0], [60.0]]))
    assert (low[0], high[0]) == pytest.approx((55 - 63.5310, 55 + 63.5310), abs=1e-3)
    mean, low, high, how = direction_intervals(np.array([[80.0, 50.0]]), 2000)
    assert list(mean) == [80.0, 50.0] and "Wilson" in how
    assert low[0] > 50 and low[1] < 50 < high[1]
    # replicates that agree (all 100 %) have no spread, but the test set is finite: the
    # interval is at least Wilson's of one test set (100 n / (n + z^2) at 100 %), not [100, 100]
    mean, low, high, how = direction_intervals(np.array([[100.0], [100.0], [100.0]]), 200)
    assert mean[0] == 100.0 and high[0] == 100.0
    assert low[0] == pytest.approx(100 * 200 / (200 + z2), abs=1e-4)
    assert "Student t" in how and "never narrower than the Wilson interval on 200" in how
    # a wide t interval is kept, cut to [0, 100]: 50 and 60 give 55 +- 63.5
    mean, low, high, _ = direction_intervals(np.array([[50.0], [60.0]]), 200)
    assert (low[0], high[0]) == (0.0, 100.0)
    # between the two: the t interval where it is the wider
    values = np.array([[70.0], [72.0], [74.0]])
    t_low, t_high = across_replicates(values)
    mean, low, high, _ = direction_intervals(values, 100_000)
    assert (low[0], high[0]) == pytest.approx((t_low[0], t_high[0]))
