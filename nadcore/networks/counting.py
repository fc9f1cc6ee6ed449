"""What one forward pass of a network costs, counted by torch on the meta device (shapes only:
no memory, no arithmetic), for architectures `nadcore.nads.cost` cannot walk without torch:
torchvision's builders. The worker counts each builder, input shape and output count once and
the service keeps the count (worker/architecture_cost.py), so that such jobs are estimated,
and refused past the limits, like the built-ins.

Counted as `nadcore.nads.cost` counts: multiply-accumulates (torch's FLOP counter over the forward:
convolutions, matrix products and attention, halved), parameters, and the floats the
convolutions and linear layers output per input (`activations`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nadcore.networks.factory import model_factory
from nadcore.networks.zoo import ArchitectureError
from nadcore.specs.layer_counts import LayerCount


def count_layers(architecture: str, input_shape: tuple[int, int, int],
                 num_outputs: int) -> LayerCount:
    """MACs, parameters and activations of one input through a fresh `architecture` built for
    `num_outputs` outputs; raises ArchitectureError when it cannot take `input_shape`."""
    factory = model_factory(architecture)
    activations = 0

    def add_output(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal activations
        activations += output.numel()

    with torch.device("meta"):
        model = factory(tuple(input_shape), num_outputs).eval()
        x = torch.empty(1, *input_shape)
    hooks = [m.register_forward_hook(add_output) for m in model.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ArchitectureError(f"{architecture} cannot take an input of shape "
                                f"{'x'.join(map(str, input_shape))}: {exc}") from None
    finally:
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return LayerCount(macs=counter.get_total_flops() // 2, params=params,
                      activations=activations)
