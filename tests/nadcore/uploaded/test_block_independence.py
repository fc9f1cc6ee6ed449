"""Per-sample independence where the engine runs an uploaded network (nadcore.nads.gradients,
`nadcore.uploaded.engine_assumptions.check_block`).

Validation checks independence on the CPU, in float32, at the batch sizes of the CPU plan; the
engine then runs the network at its plan's block size, on its device, at the job's precision:
the GPU plan's finite-difference blocks are larger than the CPU plan's (here 512 inputs against
256), and a network can branch on anything validation did not see (the batch size above some
threshold, the device, the dtype under bf16 autocast). Such a network passed validation and
its NAD jobs succeeded with NADs of the batch. The engine now re-evaluates a few rows of the
first block (and of a smaller last block, a size validation did not run) of the networks of
each chunk in a batch of their own and fails the job when they disagree: every network from
D = 800, every few below (here, D = 256: every 4th of a chunk, its first always).

The GPU plan's blocks are emulated on this CPU by planning as for a GPU
(`nadcore.nads.schedule._pixel_block` with the device type "cuda"): the engine then evaluates
blocks of the GPU's size, which is what the check must see.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from nadcore.nads import engine as nads_engine
from nadcore.nads import sandboxed as nads_sandboxed
from nadcore.nads import schedule
from nadcore.nads.engine import compute_shard
from nadcore.nads.partial import PartialNADs
from nadcore.nads.spec import NADSpec
from nadcore.specs.architecture import ArchitectureRef
from nadcore.uploaded import engine_assumptions
from nadcore.uploaded.engine_assumptions import (
    EPS32,
    INDEPENDENCE_BATCH,
    AssumptionError,
    rounding_tolerance,
)
from nadcore.uploaded.network import register_archive
from nadcore.uploaded.validation import validate
from tests.helpers import save_archive

# A 32-channel convolution at 16x16 (largest activation 8,192 floats per input): the CPU plan's
# blocks are 128 pixels (256 inputs, the size validation checks), the GPU plan's the whole
# image (256 pixels, 512 inputs).
SHAPE = (1, 16, 16)
MIXES_ABOVE = 300  # above every size validation runs (1, 3, 8, 128, 256), below 512


class _Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _MixesAboveValidation(_Wide):
    """Subtracts the batch mean from its input in batches of more than 300 (TorchScript)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 300:  # MIXES_ABOVE (TorchScript reads no globals)
            x = x - x.mean(0, keepdim=True)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _MixesAboveValidationSmoothly(_Wide):
    """The same without a branch, for torch.export: the weight clamp(B - 300, 0, 1) is 0 up to
    300 and 1 above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (torch.ones(()) * x.shape[0] - MIXES_ABOVE).clamp(0, 1)
        x = x - weight * x.mean(0, keepdim=True)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _MixesInBf16(nn.Module):
    """Independent in float32; under bf16 autocast (its convolution's output is bfloat16) it
    subtracts the batch mean of that output (TorchScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 14 * 14, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if h.dtype == torch.bfloat16:
            h = h - h.mean(0, keepdim=True)
        return self.fc(torch.relu(h).flatten(1))


def _archive(module: nn.Module, path):  # noqa: ANN001, ANN202
    """`module` in eval mode as .pt (TorchScript) or .pt2 (torch.export, dynamic batch)."""
    return save_archive(module.eval(), path, SHAPE)


def _validated_spec(path, **fields) -> NADSpec:  # noqa: ANN001, ANN003
    """Validation passes (as the service's would); the spec of a NAD job on the archive."""
    info = validate(path, SHAPE, "torch-default")
    assert info["batches"] == [1, 3, 128, 256], info["batches"]
    ref = ArchitectureRef(id="0" * 32, sha256=register_archive(path), init="torch-default")
    return NADSpec(**{"architecture": ref, "input_shape": SHAPE, "num_networks": 2, "seed": 0,
                      **fields})


def _plan_as_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the engine plans its finite-difference blocks as on a GPU (one block of the
    whole image here); validation, run before, planned as on the CPU."""
    plan_block = schedule._pixel_block
    monkeypatch.setattr(schedule, "_pixel_block",
                        lambda largest, d, _device_type: plan_block(largest, d, "cuda"))


def _shard(spec: NADSpec, tmp_path) -> PartialNADs:  # noqa: ANN001
    """What the sandbox child runs for a NAD shard of an uploaded architecture."""
    data = nads_sandboxed.run("shard", {"spec": spec.model_dump(mode="json"), "start": 0,
                                        "stop": spec.num_networks}, tmp_path,
                              lambda done, total: None, lambda info: None)
    return PartialNADs.load(io.BytesIO(data))


@pytest.mark.parametrize(("module", "suffix", "strategy"), [
    (_MixesAboveValidation, "pt", None),
    (_MixesAboveValidationSmoothly, "pt2", None),
    (_MixesAboveValidationSmoothly, "pt2", "vmap"),
])
def test_a_network_that_mixes_only_in_the_engines_larger_blocks_fails_its_job(
        tmp_path, module, suffix, strategy, monkeypatch) -> None:  # noqa: ANN001
    """It passes validation (every size validation runs is at most 256); before the engine's
    check its NAD job succeeded, with the NADs of the GPU's 512-input blocks."""
    spec = _validated_spec(_archive(module(), tmp_path / f"mixes.{suffix}"))
    _plan_as_on_a_gpu(monkeypatch)
    with pytest.raises(AssumptionError) as exc:
        if strategy is None:
            _shard(spec, tmp_path)  # the plan's strategy: a loop (a convolution, on the CPU)
        else:
            compute_shard(spec, 0, 2, strategy=strategy)
    message = str(exc.value)
    assert message.startswith("file: a re-initialized network mixes the samples of a batch "
                              "where the engine runs it: in a finite-difference block of 512 "
                              "inputs on cpu at fp32, the output of input "), message
    assert f"when it is evaluated again in a batch of {INDEPENDENCE_BATCH} of the block's " \
        "inputs (fp32 rounding explains " in message, message
    assert "the batch, not the network" in message and "no result" in message, message
    assert "compute each sample's output from that sample alone, whatever the batch size, " \
        "the device and the precision" in message, message
    assert len(message) < 600, len(message)  # the worker quotes at most 600 characters


def test_a_network_that_mixes_only_in_bf16_fails_its_bf16_job(tmp_path) -> None:  # noqa: ANN001
    """Validation runs float32; the job's bf16 autocast is what the network branches on. The
    fp32 job of the same network succeeds (the check does not refuse rounding)."""
    path = tmp_path / "bf16.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_MixesInBf16().eval()), str(path))
    info = validate(path, SHAPE, "torch-default")
    ref = ArchitectureRef(id="0" * 32, sha256=register_archive(path), init="torch-default")
    spec = NADSpec(architecture=ref, input_shape=SHAPE, num_networks=2, seed=0)
    assert info["batches"][-1] == 512  # the CPU plan's block: the whole image
    part = _shard(spec, tmp_path)
    assert np.isfinite(part.gradients).all()
    with pytest.raises(AssumptionError) as exc:
        _shard(spec.model_copy(update={"precision": "bf16"}), tmp_path)
    message = str(exc.value)
    assert message.startswith("file: a re-initialized network mixes the samples of a batch "
                              "where the engine runs it: in a finite-difference block of 512 "
                              "inputs on cpu at bf16, the output of input "), message
    assert "(bf16 rounding explains " in message, message


@pytest.mark.parametrize(("suffix", "strategy", "precision"), [
    ("pt", "loop", "fp32"), ("pt2", "loop", "fp32"), ("pt2", "vmap", "fp32"),
    ("pt", "loop", "bf16"), ("pt2", "vmap", "bf16"),
])
def test_the_check_leaves_a_normal_networks_results_bitwise_unchanged(
        tmp_path, suffix, strategy, precision, monkeypatch) -> None:  # noqa: ANN001
    """The check re-evaluates rows on the side: the gradients are the same bits with and
    without it (and it did run, once per chunk of two at this D, on the first block)."""
    spec = _validated_spec(_archive(_Wide(), tmp_path / f"plain.{suffix}"),
                           precision=precision, num_networks=5)
    _plan_as_on_a_gpu(monkeypatch)
    seen: list[dict] = []
    check = engine_assumptions.check_block

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(check(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr("nadcore.nads.gradients.check_block", spy)
    checked = compute_shard(spec, 0, 5, strategy=strategy, chunk_size=2).gradients
    assert [s["block"] for s in seen] == [512] * 3, seen  # chunks [0, 2), [2, 4), [4, 5)
    for s in seen:
        assert s["difference"] <= s["tolerance"] / 10, s
    monkeypatch.setattr("nadcore.nads.gradients.check_block", lambda *a, **k: {})
    unchecked = compute_shard(spec, 0, 5, strategy=strategy, chunk_size=2).gradients
    assert np.array_equal(checked, unchecked)


# 1x30x30 through a 4-channel convolution (largest activation 3,600 floats per input): the CPU
# plan's blocks are 256 pixels, the last of D = 900 is 132 (264 inputs), a size validation
# does not run; every network of a chunk is checked at this D (gradients.checked_stride)
SHAPE30 = (1, 30, 30)
LAST_BLOCK = 2 * (900 % 256)


class _Small30(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 30 * 30, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _MixesInTheLastBlock(_Small30):
    """Subtracts the batch mean in batches of 264 inputs only (TorchScript)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 264:  # LAST_BLOCK
            x = x - x.mean(0, keepdim=True)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _MixesWhereItsWeightsSay(_Small30):
    """Subtracts the batch mean when its fc.bias[0] exceeds `threshold`: in some re-initialized
    networks of a job and not others (TorchScript)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.fc.bias[0]) > self.threshold:
            x = x - x.mean(0, keepdim=True)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _spec30(path, num_networks: int) -> NADSpec:  # noqa: ANN001
    ref = ArchitectureRef(id="0" * 32, sha256=register_archive(path), init="torch-default")
    return NADSpec(architecture=ref, input_shape=SHAPE30, num_networks=num_networks, seed=3)


def test_a_network_that_mixes_only_in_the_smaller_last_block_fails_its_job(tmp_path) -> None:  # noqa: ANN001
    """It passes validation (its sizes: 1, 3, 128 and the full block, 512); the engine's last
    block of each network is smaller, and the check runs there too."""
    path = save_archive(_MixesInTheLastBlock().eval(), tmp_path / "last.pt", SHAPE30)
    info = validate(path, SHAPE30, "torch-default")
    assert info["batches"] == [1, 3, 128, 512] and LAST_BLOCK not in info["batches"], info
    with pytest.raises(AssumptionError) as exc:
        _shard(_spec30(path, 2), tmp_path)
    assert f"in a finite-difference block of {LAST_BLOCK} inputs on cpu at fp32" in \
        str(exc.value), exc.value


def test_a_network_that_mixes_only_where_its_weights_say_fails_its_job(tmp_path) -> None:  # noqa: ANN001
    """The job's first network does not mix, a later one does: every network of a chunk is
    checked, not the first alone (before, this job succeeded with the NADs of the batch)."""
    never = save_archive(_MixesWhereItsWeightsSay(math.inf).eval(), tmp_path / "never.pt",
                         SHAPE30)
    spec = _spec30(never, 6)
    states = nads_engine.ShardRunner(spec).sampler.sample(range(6))
    biases = states["net.fc.bias"][:, 0].tolist()
    assert max(biases[1:]) > biases[0], biases  # seed 3: some later network's is larger
    threshold = (biases[0] + max(biases[1:])) / 2  # network 0 does not mix, a later one does
    path = save_archive(_MixesWhereItsWeightsSay(threshold).eval(), tmp_path / "mixes.pt",
                        SHAPE30)
    assert np.isfinite(_shard(_spec30(never, 6), tmp_path).gradients).all()
    with pytest.raises(AssumptionError) as exc:
        _shard(_spec30(path, 6), tmp_path)
    assert "in a finite-difference block of 512 inputs on cpu at fp32" in str(exc.value)


def test_builtin_architectures_are_not_checked(monkeypatch) -> None:  # noqa: ANN001
    """Ours: they pay nothing."""
    _plan_as_on_a_gpu(monkeypatch)
    monkeypatch.setattr("nadcore.nads.gradients.check_block",
                        lambda *a, **k: pytest.fail("a built-in was checked"))
    compute_shard(NADSpec(architecture="lenet", input_shape=(1, 16, 16), num_networks=2), 0, 2)
    assert nads_engine.ShardRunner(NADSpec(architecture="lenet", input_shape=(1, 16, 16),
                                           num_networks=2)).evaluator.block_check is None


def test_the_reduced_precisions_add_one_unit_per_operator() -> None:
    """fp32: validation's tolerance; tf32 and bf16 add, per operator, one unit of their
    spacing (2**-10, 2**-7) of the magnitude."""
    assert rounding_tolerance(100, 2.0) == pytest.approx(100 * EPS32 * 2.0)
    assert rounding_tolerance(100, 2.0, "fp32", operators=7) == rounding_tolerance(100, 2.0)
    assert rounding_tolerance(100, 2.0, "tf32", operators=7) == pytest.approx(
        100 * EPS32 * 2.0 + 7 * 2**-10 * 2.0)
    assert rounding_tolerance(100, 2.0, "bf16", operators=7) == pytest.approx(
        100 * EPS32 * 2.0 + 7 * 2**-7 * 2.0)
