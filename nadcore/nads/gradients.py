"""Input gradients of many random networks at one evaluation point.

One function computes a block of gradient entries of one network; a chunk of networks runs
it either through `vmap` over the networks' stacked state (torch.func's ensembling idiom: the
first layer of all networks becomes one wide layer, the rest grouped layers) or in a loop
over the networks, whichever measures faster on the device (`engine.default_strategy`).

An uploaded network is checked where it runs (`block_check`): in each call, the first
finite-difference block and a smaller last one (a size validation did not run), a few of their
rows evaluated again in a batch of their own
(`nadcore.uploaded.engine_assumptions.check_block`), for every network of the chunk (a
TorchScript network may branch on its weights) while that costs at most CHECK_SHARE of the
forward passes, else for every `checked_stride`-th. Autograd needs no check: each network sees
one input, x0, alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from nadcore.nads import first_block
from nadcore.nads.precision import precision_context
from nadcore.uploaded.engine_assumptions import INDEPENDENCE_BATCH, BlockCheck, check_block

StateDict = dict[str, torch.Tensor]
Strategy = Literal["vmap", "loop"]
# the share of an uploaded network's forward passes that its block checks may add (per
# network: INDEPENDENCE_BATCH rows of each checked block against 2 D rows in all)
CHECK_SHARE = 0.01


def checked_stride(dim: int) -> int:
    """Every how many networks of a chunk the block checks run (the first network always): at
    most two checked blocks of INDEPENDENCE_BATCH rows against 2 D rows, so every network from
    D = 800 inputs (1x32x32: 1,024), every 50th at D = 16."""
    return max(1, math.ceil(2 * INDEPENDENCE_BATCH / (CHECK_SHARE * 2 * dim)))


def basis_images(shape: tuple[int, ...], start: int, stop: int, device: torch.device):
    """The one-hot images e_i for pixels i in [start, stop), shape (stop-start, *shape)."""
    d = 1
    for s in shape:
        d *= s
    p = stop - start
    e = torch.zeros((p, d), device=device)
    e[torch.arange(p, device=device), torch.arange(start, stop, device=device)] = 1.0
    return e.view(p, *shape)


def compiled_forward(template: nn.Module, method: str, strategy: Strategy) -> Callable:
    """`functional_call` compiled by torch.compile (Inductor), for the finite differences of a
    built-in architecture in a loop over networks, where it fuses the memory-bound steps that
    eager mode runs one by one (BatchNorm, ReLU, DenseNet's concatenations): on one CPU thread
    of an AVX-512 EPYC, 1.46x faster for DenseNet-121 and 1.3x for ResNet-18 in blocks of 128
    inputs (BENCHMARKS.md, Catalog on the CPU). Outputs agree with eager mode to float32
    rounding, not bitwise (fused kernels add in another order). Compiling costs 13 s (ResNet-18)
    to 63 s (DenseNet-121) once per process, so the catalog's background build uses it and
    jobs do not. ValueError where it does not apply (`compilable`)."""
    if not compilable(template, method, strategy):
        raise ValueError("compiled: only for a built-in architecture's finite differences "
                         "in a loop over networks")
    return torch.compile(functional_call, dynamic=False)


def compilable(template: nn.Module, method: str, strategy: str) -> bool:
    """Whether `compiled_forward` applies: not to an uploaded model (its own call), autograd
    or vmap (the plan's choice for small networks such as logreg)."""
    return (getattr(template, "call_with_state", None) is None
            and method == "finite_difference" and strategy == "loop")


class GradientEvaluator:
    """Computes the (n, D) input gradients of a chunk of networks given their stacked state."""

    def __init__(
        self,
        template: nn.Module,
        x0: torch.Tensor,
        method: Literal["finite_difference", "autograd"],
        scale: float,
        output_index: int = 0,
        pixel_block: int | None = None,
        strategy: Strategy | None = None,
        channels_last: bool = False,
        precision: str = "fp32",
        block_check: BlockCheck | None = None,
        compiled: bool = False,
        local: bool = False,
    ):
        self.template = template
        self.x0 = x0
        self.method = method
        self.scale = float(scale)
        self.output_index = output_index
        self.dim = x0.numel()
        self.pixel_block = min(self.dim, pixel_block or self.dim)
        self.strategy: Strategy = strategy or "loop"
        self.channels_last = channels_last and x0.dim() == 3
        self.precision = precision  # resolved: fp32, tf32 or bf16 (nadcore.nads.precision)
        self.block_check = block_check  # uploaded networks only (built-ins are ours)
        self._forward = functional_call
        if compiled:  # see `compiled_forward`
            self._forward = compiled_forward(template, method, self.strategy)
        # DenseNet-121's first block where a perturbation reaches it (nadcore.nads.first_block)
        self._local = first_block.FirstBlockLocal(template) if local and \
            first_block.applies(template, method, self.strategy) else None
        self.local = self._local is not None

    def _output(self, state: StateDict, x: torch.Tensor) -> torch.Tensor:
        # an uploaded TorchScript model has no stateless call: it loads the state in place
        # (loop strategy only; see nadcore.uploaded.network)
        call = getattr(self.template, "call_with_state", None)
        if call is not None:
            return call(state, x)[:, self.output_index]
        return self._forward(self.template, state, (x,))[:, self.output_index]

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _values(self, state: StateDict, xs: torch.Tensor) -> torch.Tensor:
        """f(xs) of one network in float32 (bf16 outputs: the difference in fp32)."""
        return self._output(state, xs).float()

    def _autograd(self, state: StateDict, x0: torch.Tensor) -> torch.Tensor:
        own = getattr(self.template, "input_gradient", None)  # an uploaded model's own
        if own is not None:
            return own(state, x0, self.output_index)
        return grad(lambda x: self._output(state, x.unsqueeze(0))[0])(x0).reshape(-1)

    def _map(self, fn: Callable, state: StateDict, arg: torch.Tensor) -> torch.Tensor:
        if self.strategy == "vmap":
            return vmap(fn, in_dims=(0, None))(state, arg)
        n = next(iter(state.values())).shape[0]
        return torch.stack([fn(self._network(state, j), arg) for j in range(n)])

    def _network(self, state: StateDict, j: int) -> StateDict:
        one = {k: v[j] for k, v in state.items()}
        if self.channels_last:
            one = {k: self._layout(v) if v.dim() == 4 else v for k, v in one.items()}
        return one

    def __call__(self, state: StateDict, pixels: range | None = None) -> torch.Tensor:
        """Gradients (n, D) of the n stacked networks; with `pixels` (finite differences
        only), just those input coordinates, (n, len(pixels)); float32 whatever the
        precision of the forward passes."""
        with precision_context(self.precision, self.x0.device):
            return self._gradients(state, pixels)

    def _gradients(self, state: StateDict, pixels: range | None) -> torch.Tensor:
        if self.method == "autograd":
            return self._map(self._autograd, state, self.x0).detach().float()
        pixels = pixels or range(self.dim)
        n = next(iter(state.values())).shape[0]
        full = min(self.pixel_block, len(pixels))  # the pixels of a block but the last
        out = torch.empty((n, len(pixels)), dtype=torch.float32, device=self.x0.device)
        with torch.no_grad():
            for start in range(pixels.start, pixels.stop, self.pixel_block):
                stop = min(pixels.stop, start + self.pixel_block)
                if self._local is not None and self.strategy == "loop":
                    values = self._local_values(state, start, stop)
                    p = stop - start
                    out[:, start - pixels.start:stop - pixels.start] = \
                        (values[:, :p] - values[:, p:]) / (2 * self.scale)
                    continue
                e = basis_images(tuple(self.x0.shape), start, stop, self.x0.device)
                # the perturbed inputs are shared by all networks: built once per block
                xs = self._layout(torch.cat([self.x0 + self.scale * e, self.x0 - self.scale * e]))
                values = self._map(self._values, state, xs)  # xs = the + block then the -
                if self.block_check is not None and (start == pixels.start
                                                     or stop - start < full):
                    for j in range(0, n, checked_stride(len(pixels))):
                        self._check_block(state, j, xs, values[j])
                # (f(x0 + s e_i) - f(x0 - s e_i)) / 2s
                p = stop - start
                out[:, start - pixels.start:stop - pixels.start] = \
                    (values[:, :p] - values[:, p:]) / (2 * self.scale)
        return out

    def _local_values(self, state: StateDict, start: int, stop: int) -> torch.Tensor:
        """(n, 2p) outputs at x0 + s e_i, then at x0 - s e_i, for pixels i in [start, stop),
        through `first_block.FirstBlockLocal`."""
        device = self.x0.device
        index = torch.arange(start, stop, device=device).repeat(2)
        delta = torch.full((2, stop - start), self.scale, device=device)
        delta[1] = -self.scale
        n = next(iter(state.values())).shape[0]
        return torch.stack([
            self._forward(self._local, {f"net.{k}": v for k, v in self._network(state, j).items()},
                          (self.x0, index, delta.reshape(-1)))[:, self.output_index].float()
            for j in range(n)])

    def _check_block(self, state: StateDict, j: int, xs: torch.Tensor, values: torch.Tensor
                     ) -> dict[str, float]:
        """Rows of network `j`'s block `xs` (its outputs `values`) evaluated again in a batch
        of their own, at the same device and precision, in the same layout."""
        one = self._network(state, j)
        return check_block(lambda x: self._values(one, self._layout(x)), xs, values,
                           self.block_check, self.precision)
