"""How a NAD spec runs on a device: strategy, pixel blocks, network chunks (no maths here)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from nadcore.nads.spec import NADSpec
from nadcore.specs.architecture import TORCHVISION_PREFIX
from nadcore.threads import fit_threads


def resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class ActivationProfile:
    """Sizes (floats per input) of a model's activations, from one run on the meta device, and
    how many there are (modules of a built-in; operators of an uploaded model, which
    `nadcore.uploaded.engine_assumptions.rounding_tolerance` counts as roundings)."""

    largest: int
    total: int
    parameters: int
    operators: int = 0


def activation_profile(template: nn.Module, input_shape: tuple[int, ...]) -> ActivationProfile:
    if callable(getattr(template, "activation_profile", None)):  # uploaded models measure
        return template.activation_profile(input_shape)
    meta = copy.deepcopy(template).to("meta")
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output[0].numel())

    handles = [m.register_forward_hook(hook) for m in meta.modules()]
    with torch.no_grad():
        meta(torch.empty((1, *input_shape), device="meta"))
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in template.parameters())
    return ActivationProfile(max(sizes + [math.prod(input_shape)]), sum(sizes), params,
                             len(sizes))


def _pixel_block(largest: int, d: int, device_type: str) -> int:
    target, floor = ((1 << 23), 64) if device_type == "cpu" else ((1 << 31), 1)
    block = 2 ** int(math.log2(max(1, target // (8 * largest))))
    return max(1, min(d, max(floor, block)))


def cpu_pixel_block(largest: int, d: int) -> int:
    """Pixels per finite-difference block on the CPU for a model whose largest activation has
    `largest` floats per input (each block runs 2 x this many inputs)."""
    return _pixel_block(largest, d, "cpu")


@dataclass
class ExecutionPlan:
    """How a spec runs on a device: networks per chunk, pixels per block, strategy."""

    device: torch.device
    chunk_size: int
    pixel_block: int
    strategy: str
    init: str
    channels_last: bool = False
    threads: int = 1  # torch intra-op threads of the process that ran it
    profile: ActivationProfile | None = None  # what the plan was sized from (not recorded)

    def as_dict(self) -> dict:
        return {"device": str(self.device), "chunk_size": self.chunk_size,
                "pixel_block": self.pixel_block, "strategy": self.strategy, "init": self.init,
                "channels_last": self.channels_last, "threads": self.threads}


def default_strategy(
    spec: NADSpec, device: torch.device, parameters: int, has_conv: bool
) -> str:
    """vmap or loop, from measurements (BENCHMARKS.md).

    CPU: grouped convolutions make vmap slower than a loop for finite differences (LeNet:
    4x). H100: vmap is 2x faster than a loop for LeNet, 2x slower for ResNet-18 (whose
    2*D-input batch already fills the GPU). Autograd (one input per network): vmap, but for
    large networks on the CPU.
    """
    small = parameters < 2_000_000
    if spec.method == "autograd":
        # CPU ResNet-18: loop 23 ms, vmap 33 ms per network
        return "vmap" if small or device.type == "cuda" else "loop"
    if not has_conv:  # vmap of a linear model is one matrix product for all networks
        return "vmap"
    return "vmap" if small and device.type == "cuda" else "loop"


def plan_execution(
    spec: NADSpec,
    template: nn.Module,
    device: torch.device,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    strategy: str | None = None,
) -> ExecutionPlan:
    """Size the work from the model's activation sizes and the device.

    Bitwise reproducibility: the pixel block and the vmap group size depend only on the model
    and the device type (never on N, the shard or the free memory), and vmap groups are aligned
    to multiples of the group size, so every network is always evaluated in the same company.
    A loop evaluates each network alone; its chunk only batches the sampling and can be sized
    from free memory. Passing `chunk_size` with vmap sets the group size (and so the bits).
    Caps torch's intra-op threads at the cores the process may use (`nadcore.threads`).
    """
    prof = activation_profile(template, spec.input_shape)
    d = spec.input_dim
    has_conv = getattr(template, "has_conv", None)  # an uploaded model records its types
    if has_conv is None:
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in template.modules())
    strategy = strategy or default_strategy(spec, device, prof.parameters, has_conv)
    if strategy == "vmap" and not getattr(template, "supports_vmap", True):
        strategy = "loop"  # TorchScript: PyTorch's stateless API refuses jitted modules
    # CPU: keep a block's largest activation near the cache size (measured: 2.5x faster for
    # LeNet than all 2*D inputs at once) but not below 64 pixels, where per-call overhead
    # dominates deep models. GPU: large blocks.
    pixel_block = _pixel_block(prof.largest, d, device.type)
    per_net = 4 * prof.parameters * 2 + 4 * d * 2
    if strategy == "vmap":
        if spec.method == "finite_difference":
            per_net += 4 * 2 * pixel_block * prof.largest * 4
        else:
            per_net += 4 * prof.total * 3
        # a fixed budget per device type, so that the group (and the bits) never depend on
        # what else is using the memory; lowered only on a device that has less
        fixed_budget = (1 << 30) if device.type == "cpu" else (8 << 30)
        budget = min(fixed_budget, memory_budget or fixed_budget,
                     available_memory(device) // 2)
        cap = 1024
    else:
        # chunks only batch the sampling and keep progress reports frequent; on the CPU a few
        # hundred MB is plenty (fresh pages cost more than the random numbers)
        default = (1 << 28) if device.type == "cpu" else available_memory(device) // 4
        budget = min(memory_budget or default, available_memory(device) // 4)
        cap = 64
    size = chunk_size or max(1, min(cap, budget // max(per_net, 1)))
    init = "builder" if str(spec.architecture).startswith(TORCHVISION_PREFIX) else "plan"
    # channels_last convolutions: 1.4x for ResNet-18 finite differences in a loop on an H100
    # (BENCHMARKS.md); no gain measured on the CPU, not measured with vmap.
    channels_last = (device.type == "cuda" and has_conv and strategy == "loop"
                     and spec.method == "finite_difference")
    return ExecutionPlan(device, int(size), int(pixel_block), strategy, init, channels_last,
                         fit_threads(), prof)
