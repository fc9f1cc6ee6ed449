"""The operators a torchvision classifier calls, scripted and exported: what the allow-list
(`operators`) is checked against, on a sample of classifiers by
tests/nadcore/uploaded/test_untrusted.py and on all of them by
scripts/check_operator_allowlist.py."""

from __future__ import annotations

import warnings

import torch

from .untrusted import program_operators, scripted_operators


def classifier_operators(name: str) -> tuple[set[str], set[str]]:
    """(scripted operators, exported operators) of torchvision's classifier `name`, built with
    random weights and 10 classes, at 224x224 for the transformers and 96x96 otherwise."""
    import torchvision

    shape = (3, 224, 224) if name.startswith(("vit", "maxvit", "swin")) else (3, 96, 96)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
        scripted = scripted_operators(torch.jit.script(model))
        x = torch.randn(2, *shape)
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    return scripted, program_operators(program)
