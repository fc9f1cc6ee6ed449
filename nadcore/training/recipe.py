"""The paper's training recipe, written once for every model nadcore trains (a probe
direction's binary classifier, a poison job's classifier): plain SGD with the configured
momentum and weight decay, the learning rate decayed linearly to 0 at every batch, the global
gradient norm clipped, cross-entropy loss, DataLoader-style batches (a trailing batch of one
sample dropped when the model has BatchNorm), evaluation in eval mode after every epoch.

Two forms of the same update: `fit` / `train_epoch` for one module with `torch.optim.SGD` and
`clip_grad_norm_`, and `stacked_sgd_step` for an ensemble whose parameters carry a leading
model dimension (the probe's vmap strategy), which reproduces them per model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from nadcore.control import Cancelled, ShouldStop
from nadcore.seeding import seeded_global_rng
from nadcore.uploaded.engine_assumptions import BlockCheck, check_eval_batch, reduction_length
from nadcore.uploaded.network import UploadedModel


class Recipe(Protocol):
    """The training settings of a spec (`ProbeSpec.training`, `PoisonSpec.training`)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    grad_clip: float | None


def has_batchnorm(model: nn.Module) -> bool:
    """True when the model normalizes by batch statistics in train mode."""
    types = getattr(model, "types", None)  # an uploaded model: its recorded module types
    if isinstance(types, dict) and any(".batchnorm." in t for t in types.values()):
        return True
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def batches(num: int, size: int, drop_single: bool) -> list[tuple[int, int]]:
    """DataLoader-style batches (the last one smaller); with `drop_single` (BatchNorm) a last
    batch of one sample is dropped (train-mode BatchNorm cannot normalize a single value)."""
    out = [(s, min(num, s + size)) for s in range(0, num, size)]
    if drop_single and len(out) > 1 and out[-1][1] - out[-1][0] == 1:
        out.pop()
    return out


