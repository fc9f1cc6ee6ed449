"""Uploads an attacker would try, shared by the layer-one tests
(tests/nadcore/test_untrusted.py) and the sandbox tests through the service
(tests/service/test_sandbox.py).

TorchScript needs the source of the classes it scripts, hence this module. Every model takes
1 x 16 x 16 inputs.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import torch
from torch import nn

from nads.export_command import export_architecture

SHAPE = (1, 16, 16)
JOB_INPUTS = 50.0  # finite differences with the paper's scale (100) exceed this; N(0, I) not


class ReadsFile(nn.Module):
    """Reads a file with aten::from_file and raises its bytes (exfiltration through the
    rejection reason)."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__()
        self.path = path
        self.size = size
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, size=self.size, dtype=torch.uint8)
        values: list[int] = data.tolist()
        raise RuntimeError("stolen " + str(values))


class WritesFile(nn.Module):
    """Writes 'A's into a file with aten::from_file(shared=True)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, shared=True, size=16, dtype=torch.uint8)
        t.fill_(65)
        return self.fc(x.flatten(1)) + t.float().sum() * 0.0


class SpinsAtJobInputs(nn.Module):
    """A plain network on N(0, I) inputs; loops (practically) forever on a job's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if bool(x.abs().max() > 50.0):
            for _ in range(1_000_000_000_000):
                y = y * 1.0
        return self.fc(y.flatten(1))


class AllocatesAtJobInputs(nn.Module):
    """A plain network on N(0, I) inputs; allocates 12 GB on a job's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        if bool(x.abs().max() > 50.0):
            out = out + torch.ones(3_000_000_000).sum()
        return out


class NaNAtJobInputs(nn.Module):
    """A plain network on N(0, I) inputs; NaN on a job's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        if bool(x.abs().max() > 50.0):
            out = out * float("nan")
        return out


class SetsState(nn.Module):
    """Runs code while torch.jit.load reads it (__setstate__)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 1)

    @torch.jit.export
    def __getstate__(self) -> tuple[int, bool]:
        return (1, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[int, bool]) -> None:
        self.training = state[1]
        torch.from_file("/tmp/setstate-ran", shared=True, size=1, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class _Exec:
    """Unpickling it executes `code` (what a pickled weight in a .pt2 can do)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return (exec, (self.code,))


def lenet_pt2(folder) -> bytes:  # noqa: ANN001
    return export_architecture("lenet", SHAPE, folder / "lenet.pt2").read_bytes()


def rewrite_zip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """`data` (a zip) with the members whose name ends with a key replaced by its value."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    body = new
            dst.writestr(info.filename, body)
    return out.getvalue()


def _member(data: bytes, suffix: str) -> bytes:
    z = zipfile.ZipFile(io.BytesIO(data))
    return z.read(next(n for n in z.namelist() if n.endswith(suffix)))


def pickled_weight_pt2(base: bytes, code: str) -> bytes:
    """A .pt2 whose first weight is marked `use_pickle` and holds a pickle that runs `code`."""
    config = json.loads(_member(base, "data/weights/model_weights_config.json"))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    path_name = config["config"][first]["path_name"]
    return rewrite_zip(base, {"data/weights/model_weights_config.json":
                              json.dumps(config).encode(),
                              f"data/weights/{path_name}": pickle.dumps(_Exec(code))})


def pickled_sample_inputs_pt2(base: bytes, code: str) -> bytes:
    """A .pt2 whose sample inputs (which torch.export.load unpickles) run `code`."""
    return rewrite_zip(base, {"data/sample_inputs/model.pt": pickle.dumps(_Exec(code))})


def edited_program_pt2(base: bytes, edit) -> bytes:  # noqa: ANN001
    """A .pt2 whose models/model.json is `edit(program_dict)`."""
    program = json.loads(_member(base, "models/model.json"))
    edit(program)
    return rewrite_zip(base, {"models/model.json": json.dumps(program).encode()})
