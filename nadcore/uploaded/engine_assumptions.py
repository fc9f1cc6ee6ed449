"""What the engine assumes of an uploaded network, checked at validation
(`nadcore.uploaded.validation`):

- one output tensor: the network returns a tensor of shape (B,) or (B, m), or the upload names
  which element of its tuple, list or dict output to use (`output`); an unnamed structure is
  refused, naming it, never silently cut to its first element;
- determinism: two evaluations of the same batch agree; and the network keeps no state between
  calls, no attribute assigned and no tensor of its own written in place, and runs no
  structured control flow (`nadcore.uploaded.state_writes`);
- per-sample independence: each sample's output is the same alone, in the batch, and in the
  batch in another order (`check_assumptions`, a batch of INDEPENDENCE_BATCH), and in a batch
  of every size jobs use above it (`check_larger_batches`: the training batch and the CPU
  plan's finite-difference block, evaluated again in batches of INDEPENDENCE_BATCH). Finite
  differences and batched gradients evaluate many perturbed inputs in one batch; a network
  whose outputs depend on the rest of the batch (BatchNorm in training mode, dropout, any
  batch statistic) then measures the batch, not the network. A batch of 8 alone cannot see a
  network that mixes only in larger batches (a branch on the batch size): one that subtracted
  the batch mean above 16 inputs passed it and its jobs succeeded with NADs of the batch.

Validation runs on the CPU, in float32, at the CPU plan's sizes; the engine runs the network at
its own plan's block size (a GPU's finite-difference blocks are larger), on its device, at the
job's precision, where a network may branch on what validation never showed it (the batch
size above some threshold, x.is_cuda, the dtype under bf16 autocast). So the engine checks
again where it runs an uploaded network (`check_block`, called by `nadcore.nads.gradients` on
the first block, and a smaller last one, of the networks of each chunk): a few rows of the
block evaluated again in a batch of their own must keep their outputs, or the job fails
without a result. Probe and poison jobs
evaluate their trained networks in eval mode in batches of their own size (up to a whole test
set); the first batch of each evaluation is checked the same way (`check_eval_batch`, called
by `nadcore.training.recipe.evaluate` and the probe's vmap evaluation).

"The same" means within what float32 rounding explains (`rounding_tolerance`): a batch of 1
and a batch of 8 may run different kernels that add the same terms in another order. At a
reduced precision (tf32, bf16) the tolerance adds that precision's rounding at every operator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# float32 machine epsilon, 2**-23: twice the unit roundoff u = 2**-24 of round-to-nearest.
EPS32 = torch.finfo(torch.float32).eps
# The spacing of the reduced precisions a job's forward passes may run at
# (`nadcore.nads.precision`), in the same units: TF32 keeps 10 bits of float32's 23-bit
# mantissa (2**-10), bfloat16 7 bits (2**-7, torch.finfo(torch.bfloat16).eps); fp32 adds none.
REDUCED_EPS = {"fp32": 0.0, "tf32": 2.0**-10, "bf16": torch.finfo(torch.bfloat16).eps}
INDEPENDENCE_BATCH = 8  # samples compared alone, in the batch and in the batch reversed
FIX = ("call model.eval() before torch.export.export or torch.jit.script (in training mode "
       "BatchNorm uses the batch's statistics and dropout draws a new mask each call)")


class AssumptionError(ValueError):
    """The network breaks an assumption of the engine; the message says which, and the fix."""


# -- one output tensor --------------------------------------------------------------------------
def describe_structure(value: object, depth: int = 0) -> str:
    """'tuple(Tensor(3, 10), Tensor(3, 5))', 'dict(logits: Tensor(3, 10), ...)': what a network
    returned, for a refusal (bounded: the first 8 entries, 3 levels)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    if depth >= 3:
        return type(value).__name__
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe_structure(v, depth + 1) for v in value[:8])
        return f"{type(value).__name__}({inner}{', ...' if len(value) > 8 else ''})"
    if isinstance(value, dict):
        items = list(value.items())
        inner = ", ".join(f"{str(k)[:40]}: {describe_structure(v, depth + 1)}"
                          for k, v in items[:8])
        return f"dict({inner}{', ...' if len(items) > 8 else ''})"
    return type(value).__name__


def _choices(value: tuple | list | dict) -> str:
    if isinstance(value, dict):
        return "one of the keys " + ", ".join(repr(str(k)[:40]) for k in list(value)[:8])
    return f"an index 0..{len(value) - 1}"


