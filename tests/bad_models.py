"""Models that validation must reject, shared by the engine and the service tests."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn


def scripted_bytes(module: nn.Module) -> bytes:
    """A TorchScript archive of `module` (torch.jit's deprecation warnings silenced)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module.eval()), buf)
    return buf.getvalue()


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("deliberately broken")


class WrongShape(nn.Module):
    """Maps a (B, 1, 2, 2) batch to (B, 2, 2): neither (B,) nor (B, m)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)).view(-1, 2, 2)


class NaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


class Forever(nn.Module):
    """Runs far past any validation time limit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(1_000_000_000_000):
            x = x * 1.0000001
        return x.flatten(1)
