"""Poisoning an image dataset with NAD carriers, and the flipped-basis experiment (docs/science.md,
section 4), then training a classifier on it with the paper's CIFAR-10 recipe.

Carriers: class t of a dataset with C channels is given the carrier V[i + t // (2C)] placed in
channel t % C with sign +1 for odd t, -1 for even t; every training sample of class t is moved
so that its coefficient along its (unit-norm) carrier is exactly sign * eps. With C channels
two classes share a NAD row per channel (opposite signs), so rows i .. i + (K-1) // (2C) are
used.

Everything random about index position p of a job (the network's initialization, the
shuffling order, dropout masks) is drawn from seeds derived from (spec.seed, p) alone, so a job
split into shards by index gives the same numbers as one run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nadcore.control import Progress, ShouldStop
from nadcore.nads.schedule import resolve_device
from nadcore.networks.factory import build_model, seeded_uploaded_network
from nadcore.poison.datasets import ImageDataset
from nadcore.poison.spec import CIFAR10_MEAN, CIFAR10_STD, PoisonSpec, clean_position
from nadcore.seeding import POISON_DROPOUT as _DROPOUT
from nadcore.seeding import POISON_INIT as _INIT
from nadcore.seeding import POISON_SHUFFLE as _SHUFFLE
from nadcore.seeding import poison_seed, seeded_global_rng
from nadcore.specs.architecture import ArchitectureRef
from nadcore.training.recipe import (
    EpochStats,
    batches,
    eval_check,
    evaluate,
    fit,
    has_batchnorm,
    require_finite_losses,
)

FLIP_CHUNK = 16384  # image channels per float64 matmul of flip_dataset


# ---------------------------------------------------------------------------------------------
# Carriers


def class_carrier(t: int, index: int, channels: int) -> tuple[int, int, int]:
    """(NAD row, channel, sign) of the carrier of class t at poison index `index`."""
    return index + t // (2 * channels), t % channels, 1 if t % 2 == 1 else -1


def _nad_rows(nads: np.ndarray | torch.Tensor, hw: int, what: str) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(nads) if not isinstance(nads, torch.Tensor) else nads)
    v = v.detach().to("cpu", torch.float64)
    if v.ndim != 2:
        raise ValueError(f"{what}: the NAD array must be 2-D (k, D), got shape {tuple(v.shape)}")
    if v.shape[1] != hw:
        raise ValueError(
            f"{what}: NAD rows have {v.shape[1]} values but the images have H*W = {hw} pixels "
            "per channel; the NADs must come from a 1-channel H x W architecture"
        )
    if not torch.isfinite(v).all():
        raise ValueError(f"{what}: the NAD array has non-finite values")
    return v


def max_poison_index(num_rows: int, num_classes: int, channels: int) -> int:
    """The largest index i whose carriers (rows i .. i + (K-1) // (2C)) exist in the array."""
    return num_rows - 1 - (num_classes - 1) // (2 * channels)


def carriers(nads: np.ndarray | torch.Tensor, index: int, num_classes: int,
             shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm carriers (K, C, H, W) float64 and signs (K,) of classes 0..K-1."""
    c, h, w = shape
    v = _nad_rows(nads, h * w, "nads")
    limit = max_poison_index(v.shape[0], num_classes, c)
    if limit < 0:
        raise ValueError(
            f"nads: {num_classes} classes with {c} channel(s) need "
            f"{(num_classes - 1) // (2 * c) + 1} NAD rows, the NAD array has {v.shape[0]} (more "
            "classes than the NAD array can carry)"
        )
    if index < 0 or index > limit:
        raise ValueError(
            f"indices: poison index {index} is out of range: {num_classes} classes with {c} "
            f"channel(s) need NAD rows {index}..{index + (num_classes - 1) // (2 * c)}, and the "
            f"NAD array has {v.shape[0]} rows, so the largest index is {limit} (more classes "
            "than the NAD array can carry at this index)"
        )
    t = torch.arange(num_classes)
    rows = index + t // (2 * c)
    chans = t % c
    signs = torch.where(t % 2 == 1, 1.0, -1.0).to(torch.float64)
    sel = v[rows]
    sel = sel / sel.norm(dim=1, keepdim=True)
    out = torch.zeros((num_classes, c, h * w), dtype=torch.float64)
    out[t, chans] = sel
    return out.view(num_classes, c, h, w), signs


def poison_dataset(x: torch.Tensor, y: torch.Tensor, nads: np.ndarray | torch.Tensor,
                   index: int, eps: float, *, num_classes: int | None = None) -> torch.Tensor:
    """A poisoned copy of x (N, C, H, W): x' = x + (sign * eps - <x, carrier>) * carrier with
    the carrier and sign of each sample's class (docs/science.md, section 4), computed in float64.

    `nads` (k, H*W) are NAD rows of a 1-channel H x W architecture. K is `num_classes`, default
    max(y) + 1. Values are not clipped to [0, 1] (the paper does not clip either).
    """
    if x.ndim != 4:
        raise ValueError(f"x: expected N x C x H x W images, got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y: expected {x.shape[0]} labels, got shape {tuple(y.shape)}")
    k = int(y.max()) + 1 if num_classes is None else num_classes
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise ValueError(f"y: labels must lie in 0..{k - 1}")
    car, signs = carriers(nads, index, k, tuple(x.shape[1:]))
    c, hw = x.shape[1], x.shape[2] * x.shape[3]
    out = x.clone(memory_format=torch.contiguous_format)
    flat = out.view(x.shape[0], c, hw)
    for t in range(k):  # one batched update per class: memory O(class size x H*W)
        members = torch.nonzero(y == t).flatten().to(x.device)
        if members.numel() == 0:
            continue
        _, ch, _ = class_carrier(t, index, c)
        v = car[t, ch].reshape(hw).to(x.device)
        xs = flat[members, ch].to(torch.float64)
        xs += (float(signs[t]) * eps - xs @ v).unsqueeze(1) * v
        flat[members, ch] = xs.to(x.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Flipped basis


def complete_basis(nads: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The orthonormal basis U (D, D) float64 whose columns are the NAD rows in order.

    The rows are re-orthonormalized (QR with the signs kept), which changes estimated NADs only
    at float32 rounding, so that U is orthogonal to float64 precision. An array of D - 1 rows is
    completed with the orthonormal complement of its span as the last column, its sign chosen
    so that its entry of largest magnitude is positive; fewer rows than D - 1 leave the order
    of the missing directions undefined and are refused.
    """
    v = torch.as_tensor(np.asarray(nads) if not isinstance(nads, torch.Tensor) else nads)
    v = v.detach().to("cpu", torch.float64)
    if v.ndim != 2:
        raise ValueError(f"nads: the NAD array must be 2-D (k, D), got shape {tuple(v.shape)}")
    k, d = v.shape
    if k < d - 1 or k > d:
        raise ValueError(
            f"nads: flip needs a complete NAD basis, D = {d} rows (or D - 1, completed with the "
            f"orthonormal complement); the array has {k}"
        )
    q, r = torch.linalg.qr(v.T, mode="complete")  # (D, D); first k columns span the rows
    diag = torch.diagonal(r)[:k]
    if torch.any(diag.abs() < 1e-6 * diag.abs().max()):
        raise ValueError("nads: the NAD rows are linearly dependent; flip needs a basis")
    q[:, :k] *= torch.sign(diag)
    if k == d - 1:
        last = q[:, -1]
        q[:, -1] = last * torch.sign(last[last.abs().argmax()])
    return q


def flip_dataset(x: torch.Tensor, nads: np.ndarray | torch.Tensor) -> torch.Tensor:
    """x' = U flip(U^T x) for every channel of every image: the NAD coefficients in reverse
    order. U is `complete_basis(nads)`, so the map is an isometry and its own inverse; `nads`
    (D or D - 1 rows, D = H*W) come from a 1-channel H x W architecture."""
    if x.ndim != 4:
        raise ValueError(f"x: expected N x C x H x W images, got shape {tuple(x.shape)}")
    hw = x.shape[2] * x.shape[3]
    _nad_rows(nads, hw, "nads")
    u = complete_basis(nads).to(x.device)
    flat = x.reshape(-1, hw)
    out = torch.empty_like(flat)
    for a in range(0, flat.shape[0], FLIP_CHUNK):  # bounded float64 temporaries
        coef = flat[a:a + FLIP_CHUNK].to(torch.float64) @ u  # rows: U^T x of each channel
        out[a:a + FLIP_CHUNK] = (coef.flip(1) @ u.T).to(x.dtype)
    return out.view_as(x)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class PoisonResult:
    train_accuracy: np.ndarray  # (epochs,) percent, on the (poisoned) training set, per epoch
    test_accuracy: np.ndarray  # (epochs,) percent, clean test set, per epoch
    info: dict = field(default_factory=dict)  # JSON-able


def normalization(spec: PoisonSpec, data: ImageDataset, x_train: torch.Tensor,
                  ) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, source): the spec's, else CIFAR-10's for 3-channel cifar10, else the
    per-channel statistics of the training images the network is trained on."""
    tr = spec.training
    c = x_train.shape[1]
    if tr.mean is not None and tr.std is not None:
        if len(tr.mean) != c:
            raise ValueError(f"training.mean: {len(tr.mean)} values for {c} channel(s)")
        if any(s <= 0 for s in tr.std):
            raise ValueError("training.std: values must be positive")
        return tuple(tr.mean), tuple(tr.std), "spec"
    if data.name == "cifar10" and c == 3:
        return CIFAR10_MEAN, CIFAR10_STD, "cifar10"
    xs = x_train.to(torch.float64).transpose(0, 1).reshape(c, -1)
    std = xs.std(1).clamp_min(1e-6)
    return tuple(xs.mean(1).tolist()), tuple(std.tolist()), "training set"


def train_classifier(spec: PoisonSpec, data: ImageDataset, x_train: torch.Tensor, *,
                     index_position: int = 0, device: torch.device | str | None = None,
                     progress: Progress | None = None, should_stop: ShouldStop | None = None,
                     what: str | None = None) -> PoisonResult:
    """Train `spec.architecture` with K = data.num_classes outputs on (x_train, data.y_train);
    after every epoch measure accuracy on x_train (eval mode) and on the test set of `data`.

    The recipe is spec.training, trained by `nadcore.training.recipe.fit` (as the probe): SGD with
    momentum and weight decay, the learning rate decayed linearly to 0 at every batch, the
    global gradient norm clipped; inputs normalized (see `normalization`).
    `progress(epoch, epochs)` after each epoch; `should_stop()` is checked before each epoch
    and raises nadcore.nads.engine.Cancelled. A loss that becomes NaN or inf (training, or on
    either set) raises `nadcore.training.recipe.Diverged` naming the model as `what` (default:
    its index position): its accuracies would be the argmax of NaN outputs, the share of
    class 0, not a measurement.
    """
    t0 = time.perf_counter()
    tr = spec.training
    dev = resolve_device(device)
    if x_train.shape[0] != data.y_train.shape[0]:
        raise ValueError(f"x_train: {x_train.shape[0]} images for {data.y_train.shape[0]} labels")
    shape = tuple(int(s) for s in x_train.shape[1:])
    mean, std, norm_source = normalization(spec, data, x_train)
    m = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    xtr = (x_train.to(dev, torch.float32) - m) / s
    ytr = data.y_train.to(dev)
    xte = (data.x_test.to(dev, torch.float32) - m) / s
    yte = data.y_test.to(dev)

    if isinstance(spec.architecture, ArchitectureRef):  # re-drawn by its init policy
        model = seeded_uploaded_network(spec.architecture, poison_seed(spec.seed, _INIT,
                                                                     index_position),
                                      shape, data.num_classes)
    else:
        with seeded_global_rng(poison_seed(spec.seed, _INIT, index_position),
                               torch.device("cpu")):
            model = build_model(spec.architecture, shape, data.num_classes, "cpu")  # type: ignore[arg-type]
    model.to(dev)
    n = xtr.shape[0]
    spans = batches(n, tr.batch_size, has_batchnorm(model))
    shuffle = torch.Generator().manual_seed(poison_seed(spec.seed, _SHUFFLE, index_position))
    eval_batch = max(tr.batch_size, 512)
    check = eval_check(model, shape)  # uploaded: `evaluate` checks its first batch of 512
    train_acc = np.zeros(tr.epochs)
    test_acc = np.zeros(tr.epochs)

    def after_epoch(epoch: int, stats: EpochStats) -> None:
        fit_loss, fit_correct = evaluate(model, xtr, ytr, eval_batch, check)
        test_loss, test_correct = evaluate(model, xte, yte, eval_batch, check)
        require_finite_losses(tr, what or f"the model at index position {index_position}",
                              epoch, training_loss=stats.loss,
                              loss_on_its_training_set=fit_loss, test_loss=test_loss)
        train_acc[epoch] = 100.0 * fit_correct / n
        test_acc[epoch] = 100.0 * test_correct / xte.shape[0]
        if progress is not None:
            progress(epoch + 1, tr.epochs)

    fit(model, xtr, ytr, tr, spans=spans,
        permutation=lambda: torch.randperm(n, generator=shuffle).to(dev),
        dropout_seed=poison_seed(spec.seed, _DROPOUT, index_position), device=dev,
        after_epoch=after_epoch, should_stop=should_stop)
    info = {
        "seconds": time.perf_counter() - t0,
        "index_position": index_position,
        "architecture": spec.model_dump(mode="json")["architecture"],
        "device": str(dev),
        "num_train": n,
        "num_test": int(xte.shape[0]),
        "num_classes": data.num_classes,
        "batches_per_epoch": len(spans),
        "normalization": {"mean": list(mean), "std": list(std), "source": norm_source},
        "torch": torch.__version__,
    }
    return PoisonResult(train_acc, test_acc, info)


def run_poison(spec: PoisonSpec, data: ImageDataset, nads: np.ndarray,
               positions: range | None = None, **kw: object) -> list[PoisonResult]:
    """One trained classifier per index position p in `positions` (default all of
    spec.indices): mode "poison" plants the carriers of index spec.indices[p] in the training
    set; mode "flip" flips training and test set; the position `clean_position(spec)` is the
    clean run (the unpoisoned data, the seeds of position 0: the baseline). `kw` goes to
    `train_classifier` (device, progress, should_stop)."""
    positions = range(len(spec.indices)) if positions is None else positions
    results = []
    for p in positions:
        if p == clean_position(spec):
            res = train_classifier(spec, data, data.x_train, index_position=0,  # type: ignore[arg-type]
                                   what="the clean run", **kw)
            res.info.update(mode="clean", index_position=p)
        elif spec.mode == "flip":
            flipped = dataclasses.replace(data, x_test=flip_dataset(data.x_test, nads))
            res = train_classifier(spec, flipped, flip_dataset(data.x_train, nads),
                                   index_position=p, what="the flipped model", **kw)  # type: ignore[arg-type]
            res.info.update(mode="flip")
        else:
            index = spec.indices[p]
            x = poison_dataset(data.x_train, data.y_train, nads, index, spec.eps,
                               num_classes=data.num_classes)
            res = train_classifier(spec, data, x, index_position=p,  # type: ignore[arg-type]
                                   what=f"the model poisoned at index {index}", **kw)
            res.info.update(mode="poison", index=index, eps=spec.eps)
        results.append(res)
    return results


def example_images(data: ImageDataset, poisoned: torch.Tensor, n: int = 4,
                   ) -> dict[str, np.ndarray]:
    """For an examples figure: the first training image of each of the first n classes (fewer
    if fewer classes occur), clean, poisoned, and their difference, each (n, C, H, W) float32,
    plus their labels."""
    y = data.y_train
    picks = [int(torch.nonzero(y == c)[0]) for c in range(data.num_classes) if (y == c).any()][:n]
    idx = torch.tensor(picks, dtype=torch.int64)
    clean = data.x_train[idx].to(torch.float32)
    pois = poisoned[idx].to("cpu", torch.float32)
    return {"clean": clean.numpy(), "poisoned": pois.numpy(), "difference": (pois - clean).numpy(),
            "labels": y[idx].numpy()}


__all__ = ["PoisonResult", "carriers", "class_carrier", "clean_position", "complete_basis",
           "example_images", "flip_dataset", "max_poison_index", "normalization",
           "poison_dataset", "poison_seed", "run_poison", "train_classifier"]