def select_output(value: object, output: str | None) -> torch.Tensor:
    """The tensor the engine uses of what the network returned: the tensor itself (with no
    `output` named), or element `output` of a tuple or list (an index) or a dict (a key).
    AssumptionError naming the structure otherwise."""
    if isinstance(value, torch.Tensor):
        if output is not None:
            raise AssumptionError(f"output: the network returns one tensor "
                                  f"({describe_structure(value)}); leave output unset")
        return value
    if not isinstance(value, (tuple, list, dict)) or not value:
        raise AssumptionError(f"file: the network returns {describe_structure(value)}, "
                              "expected a tensor of shape (B,) or (B, m)")
    if output is None:
        raise AssumptionError(
            f"output: the network returns {describe_structure(value)}, not one tensor; name the "
            f"element to use with the upload's field output ({_choices(value)})")
    if isinstance(value, dict):
        keys = {str(k): k for k in value}
        found = output in keys
        chosen = value[keys[output]] if found else None
    else:
        found = output.isdigit() and int(output) < len(value)
        chosen = value[int(output)] if found else None
    if not found:
        raise AssumptionError(f"output: {output[:40]!r} is not an element of what the network "
                              f"returns, {describe_structure(value)} (give {_choices(value)})")
    if not isinstance(chosen, torch.Tensor):
        raise AssumptionError(f"output: element {output[:40]!r} of "
                              f"{describe_structure(value)} is not a tensor")
    return chosen


