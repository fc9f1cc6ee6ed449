"""Networks of any architecture a spec names: a built-in (`nadcore.networks.zoo`), a torchvision
builder ('torchvision:<name>', `nadcore.networks.zoo`) or an uploaded archive
(`nadcore.uploaded.network`). This module dispatches between them and sits above all three, so
imports between them go one way: factory -> zoo, uploaded, init -> layers."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from nadcore.networks.init import NetworkSampler
from nadcore.networks.zoo import BUILTIN_CLASSES, ArchitectureError, torchvision_factory
from nadcore.specs.architecture import TORCHVISION_PREFIX, ArchitectureRef
from nadcore.uploaded.network import (
    UploadedArchitectureError,
    UploadedModel,
    check_outputs,
    uploaded_model,
)


def model_factory(
    architecture: str | ArchitectureRef,
) -> Callable[[tuple[int, int, int], int], nn.Module]:
    """A function (input_shape, num_outputs) -> freshly initialized module (an uploaded
    architecture: a fresh copy with its uploaded tensors; its outputs are its own)."""
    if isinstance(architecture, ArchitectureRef):
        return lambda _shape, _outputs: uploaded_model(architecture, torch.get_default_device())
    if architecture in BUILTIN_CLASSES:
        return BUILTIN_CLASSES[architecture]
    if architecture.startswith(TORCHVISION_PREFIX):
        return torchvision_factory(architecture[len(TORCHVISION_PREFIX):])
    raise ArchitectureError(
        f"unknown architecture {architecture!r}: expected one of "
        f"{', '.join(BUILTIN_CLASSES)} or '{TORCHVISION_PREFIX}<builder name>'"
    )


def build_model(
    architecture: str | ArchitectureRef,
    input_shape: tuple[int, int, int] = (1, 32, 32),
    num_outputs: int = 1,
    device: torch.device | str | None = None,
    at_least: bool = False,
) -> nn.Module:
    """Build one randomly initialized network in eval mode, checked against `input_shape`.

    Raises ArchitectureError when the architecture is unknown or cannot take the shape. An
    uploaded architecture (nadcore.uploaded.network) comes with its uploaded tensors and must have
    `num_outputs` outputs (at least that many with `at_least`).
    """
    if isinstance(architecture, ArchitectureRef):
        try:
            model = uploaded_model(architecture, "cpu")
            check_outputs(model, architecture, tuple(input_shape), num_outputs, not at_least)
        except UploadedArchitectureError as exc:
            raise ArchitectureError(str(exc)) from exc
        return model.to(device or "cpu")
    factory = model_factory(architecture)
    with torch.device(device or "cpu"):
        model = factory(tuple(input_shape), num_outputs)
    model.eval()
    check_input_shape(model, architecture, input_shape, num_outputs)
    return model


def check_input_shape(
    model: nn.Module, architecture: str, input_shape: tuple[int, int, int], num_outputs: int
) -> None:
    """Run the model on a meta tensor of the shape; raise ArchitectureError if it cannot."""
    meta = copy.deepcopy(model).to("meta")
    try:
        with torch.no_grad():
            out = meta(torch.empty((2, *input_shape), device="meta"))
    except Exception as exc:  # the model's own error says why; we name the shape
        raise ArchitectureError(
            f"{architecture} cannot take input shape {tuple(input_shape)}: {exc}"
        ) from exc
    if out.shape != (2, num_outputs):
        raise ArchitectureError(
            f"{architecture} maps input shape {tuple(input_shape)} to outputs of shape "
            f"{tuple(out.shape[1:])}, expected ({num_outputs},)"
        )


def seeded_uploaded_network(ref: ArchitectureRef, seed: int, input_shape: tuple[int, ...],
                          outputs: int) -> UploadedModel:
    """Network 0 of seed `seed` on the CPU, drawn by the init plan (poison training), after
    checking that it has exactly `outputs` outputs. Raises ArchitectureError otherwise."""
    model = build_model(ref, input_shape, outputs, "cpu")
    if ref.policy != "keep":
        sampler = NetworkSampler(lambda: model, model, seed, torch.device("cpu"))
        state = {k: v[0] for k, v in sampler.sample([0]).items()}
        with torch.no_grad():
            for name, slot in model.state_dict(keep_vars=True).items():
                slot.copy_(state[name])
    return model


__all__ = ["ArchitectureError", "build_model", "check_input_shape", "model_factory",
           "seeded_uploaded_network"]
