"""Probing an architecture's directional bias (docs/science.md, section 3): train one fresh
model per direction v on the linearly separable distribution D(v) and report its test accuracy.
The directions are built in `nadcore.probe.directions`, D(v) is sampled in
`nadcore.probe.distribution`; this module trains (the strategies below).

Everything about direction number j of a job (its model's initialization, its training and
test sets, its shuffling order, its dropout masks in a loop) is drawn from seeds derived from
(spec.seed, j) alone, so a job split into shards by direction gives the same numbers as one run.

Two ways to train a set of directions, with identical math:
- "vmap": a chunk of directions is trained as one stacked ensemble. The forward pass is
  `vmap(functional_call)` over the stacked parameters and each model's own batch; one backward
  pass of the summed per-model losses gives every model its own gradient (the models share no
  parameters); clipping, weight decay, momentum and the SGD step are batched tensor ops with a
  per-model gradient norm.
- "loop": one direction after the other with a plain module, `torch.optim.SGD` and
  `clip_grad_norm_`: the independent reference, and the baseline of the benchmark.
Both follow the recipe of `nadcore.training.recipe` (its `fit` and its `stacked_sgd_step`).
Both stop with `nadcore.training.recipe.Diverged` after the first epoch in which a direction's
training or test loss is NaN or inf: its accuracy would be the argmax of NaN outputs (class 0,
50 % on the balanced test set), not a measurement.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from nadcore.control import Cancelled, Progress, ShouldStop
from nadcore.nads.schedule import activation_profile, available_memory, resolve_device
from nadcore.networks.factory import build_model, model_factory
from nadcore.networks.init import NetworkSampler
from nadcore.probe.directions import direction_frequencies, fourier_image, make_directions
from nadcore.probe.distribution import sample_dataset
from nadcore.probe.spec import (
    ProbeSpec,
)
from nadcore.seeding import PROBE_DROPOUT as _DROPOUT
from nadcore.seeding import PROBE_INIT as _INIT
from nadcore.seeding import PROBE_SHUFFLE as _SHUFFLE
from nadcore.seeding import PROBE_TEST as _TEST
from nadcore.seeding import PROBE_TRAIN as _TRAIN
from nadcore.seeding import probe_seed, seeded_global_rng
from nadcore.specs.architecture import TORCHVISION_PREFIX
from nadcore.training.recipe import (
    EpochStats,
    batches,
    check_stop,
    eval_check,
    evaluate,
    fit,
    has_batchnorm,
    lr_at,
    require_finite_losses,
    stacked_sgd_step,
)
from nadcore.uploaded.engine_assumptions import check_eval_batch

STRATEGIES = ("vmap", "loop")

# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class ProbeResult:
    accuracies: np.ndarray  # (n,) float64, test accuracy in percent, in the order of directions
    curves: np.ndarray  # (n, epochs, 4) float32: train loss, train acc %, test loss, test acc %
    info: dict = field(default_factory=dict)  # JSON-able: seconds, strategy, chunk size, ...


class _Direction:
    """Seeded data and shuffle generator of direction `index` of a job, drawn on `device`
    (like the initialization: numbers depend on the device type, never on the batching)."""

    def __init__(self, spec: ProbeSpec, direction: np.ndarray, index: int,
                 device: torch.device | None = None):
        data = spec.data
        shape = spec.input_shape
        dev = device or torch.device("cpu")
        gen = torch.Generator(dev).manual_seed(probe_seed(spec.seed, _TRAIN, index))
        self.x_train, self.y_train = sample_dataset(direction, shape, data.num_train,
                                                    data.sigma, data.epsilon, gen)
        gen = torch.Generator(dev).manual_seed(probe_seed(spec.seed, _TEST, index))
        self.x_test, self.y_test = sample_dataset(direction, shape, data.num_test,
                                                  data.sigma, data.epsilon, gen)
        self.shuffle = torch.Generator(dev).manual_seed(probe_seed(spec.seed, _SHUFFLE, index))
        self.num_train = data.num_train

    def permutation(self) -> torch.Tensor:
        return torch.randperm(self.num_train, generator=self.shuffle, device=self.shuffle.device)


class ProbeTrainer:
    """Builds the template and sampler of a spec once; trains chunks of directions."""

    def __init__(self, spec: ProbeSpec, device: torch.device | str | None = None,
                 strategy: str | None = None, chunk_size: int | None = None,
                 memory_budget: int | None = None):
        self.spec = spec
        self.device = resolve_device(device)
        shape = tuple(spec.input_shape)
        self.template = build_model(spec.architecture, shape, 2, self.device)
        factory = model_factory(spec.architecture)
        self.factory = lambda: factory(shape, 2)
        init = "builder" if str(spec.architecture).startswith(TORCHVISION_PREFIX) else "plan"
        self.sampler = NetworkSampler(self.factory, self.template,
                                      probe_seed(spec.seed, _INIT), self.device, init)
        self.param_names = [n for n, _ in self.template.named_parameters()]
        self.has_bn = has_batchnorm(self.template)
        self.has_dropout = any(isinstance(m, nn.modules.dropout._DropoutNd)
                               for m in self.template.modules())
        self.strategy = strategy or default_strategy(self.device)
        if not getattr(self.template, "supports_vmap", True):
            self.strategy = "loop"  # TorchScript: no stateless API (nadcore.uploaded.network)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        self._act: int | None = None
        self.batches = batches(spec.data.num_train, spec.training.batch_size, self.has_bn)
        self.chunk_size = chunk_size or self._chunk_size(memory_budget)
        self.eval_batch = self._eval_batch()
        # an uploaded model's evaluation batches are checked (validation never ran their size)
        self.eval_check = eval_check(self.template, shape)

    # -- sizing --------------------------------------------------------------------------------
    def _activation_floats(self) -> int:
        if self._act is None:
            prof = activation_profile(self.template, tuple(self.spec.input_shape))
            self._act = prof.total + math.prod(self.spec.input_shape)
        return self._act

    def _chunk_size(self, memory_budget: int | None) -> int:
        """Directions per chunk from a memory budget: data, parameters (with gradient and
        momentum), activations of one training batch kept for the backward pass."""
        if self.strategy == "loop":
            return 1
        dim = math.prod(self.spec.input_shape)
        params = sum(p.numel() for p in self.template.parameters())
        data = (self.spec.data.num_train + self.spec.data.num_test) * dim * 4
        acts = self.spec.training.batch_size * self._activation_floats() * 4 * 3
        per_dir = data + 4 * params * 4 + acts
        fixed = (2 << 30) if self.device.type == "cpu" else (16 << 30)
        budget = min(memory_budget or fixed, available_memory(self.device) // 3)
        cap = 64 if self.device.type == "cpu" else 1024
        return max(1, min(cap, budget // per_dir))

    def _eval_batch(self) -> int:
        """Test samples per model per forward pass: bounded activations for a whole chunk."""
        per_sample = max(1, self._activation_floats()) * 4 * max(1, self.chunk_size)
        budget = (256 << 20) if self.device.type == "cpu" else (4 << 30)
        return int(max(self.spec.training.batch_size, min(self.spec.data.num_test,
                                                          budget // per_sample)))

    # -- running -------------------------------------------------------------------------------
    def run(self, directions: np.ndarray, first_index: int = 0,
            progress: Progress | None = None, should_stop: ShouldStop | None = None,
            ) -> ProbeResult:
        t0 = time.perf_counter()
        directions = np.asarray(directions, dtype=np.float32)
        n = directions.shape[0]
        dim = math.prod(self.spec.input_shape)
        if directions.ndim != 2 or directions.shape[1] != dim:
            raise ValueError(f"directions must be (n, {dim}), got {directions.shape}")
        epochs = self.spec.training.epochs
        curves = np.zeros((n, epochs, 4), dtype=np.float32)
        size = self.chunk_size
        for lo in range(0, n, size):
            hi = min(n, lo + size)
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after {lo} of {n} directions")
            indices = list(range(first_index + lo, first_index + hi))

            def chunk_progress(done: int, lo: int = lo) -> None:
                """`done` direction-epochs of this chunk."""
                if progress is not None:
                    progress(lo * epochs + done, n * epochs)

            train = self._train_vmap if self.strategy == "vmap" else self._train_loop
            curves[lo:hi] = train(directions[lo:hi], indices, chunk_progress, should_stop)
        info = {
            "seconds": time.perf_counter() - t0,
            "strategy": self.strategy,
            "chunk_size": self.chunk_size,
            "device": str(self.device),
            "num_directions": n,
            "first_index": first_index,
            "batches_per_epoch": len(self.batches),
            "torch": torch.__version__,
        }
        if self.has_dropout and self.strategy == "vmap":
            info["dropout_note"] = ("dropout masks of batched training depend on the chunk a "
                                    "direction is trained in")
        # accuracies == curves[:, -1, 3] exactly (float32 values widened), an invariant the
        # service's artifacts rely on
        return ProbeResult(curves[:, -1, 3].astype(np.float64), curves, info)

    def _train_vmap(self, directions: np.ndarray, indices: list[int],
                    progress: Callable[[int], None], should_stop: ShouldStop | None,
                    ) -> np.ndarray:
        spec, tr, dev = self.spec, self.spec.training, self.device
        n = len(indices)
        shape, data = tuple(spec.input_shape), spec.data
        x_train = torch.empty((n, data.num_train, *shape), device=dev)
        y_train = torch.empty((n, data.num_train), dtype=torch.int64, device=dev)
        x_test = torch.empty((n, data.num_test, *shape), device=dev)
        y_test = torch.empty((n, data.num_test), dtype=torch.int64, device=dev)
        dirs = []
        for r, j in enumerate(indices):  # stacked one by one: peak memory = the chunk's data
            d = _Direction(spec, directions[r], j, dev)
            x_train[r], y_train[r], x_test[r], y_test[r] = d.x_train, d.y_train, d.x_test, d.y_test
            d.x_train = d.y_train = d.x_test = d.y_test = None
            dirs.append(d)
        state = self.sampler.sample(indices)
        params = {k: state[k].detach().clone().requires_grad_(True) for k in self.param_names}
        buffers = {k: v.clone() for k, v in state.items() if k not in params}
        plist = list(params.values())
        momentum: list[torch.Tensor] | None = None
        template = self.template
        rows = torch.arange(n, device=dev)[:, None]

        def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (p, b), (x,))

        batched = vmap(forward, in_dims=(0, 0, 0), randomness="different")
        curves = np.zeros((n, tr.epochs, 4), dtype=np.float32)
        step = 0
        with seeded_global_rng(probe_seed(spec.seed, _DROPOUT, indices[0]), dev):
            for epoch in range(tr.epochs):
                check_stop(should_stop, epoch, tr.epochs)
                perms = torch.stack([d.permutation() for d in dirs])
                loss_sum = torch.zeros(n, dtype=torch.float64, device=dev)
                correct = torch.zeros(n, dtype=torch.int64, device=dev)
                seen = 0
                template.train()
                for start, stop in self.batches:
                    idx = perms[:, start:stop]
                    xb, yb = x_train[rows, idx], y_train[rows, idx]
                    out = batched(params, buffers, xb)  # (n, B, 2)
                    losses = F.cross_entropy(out.flatten(0, 1), yb.flatten(),
                                             reduction="none").view(n, -1).mean(1)
                    grads = torch.autograd.grad(losses.sum(), plist, allow_unused=True,
                                                materialize_grads=True)
                    with torch.no_grad():
                        momentum = stacked_sgd_step(plist, list(grads), momentum,
                                                    lr_at(tr, step, len(self.batches)), tr)
                        loss_sum += losses.detach().to(torch.float64) * (stop - start)
                        correct += (out.detach().argmax(-1) == yb).sum(1)
                    seen += stop - start
                    step += 1
                template.eval()
                test_loss, test_correct = self._evaluate_vmap(params, buffers, x_test, y_test)
                curves[:, epoch, 0] = (loss_sum / seen).cpu().numpy()
                curves[:, epoch, 1] = (100.0 * correct.to(torch.float64) / seen).cpu().numpy()
                curves[:, epoch, 2] = test_loss
                curves[:, epoch, 3] = 100.0 * test_correct / spec.data.num_test
                for r, j in enumerate(indices):
                    require_finite_losses(tr, f"direction {j}", epoch,
                                          training_loss=float(curves[r, epoch, 0]),
                                          test_loss=float(curves[r, epoch, 2]))
                progress(n * (epoch + 1))
        template.eval()
        return curves

    @torch.no_grad()
    def _evaluate_vmap(self, params: dict, buffers: dict, x: torch.Tensor, y: torch.Tensor,
                       ) -> tuple[np.ndarray, np.ndarray]:
        template = self.template

        def forward(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
            return functional_call(template, (p, b), (xb,))

        batched = vmap(forward, in_dims=(0, 0, 0))
        n, num = y.shape
        loss = torch.zeros(n, dtype=torch.float64, device=x.device)
        correct = torch.zeros(n, dtype=torch.int64, device=x.device)
        for start in range(0, num, self.eval_batch):
            stop = min(num, start + self.eval_batch)
            out = batched(params, buffers, x[:, start:stop])
            if self.eval_check is not None and start == 0:  # the first model, the same vmap
                first = ({k: v[:1] for k, v in params.items()},
                         {k: v[:1] for k, v in buffers.items()})
                check_eval_batch(lambda xb, first=first: batched(*first, xb[None])[0],
                                 x[0, start:stop], out[0], self.eval_check)
            yb = y[:, start:stop]
            ce = F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none")
            loss += ce.view(n, -1).to(torch.float64).sum(1)
            correct += (out.argmax(-1) == yb).sum(1)
        return (loss / num).cpu().numpy(), correct.cpu().numpy()

    def _train_loop(self, directions: np.ndarray, indices: list[int],
                    progress: Callable[[int], None], should_stop: ShouldStop | None,
                    ) -> np.ndarray:
        """Each direction alone: plain module, torch.optim.SGD, clip_grad_norm_."""
        epochs = self.spec.training.epochs
        curves = np.zeros((len(indices), epochs, 4), dtype=np.float32)
        for r, j in enumerate(indices):
            curves[r] = self._train_one(directions[r], j, should_stop,
                                        lambda e, r=r: progress(r * epochs + e))
        return curves

    def _train_one(self, direction: np.ndarray, j: int, should_stop: ShouldStop | None,
                   progress: Callable[[int], None]) -> np.ndarray:
        """Curves (epochs, 4) of direction number j; `progress(epochs done)`."""
        spec, tr, dev = self.spec, self.spec.training, self.device
        d = _Direction(spec, direction, j, dev)
        with torch.device(dev):
            model = self.factory()
        model.load_state_dict({k: v[0] for k, v in self.sampler.sample([j]).items()})
        curves = np.zeros((tr.epochs, 4), dtype=np.float32)

        def after_epoch(epoch: int, stats: EpochStats) -> None:
            test_loss, test_correct = evaluate(model, d.x_test, d.y_test, self.eval_batch,
                                               self.eval_check)
            curves[epoch] = (stats.loss, stats.accuracy, test_loss,
                             100.0 * test_correct / spec.data.num_test)
            require_finite_losses(tr, f"direction {j}", epoch,
                                  training_loss=float(curves[epoch, 0]),
                                  test_loss=float(curves[epoch, 2]))
            progress(epoch + 1)

        fit(model, d.x_train, d.y_train, tr, spans=self.batches, permutation=d.permutation,
            dropout_seed=probe_seed(spec.seed, _DROPOUT, j), device=dev,
            after_epoch=after_epoch, should_stop=should_stop)
        return curves


def default_strategy(device: torch.device) -> str:
    """vmap or loop, from measurements (BENCHMARKS.md, "Probe (issue 4)").

    CPU: batching does not pay. Grouped convolutions and pooling cost as much per model as
    alone, and a LogReg step is dominated by memory traffic either way: LeNet measured
    0.9x, LogReg 0.85x (vmap / loop throughput). The loop also needs no memory for a whole
    chunk's data. GPU (H100): vmap, 6.2x the loop for LeNet; one small model per step
    cannot fill the device.
    """
    return "loop" if device.type == "cpu" else "vmap"


def run_probe(
    spec: ProbeSpec,
    directions: np.ndarray,
    *,
    first_index: int = 0,
    device: torch.device | str | None = None,
    strategy: str | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
) -> ProbeResult:
    """Train one fresh model per row of `directions` on D(row) and report its test accuracy.

    Row r is direction number first_index + r of the job: its model's initialization, data,
    shuffling (and dropout masks with strategy "loop") depend only on (spec.seed,
    first_index + r). `progress(done, total)` counts direction-epochs; `should_stop()` is
    checked before every epoch and raises nadcore.nads.engine.Cancelled. `strategy` ("vmap" or
    "loop"), `chunk_size` and `memory_budget` only change how the work is executed.
    """
    trainer = ProbeTrainer(spec, device, strategy, chunk_size, memory_budget)
    return trainer.run(directions, first_index, progress, should_stop)


__all__ = [
    "ProbeResult",
    "ProbeTrainer",
    "default_strategy",
    "direction_frequencies",
    "fourier_image",
    "make_directions",
    "probe_seed",
    "run_probe",
    "sample_dataset",
]