def lr_at(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate of batch `step` (counted over all epochs): the paper notebook's
    interp(epoch + (i+1)/batches, [0, epochs], [lr, 0]), so the last batch trains at 0."""
    total = recipe.epochs * steps_per_epoch
    return recipe.lr * (1.0 - (step + 1) / total)


class Diverged(ValueError):
    """A training whose loss became NaN or inf. Its outputs are then NaN (or inf), and argmax
    of NaN picks class 0 for every sample: the accuracies would read 50 % for a probe
    direction (its balanced test set) and the share of class 0 for a poison model, numbers
    that measure nothing. The training stops instead and the job fails with this message (a
    ValueError: the engine's own words, field first, also out of the sandbox)."""


def require_finite_losses(recipe: Recipe, what: str, epoch: int, **losses: float) -> None:
    """Raise `Diverged` when one of `losses` (mean cross-entropies of epoch `epoch`, 0-based,
    keyed by what they are: `training_loss`, `test_loss`) of `what` is NaN or inf."""
    for name, value in losses.items():
        if math.isfinite(value):
            continue
        knobs = [f"momentum {recipe.momentum:g}", f"weight_decay {recipe.weight_decay:g}",
                 "no grad_clip" if recipe.grad_clip is None else f"grad_clip {recipe.grad_clip:g}"]
        lower = ["training.lr"] + [f"training.{k}" for k in ("momentum", "weight_decay")
                                   if getattr(recipe, k)]
        fix = ", ".join(lower) + (" or set training.grad_clip" if recipe.grad_clip is None
                                  else "")
        raise Diverged(
            f"training.lr: {what} diverged: its {name.replace('_', ' ')} is {value} in epoch "
            f"{epoch + 1} of {recipe.epochs} (lr {recipe.lr:g}, {', '.join(knobs)}), so its "
            "outputs are NaN or inf and an accuracy would be their argmax (always class 0), "
            f"not a measurement; lower {fix}")


def check_stop(should_stop: ShouldStop | None, epoch: int, epochs: int) -> None:
    """Raise Cancelled before epoch `epoch` (0-based) when `should_stop()` says so."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"cancelled before epoch {epoch + 1} of {epochs}")


def sgd(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """The optimizer of the recipe (its lr is set per batch by `train_epoch`)."""
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


@dataclass
class EpochStats:
    """Running sums of one training epoch, kept on the device (no host sync per batch)."""

    loss_sum: torch.Tensor  # float64: sum over samples of the batch-mean loss x batch size
    correct: torch.Tensor  # int64: training samples classified right in train mode
    seen: int  # training samples visited

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / self.seen

    @property
    def accuracy(self) -> float:
        """Percent."""
        return 100.0 * int(self.correct) / self.seen


def train_epoch(model: nn.Module, opt: torch.optim.SGD, x: torch.Tensor, y: torch.Tensor,
                perm: torch.Tensor, spans: list[tuple[int, int]], recipe: Recipe, step: int,
                ) -> tuple[EpochStats, int]:
    """One epoch over the batches `spans` of the order `perm`; returns its statistics and the
    step count after it (the lr schedule runs over all epochs' batches)."""
    dev = x.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    seen = 0
    for start, stop in spans:
        idx = perm[start:stop]
        xb, yb = x[idx], y[idx]
        for group in opt.param_groups:
            group["lr"] = lr_at(recipe, step, len(spans))
        opt.zero_grad(set_to_none=True)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        loss.backward()
        if recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        loss_sum += loss.detach() * (stop - start)
        correct += (out.detach().argmax(1) == yb).sum()
        seen += stop - start
        step += 1
    return EpochStats(loss_sum, correct, seen), step


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, *,
        spans: list[tuple[int, int]], permutation: Callable[[], torch.Tensor],
        dropout_seed: int, device: torch.device,
        after_epoch: Callable[[int, EpochStats], None],
        should_stop: ShouldStop | None = None) -> None:
    """Train `model` (on `device`, like x and y) for recipe.epochs epochs. Each epoch: `should_stop`
    checked (Cancelled), the order `permutation()`, training in train mode, then the model in
    eval mode handed to `after_epoch(epoch, stats)` (evaluation, progress). PyTorch's global
    RNG (dropout masks) is seeded with `dropout_seed` for the whole run and restored after."""
    opt = sgd(model, recipe)
    step = 0
    with seeded_global_rng(dropout_seed, device):
        for epoch in range(recipe.epochs):
            check_stop(should_stop, epoch, recipe.epochs)
            perm = permutation()
            model.train()
            stats, step = train_epoch(model, opt, x, y, perm, spans, recipe, step)
            model.eval()
            after_epoch(epoch, stats)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
             check: BlockCheck | None = None) -> tuple[float, int]:
    """(mean cross-entropy, number of samples classified right) of `model` as it is (callers
    put it in eval mode), `batch` samples per forward pass. With `check` (an uploaded model:
    `eval_check`), the first forward pass is checked for per-sample independence
    (`check_eval_batch`; AssumptionError): validation never ran the model at `batch`."""
    loss, correct = 0.0, 0
    for start in range(0, x.shape[0], batch):
        out = model(x[start:start + batch])
        if check is not None and start == 0:
            check_eval_batch(model, x[:batch], out, check)
        yb = y[start:start + batch]
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return loss / x.shape[0], correct


def eval_check(model: nn.Module, input_shape: tuple[int, ...]) -> BlockCheck | None:
    """What `evaluate` (and the probe's vmap evaluation) needs to check an uploaded model's
    evaluation batches, sizes that validation never ran (up to a whole test set); None for a
    built-in (ours: not checked, nothing spent). One activation profile of the model (a
    forward pass of one input), once per model or trainer."""
    if not isinstance(model, UploadedModel):
        return None
    profile = model.activation_profile(tuple(input_shape))
    return BlockCheck(reduction_length(model, profile.largest), profile.operators,
                      "a trained uploaded network")


def stacked_sgd_step(params: list[torch.Tensor], grads: list[torch.Tensor],
                     momentum: list[torch.Tensor] | None, lr: float, recipe: Recipe,
                     ) -> list[torch.Tensor] | None:
    """The recipe's update for parameters stacked along a leading model dimension:
    clip_grad_norm_ per model, then torch.optim.SGD's weight decay, momentum and step, as
    batched tensor ops. `grads` are modified in place; returns the momentum buffers (pass
    them back at the next step; None before the first)."""
    n = params[0].shape[0]
    if recipe.grad_clip is not None:
        sq = torch.stack([g.reshape(n, -1).pow(2).sum(1) for g in grads]).sum(0)
        coef = (recipe.grad_clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        grads = [g.mul_(coef.view(n, *([1] * (g.dim() - 1)))) for g in grads]
    if recipe.weight_decay:
        grads = [g.add_(p, alpha=recipe.weight_decay)
                 for g, p in zip(grads, params, strict=True)]
    if recipe.momentum:
        if momentum is None:
            momentum = [g.clone() for g in grads]
        else:
            for buf, g in zip(momentum, grads, strict=True):
                buf.mul_(recipe.momentum).add_(g)
        grads = momentum
    torch._foreach_add_(params, grads, alpha=-lr)
    return momentum


__all__ = ["Diverged", "EpochStats", "Recipe", "batches", "check_stop", "eval_check", "evaluate",
           "fit", "has_batchnorm", "lr_at", "require_finite_losses", "sgd", "stacked_sgd_step",
           "train_epoch"]
