"""Reference implementations for the tests: one network at a time, no batching."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def one_network(factory, state: dict[str, torch.Tensor], j: int) -> nn.Module:
    """Network j of a stacked state dict, loaded into a plain module in eval mode."""
    model = factory().eval()
    model.load_state_dict({k: v[j] for k, v in state.items()})
    return model


@torch.no_grad()
def naive_finite_differences(
    model: nn.Module, x0: torch.Tensor, scale: float, pixels: range, output: int = 0
) -> np.ndarray:
    """The paper's loop body: all perturbed inputs of one network through model(x), directly."""
    d = x0.numel()
    eye = torch.eye(d)[list(pixels)].view(len(pixels), *x0.shape)
    values = model(torch.cat([x0 + scale * eye, x0 - scale * eye]))[:, output]
    p = len(pixels)
    return ((values[:p] - values[p:]) / (2 * scale)).numpy()


def autograd_gradient(model: nn.Module, x0: torch.Tensor, output: int = 0) -> np.ndarray:
    x = x0.clone().unsqueeze(0).requires_grad_(True)
    model(x)[0, output].backward()
    return x.grad[0].reshape(-1).numpy()


def save_archive(module: nn.Module, path, shape: tuple[int, int, int] = (1, 6, 6)):  # noqa: ANN001, ANN201
    """`module` as .pt (TorchScript) or .pt2 (torch.export, dynamic batch) at `path`, in the
    module's current mode (as a user would save it); returns `path`."""
    import warnings

    if str(path).endswith(".pt2"):
        program = torch.export.export(module, (torch.randn((2, *shape)),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(module), str(path))
    return path
