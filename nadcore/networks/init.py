"""Fast random initialization of many networks at once.

PyTorch initializes a module parameter by parameter on the CPU; for ResNet-18 that is 62
tensors and 11 M random numbers per network, a large share of the cost of a NAD estimate.
Here an *init plan* lists, for every entry of a template's state dict, the distribution its
module type gives it (kaiming-uniform bounds of Conv/Linear, ones and zeros of BatchNorm, ...).
A chunk of networks is drawn straight into stacked tensors on the target device, each
network's parameters in plan order from a generator seeded by (seed, network index) alone:
one in-place `uniform_`/`normal_` per parameter, no module objects, no CPU round trip.

Architectures whose initialization is not a function of module types alone (torchvision's
builders have their own init loops) are drawn by running their builder once per network on
the target device under the network's seed ("builder" init); same determinism, less speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nadcore.networks.layers import HeNormalConv2d
from nadcore.seeding import network_seed, seeded_global_rng

Kind = Literal["uniform", "normal", "constant", "copy"]


@dataclass(frozen=True)
class ParamInit:
    """Distribution of one state-dict entry: U(-value, value), N(0, value^2), constant, or a
    copy of the tensor `source` (an uploaded architecture's kept tensors,
    nadcore.uploaded.network)."""

    name: str
    shape: tuple[int, ...]
    kind: Kind
    value: float
    dtype: torch.dtype = torch.float32
    source: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class UnknownModuleError(ValueError):
    """A parameter belongs to a module type whose default initialization is not known."""


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() > 1 else weight.shape[0]


_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_CONV_LINEAR_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def module_init_rules(module: nn.Module, prefix: str) -> list[ParamInit]:
    """PyTorch's default init of one module's own parameters and buffers, by module type."""
    own = [(n, t) for n, t in module.named_parameters(recurse=False)]
    own += [(n, t) for n, t in module.named_buffers(recurse=False) if t is not None]
    if not own:
        return []
    rules: list[ParamInit] = []

    def add(name: str, kind: Kind, value: float) -> None:
        t = getattr(module, name)
        rules.append(ParamInit(prefix + name, tuple(t.shape), kind, float(value), t.dtype))

    if isinstance(module, HeNormalConv2d):
        add("weight", "normal", module.init_std)
        if module.bias is not None:
            add("bias", "constant", 0.0)
    elif isinstance(module, _CONV_LINEAR_TYPES):
        # kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in); bias uses the same bound.
        bound = 1.0 / math.sqrt(_fan_in(module.weight)) if _fan_in(module.weight) > 0 else 0.0
        add("weight", "uniform", bound)
        if module.bias is not None:
            add("bias", "uniform", bound)
    elif isinstance(module, _NORM_TYPES):
        for name, t in own:
            value = 1.0 if name in ("weight", "running_var") else 0.0
            if t is not None:
                add(name, "constant", value)
    elif isinstance(module, nn.Embedding):
        add("weight", "normal", 1.0)
    else:
        names = ", ".join(prefix + n for n, _ in own)
        raise UnknownModuleError(
            f"no default initialization known for {type(module).__name__} ({names})"
        )
    return rules


def init_plan(template: nn.Module) -> list[ParamInit]:
    """The init plan of every state-dict entry of `template`, in state-dict order (a module
    with its own `init_plan()`, such as an uploaded architecture, gives its own)."""
    if callable(getattr(template, "init_plan", None)):
        return template.init_plan()
    rules: dict[str, ParamInit] = {}
    for mod_name, module in template.named_modules():
        for rule in module_init_rules(module, f"{mod_name}." if mod_name else ""):
            rules[rule.name] = rule
    order = list(template.state_dict().keys())
    missing = [n for n in order if n not in rules]
    if missing:
        raise UnknownModuleError(f"no init rule for {', '.join(missing)}")
    return [rules[n] for n in order]


class NetworkSampler:
    """Draws networks j = start..stop-1 of a job as stacked state dicts on `device`.

    `mode="plan"` uses the init plan (fast); `mode="builder"` runs the model's own constructor
    once per network under its seed. Either way network j depends on (seed, j) alone.
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        template: nn.Module,
        seed: int,
        device: torch.device,
        mode: Literal["plan", "builder"] = "plan",
    ):
        self.factory = factory
        self.seed = seed
        self.device = device
        self.mode = mode
        self.names = list(template.state_dict().keys())
        self.plan = init_plan(template) if mode == "plan" else None
        self._buffers: dict[str, torch.Tensor] | None = None
        self._buffers_n = 0

    def sample(self, indices: Sequence[int], reuse: bool = False) -> dict[str, torch.Tensor]:
        """Stacked state dict: each entry has a leading dimension len(indices).

        `reuse=True` draws into the buffers of the previous call of the same size (the caller
        is done with them): on the CPU, fresh gigabyte-sized buffers cost more in page faults
        than the random numbers themselves.
        """
        if self.mode == "builder":
            return self._sample_builder(indices)
        return self._sample_plan(indices, reuse)

    def _sample_plan(self, indices: Sequence[int], reuse: bool) -> dict[str, torch.Tensor]:
        n, dev = len(indices), self.device
        state = self._buffers if reuse and self._buffers_n == n else None
        if state is None:
            state = {p.name: torch.empty((n, *p.shape), dtype=p.dtype, device=dev)
                     for p in self.plan}
            if reuse:
                self._buffers, self._buffers_n = state, n
        for p in self.plan:
            if p.kind == "constant":
                state[p.name].fill_(p.value)
            elif p.kind == "copy":
                state[p.name].copy_(p.source.to(dev).expand(n, *p.shape))
        drawn = [p for p in self.plan if p.kind in ("uniform", "normal")]
        gen = torch.Generator(device=dev)
        for row, j in enumerate(indices):
            gen.manual_seed(network_seed(self.seed, j))
            for p in drawn:  # in plan order: the stream of network j is fixed
                if p.kind == "uniform":
                    state[p.name][row].uniform_(-p.value, p.value, generator=gen)
                else:
                    state[p.name][row].normal_(0.0, p.value, generator=gen)
        return state

    def _sample_builder(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        states = []
        for j in indices:
            with seeded_global_rng(network_seed(self.seed, j), self.device), \
                    torch.device(self.device):
                states.append(self.factory().state_dict())
        return {k: torch.stack([s[k] for s in states]) for k in self.names}