# -- the tolerance ------------------------------------------------------------------------------
def reduction_length(net: nn.Module, largest_activation: int) -> int:
    """An upper bound on how many float32 terms an output accumulates on its way through the
    network: every weight's fan-in (a Linear's in_features, a Conv's in_channels/groups x
    kernel area: the length of the dot product each of its outputs is), summed over the layers,
    plus one reduction over the largest activation (a pooling or a normalization over a whole
    feature map)."""
    fan_ins = sum(p.numel() // p.shape[0] for p in net.parameters() if p.dim() >= 2)
    return int(fan_ins + largest_activation)


def rounding_tolerance(length: int, magnitude: float, precision: str = "fp32",
                       operators: int = 0) -> float:
    """How far two float32 evaluations of the same outputs may differ when only the order of
    their sums changes (another batch size picks another kernel and blocking); at a reduced
    `precision`, how far two evaluations at that precision may (see the end).

    A sum of n terms t_i computed in any order is within gamma_(n-1) * sum |t_i| of the exact
    sum, gamma_k = k u / (1 - k u) ~ k u, u = 2**-24 (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., eq. 4.4); two orders thus differ by at most
    2 (n - 1) u sum |t_i| < n * EPS32 * sum |t_i|. Layer after layer these first-order errors
    add, so n is the summed reduction length of the network (`reduction_length`). The terms'
    size sum |t_i| is not observable from outside; it is taken as the largest |output| of the
    batch, which is the terms' size for a network at its initialization (no layer cancels much
    larger terms). The bound is the worst case: rounding errors of random sign grow like
    sqrt(n) u, so the tolerance leaves a margin of about 2 sqrt(n) over typical differences
    (measured in BENCHMARKS.md). The smallest normal float32 keeps an all-zero output exact.

    At tf32 and bf16 (`nadcore.nads.precision`) the sums still accumulate in float32 (the term
    above), and every operator rounds once more to the reduced precision: TF32 its operands
    (a GPU's kernel may use TF32 at one batch size and IEEE float32 at another), bf16 autocast
    its result. Where two evaluations' values differ, that rounding can go to neighbouring
    values of the reduced precision, one unit REDUCED_EPS of the value apart, at each operator
    on the way: `operators` (those whose outputs carry the batch, counted by the activation
    profile: an upper bound on the roundings, some of which, ReLU or a view, are exact) units
    of the terms' size are added. Also a worst case, and one that grows with the depth: at
    bf16, 0.08, 0.18 and 0.39 of the largest |output| for LeNet, VGG-11 and ResNet-18 (10, 22
    and 48 operators; at tf32 0.010, 0.032, 0.058), more than the output itself for
    DenseNet-121 (304 operators: 2.4), so at bf16 only a mixing of that order is seen; fp32
    adds nothing (validation's tolerance)."""
    reduced = operators * REDUCED_EPS[precision] * magnitude
    return float(length * EPS32 * magnitude + reduced + torch.finfo(torch.float32).tiny)


# -- determinism and per-sample independence ----------------------------------------------------
def _largest_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """max |a - b| and the sample (row) where it is."""
    diff = (a - b).abs().reshape(a.shape[0], -1).amax(dim=1)
    worst = int(diff.argmax())
    return float(diff[worst]), worst


def check_assumptions(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      length: int, what: str = "the network") -> dict[str, float]:
    """Refuses (AssumptionError, field `file`, with the fix) a network that is not
    deterministic or whose samples' outputs depend on the rest of the batch; `forward` maps a
    batch to its (B, m) output tensor, `x` is a batch of INDEPENDENCE_BATCH inputs and
    `length` the network's `reduction_length`. Returns the measured differences and the
    tolerance (for the validation report)."""
    with torch.no_grad():
        batch = forward(x)
        again = forward(x)
        tol = rounding_tolerance(length, float(batch.abs().max()))
        repeat, _ = _largest_difference(batch, again)
        if not repeat <= tol:
            raise AssumptionError(
                f"file: {what} is not deterministic: two evaluations of the same batch differ "
                f"by up to {repeat:.3g} (float32 rounding explains {tol:.3g}); a random layer "
                f"such as dropout is active: {FIX}")
        alone = torch.cat([forward(x[i:i + 1]) for i in range(x.shape[0])])
        order = torch.arange(x.shape[0] - 1, -1, -1)
        reordered = forward(x[order])[order]  # reversing is its own inverse
        worst = {}
        for name, other in (("alone", alone), ("in the batch reversed", reordered)):
            worst[name] = _largest_difference(batch, other)
    for name, (value, sample) in worst.items():
        if not value <= tol:
            raise AssumptionError(
                f"file: {what} mixes the samples of a batch: the output of sample {sample} of "
                f"a batch of {x.shape[0]} changes by {value:.3g} when it is evaluated {name} "
                f"(float32 rounding explains {tol:.3g}), so finite differences would measure "
                f"the batch, not the network; {FIX}")
    return {"tolerance": tol, "repeat": repeat, "alone": worst["alone"][0],
            "reordered": worst["in the batch reversed"][0]}


def check_larger_batches(forward: Callable[[torch.Tensor], torch.Tensor],
                         evaluated: dict[int, tuple[torch.Tensor, torch.Tensor]], length: int,
                         what: str = "the network") -> dict[str, dict[str, float]]:
    """Per-sample independence at the batch sizes jobs use: `evaluated` maps a batch size b to
    its inputs and the outputs `forward` gave them in one batch (the pass validation makes at
    the job's batch sizes anyway, reused); every b above INDEPENDENCE_BATCH is evaluated again
    in batches of INDEPENDENCE_BATCH (the last one overlapping the one before when b is not a
    multiple), whose independence `check_assumptions` showed, and each sample's output must
    agree within `rounding_tolerance` of that batch's largest |output|. AssumptionError
    (field `file`) naming the batch size, the sample, the difference and the tolerance;
    otherwise the largest difference and the tolerance of each b (for the report)."""
    found: dict[str, dict[str, float]] = {"larger_batches": {}, "larger_batches_tolerance": {}}
    k = INDEPENDENCE_BATCH
    for b, (x, out) in sorted(evaluated.items()):
        if b <= k:
            continue
        with torch.no_grad():
            pieces = []
            for i in range(0, b, k):
                start = min(i, b - k)
                pieces.append(forward(x[start:start + k]).reshape(k, -1)[i - start:])
            batch = out.reshape(b, -1)
            tol = rounding_tolerance(length, float(batch.abs().max()))
            value, sample = _largest_difference(batch, torch.cat(pieces))
        if not value <= tol:
            raise AssumptionError(
                f"file: {what} mixes the samples of a batch: the output of sample {sample} of "
                f"a batch of {b} changes by {value:.3g} when the same inputs are evaluated in "
                f"batches of {k} (float32 rounding explains {tol:.3g}), so finite differences "
                f"would measure the batch, not the network (jobs evaluate {b} inputs in one "
                "batch); compute each sample's output from that sample alone, whatever the "
                "batch size (no branch on the batch size, no statistic over the batch)")
        found["larger_batches"][str(b)] = value
        found["larger_batches_tolerance"][str(b)] = tol
    return found


def independence_inputs(input_shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    return torch.randn((INDEPENDENCE_BATCH, *input_shape), generator=gen)


# -- where the engine runs the network ------------------------------------------------------------
@dataclass(frozen=True)
class BlockCheck:
    """What `check_block` needs of an uploaded architecture, fixed when a job's engine starts:
    its `reduction_length`, its operators (`ActivationProfile.operators`) and what a message
    calls its networks."""

    length: int
    operators: int
    what: str = "a re-initialized network"


def check_block(forward: Callable[[torch.Tensor], torch.Tensor], xs: torch.Tensor,
                outputs: torch.Tensor, check: BlockCheck, precision: str) -> dict[str, float]:
    """Per-sample independence where the engine runs the network: `xs` is a block of inputs
    the engine has just evaluated in one batch (the + and - halves of a finite-difference
    block), `outputs` the (B,) or (B, m) outputs it got, `forward` the same network at the same
    device and `precision` (the caller's context). INDEPENDENCE_BATCH rows spread over the
    whole block (both halves, not in +/- pairs: the mean of a block's +/- pairs is x0 alone)
    are evaluated again in a batch of their own, at most half the block; each must keep its
    output within `rounding_tolerance` at `precision` of the block's largest |output|.
    AssumptionError (field `file`) naming the block size, the difference, the tolerance and the
    fix; otherwise the block size, the largest difference and the tolerance. A block whose own
    outputs are not all finite is left to the check of the result (which refuses it)."""
    return _check_rows(forward, xs, outputs, check, precision,
                       "a finite-difference block", "block", "NADs")


def check_eval_batch(forward: Callable[[torch.Tensor], torch.Tensor], xs: torch.Tensor,
                     outputs: torch.Tensor, check: BlockCheck) -> dict[str, float]:
    """`check_block` for an evaluation batch of probe and poison jobs (test accuracy, the fit
    of the training set: `nadcore.training.recipe.evaluate` and the probe's vmap evaluation),
    whose batches, up to a whole test set, validation never ran: `xs` a batch the job has just
    evaluated in eval mode, `outputs` its (B, classes) logits, `forward` the same trained
    network, device and mode; at float32 (the precision of those jobs), with TF32's tolerance
    on a GPU, where cuDNN's convolutions default to TF32 and may use it at one batch size and
    not at another (a false alarm would fail a sound job)."""
    precision = "tf32" if xs.device.type == "cuda" else "fp32"
    return _check_rows(forward, xs, outputs, check, precision, "an evaluation batch", "batch",
                       "accuracies")


def _check_rows(forward: Callable[[torch.Tensor], torch.Tensor], xs: torch.Tensor,
                outputs: torch.Tensor, check: BlockCheck, precision: str, where: str,
                unit: str, results: str) -> dict[str, float]:
    """check_block and check_eval_batch: `where` names the batch in the message ("a
    finite-difference block"), `unit` it again ("block"), `results` what it would spoil."""
    b = xs.shape[0]
    k = min(INDEPENDENCE_BATCH, max(1, b // 2))
    batch = outputs.reshape(b, -1)
    if not bool(torch.isfinite(batch).all()):
        return {"block": b, "difference": math.nan, "tolerance": math.nan}
    rows = torch.linspace(0, b - 1, k, device=xs.device).round().long()
    with torch.no_grad():
        again = forward(xs[rows]).reshape(k, -1)
    tol = rounding_tolerance(check.length, float(batch.abs().max()), precision, check.operators)
    value, worst = _largest_difference(batch[rows], again)
    if not value <= tol:
        raise AssumptionError(
            f"file: {check.what} mixes the samples of a batch where the engine runs it: in "
            f"{where} of {b} inputs on {xs.device} at {precision}, the output "
            f"of input {int(rows[worst])} changes by {value:.3g} when it is evaluated again in "
            f"a batch of {k} of the {unit}'s inputs ({precision} rounding explains {tol:.3g}), "
            f"so its {results} would measure the batch, not the network: the job stops with no "
            "result; compute each sample's output from that sample alone, whatever the batch "
            "size, the device and the precision (no branch on the batch size, x.is_cuda or "
            "the dtype, no statistic over the batch)")
    return {"block": b, "difference": value, "tolerance": tol}


__all__ = ["EPS32", "FIX", "INDEPENDENCE_BATCH", "REDUCED_EPS", "AssumptionError", "BlockCheck",
           "check_assumptions", "check_block", "check_eval_batch", "check_larger_batches",
           "describe_structure", "independence_inputs", "reduction_length", "rounding_tolerance",
           "select_output"]
