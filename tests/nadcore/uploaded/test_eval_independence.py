"""Per-sample independence where probe and poison jobs evaluate an uploaded model
(`nadcore.training.recipe.evaluate`, the probe's `_evaluate_vmap`;
`nadcore.uploaded.engine_assumptions.check_eval_batch`).

Validation checks independence at the sizes it knows (the small batches, the training batch of
128, the CPU plan's finite-difference block); probe and poison jobs evaluate their trained
models' accuracies in eval mode in batches of their own size: up to the whole test set for the
probe (here 1,000), 512 for poison. A model that mixed samples only in such batches passed
validation and its jobs succeeded with the accuracies of mixed batches. Now the first
evaluation batch of each evaluation is checked: a few rows again in a batch of their own.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from nadcore.poison.datasets import ImageDataset
from nadcore.poison.engine import train_classifier
from nadcore.poison.spec import PoisonSpec
from nadcore.probe import sandboxed as probe_sandboxed
from nadcore.probe.engine import run_probe
from nadcore.probe.spec import ProbeSpec
from nadcore.specs.architecture import ArchitectureRef
from nadcore.training.shards import ProbePartial
from nadcore.uploaded import engine_assumptions
from nadcore.uploaded.engine_assumptions import INDEPENDENCE_BATCH, AssumptionError
from nadcore.uploaded.network import register_archive
from nadcore.uploaded.validation import validate
from tests.helpers import save_archive

SHAPE = (1, 4, 4)
MIXES_ABOVE = 300  # above every size validation runs (at most 128 here), below 512 and 1,000
PROBE = dict(input_shape=SHAPE, directions={"kind": "random", "count": 2, "seed": 1},
             data={"num_train": 64, "num_test": 1000},
             training={"epochs": 2, "batch_size": 16})


class _Mlp(nn.Module):
    def __init__(self, outputs: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class _MixesInLargeBatches(_Mlp):
    """Subtracts the batch's maximum from its input in batches of more than 300
    (TorchScript)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 300:  # MIXES_ABOVE (TorchScript reads no globals)
            x = x - x.amax(0, keepdim=True)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class _MixesInLargeBatchesSmoothly(_Mlp):
    """The same without a branch, for torch.export (and the probe's vmap): the weight
    clamp(B - 300, 0, 1) is 0 up to 300 and 1 above (B counted by a sum: vmap has no batching
    rule for a symbolic size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (torch.ones_like(x[:, 0, 0, 0]).sum() - MIXES_ABOVE).clamp(0, 1)
        x = x - weight * x.amax(0, keepdim=True)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _archive(module: nn.Module, path):  # noqa: ANN001, ANN202
    """`module` in eval mode as .pt (TorchScript) or .pt2 (torch.export, dynamic batch)."""
    return save_archive(module.eval(), path, SHAPE)


def _validated(path) -> ArchitectureRef:  # noqa: ANN001
    """Validation passes (as the service's would), at sizes all below MIXES_ABOVE."""
    info = validate(path, SHAPE, "torch-default")
    assert max(info["batches"]) < MIXES_ABOVE, info["batches"]
    return ArchitectureRef(id="0" * 32, sha256=register_archive(path), init="torch-default")


def _probe_shard(spec: ProbeSpec, tmp_path) -> ProbePartial:  # noqa: ANN001
    """What the sandbox child runs for a probe shard of an uploaded architecture."""
    np.save(tmp_path / "directions.npy", np.eye(16, dtype=np.float32)[:2])
    data = probe_sandboxed.run("shard", {"spec": spec.model_dump(mode="json"), "start": 0,
                                         "stop": 2}, tmp_path, lambda done, total: None,
                               lambda info: None)
    return ProbePartial.load(io.BytesIO(data))


def _poison(ref: ArchitectureRef) -> tuple[PoisonSpec, ImageDataset, torch.Tensor]:
    """Three classes separated in every pixel, 400 training and test images: the first
    evaluation batch (512 at most) holds 400."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 3
    x = torch.rand((400, *SHAPE), generator=gen) * 0.2 + y.view(-1, 1, 1, 1) * 0.4
    spec = PoisonSpec(architecture=ref, dataset={"name": "digits"}, nads={"job": "x"},
                      indices=[0], training={"epochs": 2, "batch_size": 20, "lr": 0.1,
                                             "mean": (0.5,), "std": (0.5,)})
    return spec, ImageDataset(x, y, x.clone(), y.clone(), 3, "toy"), x


def _assert_names_the_batch(message: str, size: int) -> None:
    assert message.startswith("file: a trained uploaded network mixes the "
                              "samples of a batch where the engine runs it: in an evaluation "
                              f"batch of {size} inputs on cpu at fp32, the output of input "
                              ), message
    assert f"when it is evaluated again in a batch of {INDEPENDENCE_BATCH} of the batch's " \
        "inputs (fp32 rounding explains " in message, message
    assert "its accuracies would measure the batch, not the network" in message, message
    assert "no result" in message, message
    assert "compute each sample's output from that sample alone, whatever the batch size" \
        in message, message
    assert len(message) < 600, len(message)  # the worker quotes at most 600 characters


@pytest.mark.parametrize(("module", "suffix", "strategy"), [
    (_MixesInLargeBatches, "pt", None),  # TorchScript: the loop (recipe.evaluate)
    (_MixesInLargeBatchesSmoothly, "pt2", "vmap"),  # the probe's _evaluate_vmap
])
def test_a_probe_of_a_model_that_mixes_in_its_evaluation_batches_fails(
        tmp_path, module, suffix, strategy) -> None:  # noqa: ANN001
    """It passes validation; before the check its probe shard succeeded with the accuracies
    of 1,000-input batches."""
    spec = ProbeSpec(architecture=_validated(_archive(module(), tmp_path / f"m.{suffix}")),
                     **PROBE)
    with pytest.raises(AssumptionError) as exc:
        if strategy is None:
            _probe_shard(spec, tmp_path)
        else:
            run_probe(spec, np.eye(16, dtype=np.float32)[:2], device="cpu", strategy=strategy)
    _assert_names_the_batch(str(exc.value), 1000)


@pytest.mark.parametrize(("module", "suffix"), [(_MixesInLargeBatches, "pt"),
                                                (_MixesInLargeBatchesSmoothly, "pt2")])
def test_a_poison_run_of_a_model_that_mixes_in_its_evaluation_batches_fails(
        tmp_path, module, suffix) -> None:  # noqa: ANN001
    """Poison evaluates the fit of the training set and the test set in batches of 512."""
    spec, data, x = _poison(_validated(_archive(module(3), tmp_path / f"m.{suffix}")))
    with pytest.raises(AssumptionError) as exc:
        train_classifier(spec, data, x, device="cpu")
    _assert_names_the_batch(str(exc.value), 400)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    seen: list[dict] = []
    check = engine_assumptions.check_eval_batch

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(check(*args, **kwargs))
        return seen[-1]

    for where in ("nadcore.training.recipe", "nadcore.probe.engine"):
        monkeypatch.setattr(f"{where}.check_eval_batch", spy)
    return seen


@pytest.mark.parametrize(("suffix", "strategy"), [("pt", "loop"), ("pt2", "loop"),
                                                  ("pt2", "vmap")])
def test_the_check_leaves_a_normal_models_probe_bitwise_unchanged(
        tmp_path, suffix, strategy, monkeypatch) -> None:  # noqa: ANN001
    """The check re-evaluates rows on the side: the curves are the same bits with and without
    it, and it ran on every evaluation (2 epochs; 2 directions in the loop, 1 chunk in vmap),
    the trained models' differences far inside the tolerance."""
    spec = ProbeSpec(architecture=_validated(_archive(_Mlp(), tmp_path / f"n.{suffix}")),
                     **PROBE)
    directions = np.eye(16, dtype=np.float32)[:2]
    seen = _spy(monkeypatch)
    checked = run_probe(spec, directions, device="cpu", strategy=strategy)
    assert [s["block"] for s in seen] == [1000] * (4 if strategy == "loop" else 2), seen
    for s in seen:
        assert s["difference"] <= s["tolerance"] / 10, s
    monkeypatch.setattr("nadcore.probe.engine.eval_check", lambda *a: None)
    unchecked = run_probe(spec, directions, device="cpu", strategy=strategy)
    assert len(seen) == (4 if strategy == "loop" else 2)
    assert np.array_equal(checked.curves, unchecked.curves)
    assert np.array_equal(checked.accuracies, unchecked.accuracies)


def test_the_check_leaves_a_normal_models_poison_run_bitwise_unchanged(
        tmp_path, monkeypatch) -> None:  # noqa: ANN001
    spec, data, x = _poison(_validated(_archive(_Mlp(3), tmp_path / "n.pt")))
    seen = _spy(monkeypatch)
    checked = train_classifier(spec, data, x, device="cpu")
    assert [s["block"] for s in seen] == [400] * 4, seen  # 2 epochs, training and test set
    for s in seen:
        assert s["difference"] <= s["tolerance"] / 10, s
    monkeypatch.setattr("nadcore.poison.engine.eval_check", lambda *a: None)
    unchecked = train_classifier(spec, data, x, device="cpu")
    assert np.array_equal(checked.train_accuracy, unchecked.train_accuracy)
    assert np.array_equal(checked.test_accuracy, unchecked.test_accuracy)


def test_builtin_architectures_are_not_checked(monkeypatch) -> None:  # noqa: ANN001
    """Ours: they pay nothing."""
    for where in ("nadcore.training.recipe", "nadcore.probe.engine"):
        monkeypatch.setattr(f"{where}.check_eval_batch",
                            lambda *a, **k: pytest.fail("a built-in was checked"))
    for strategy in ("loop", "vmap"):
        run_probe(ProbeSpec(architecture="logreg", **PROBE), np.eye(16, dtype=np.float32)[:2],
                  device="cpu", strategy=strategy)
