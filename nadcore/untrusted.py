"""Loading a user's archive as a plain network, or refusing it, without running its code.

Layer one of the two that keep an uploaded model from doing more than compute (layer two is the
worker's sandbox, `worker/sandbox.py`). Each step refuses before the next one runs:

1. The zip directory: entry count and declared uncompressed size bounded (zip bombs).
2. The archive's own metadata, read as JSON or text, never unpickled:
   - torch.export (`.pt2`): every weight and constant stored as raw bytes (an entry marked
     `use_pickle`, a custom (torchbind) or opaque object, a legacy pickled weights file, an
     AOTInductor library or an ExecuTorch program is refused); the graph's node targets on the
     operator allow-list (`nadcore.operators`); every symbolic-size expression (which torch
     parses with sympy's `sympify`, an `eval`) of the plain form torch writes
     (`Symbol('s0', positive=True, integer=True)`, arithmetic, Max/Min/FloorDiv...). Sample
     inputs (pickled by torch) are never read, and the program's `guards_code` (Python source
     that `ExportedProgram.module()` would `exec`) is dropped.
   - TorchScript: no `__setstate__` (which `torch.jit.load` runs while loading) and no custom
     class anywhere in the code or the pickles.
3. The loaded graphs, walked node by node (a TorchScript module's every method, inlined, with
   their blocks; an exported program's graph and subgraphs): every operator must be on the
   allow-list; the refusal names the first one that is not.

`load_untrusted` does all three and returns the module; `archive_operators` lists what a loaded
module calls (for tests and for the validation report).
"""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .operators import is_allowed

MAX_ENTRIES = 20_000
DEFAULT_MAX_UNCOMPRESSED = 4 << 30


class RefusedArchive(ValueError):
    """The archive is not a plain network; the message says what was found (and where)."""


# -- 1. the zip directory -----------------------------------------------------------------
def _open_zip(data: bytes, max_uncompressed: int) -> zipfile.ZipFile:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise RefusedArchive(f"file: a damaged zip archive ({exc})") from None
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise RefusedArchive(f"file: {len(infos)} entries in the archive; at most "
                             f"{MAX_ENTRIES} are accepted")
    total = sum(i.file_size for i in infos)
    if total > max_uncompressed:
        raise RefusedArchive(f"file: the archive unpacks to {total:,} bytes; at most "
                             f"{max_uncompressed:,} are accepted")
    return z


def _members(z: zipfile.ZipFile) -> dict[str, str]:
    """Names without the archive's root folder -> full names."""
    return {n.split("/", 1)[1]: n for n in z.namelist() if "/" in n}


# -- 2a. torch.export metadata --------------------------------------------------------------
_PT2_FORBIDDEN_DIRS = ("data/aotinductor/", "executorch/", "mtia/", "xl_model_weights/")
_TARGET = re.compile(r"^torch\.ops\.(\w+)\.(\w+)(?:\.(\w+))?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# what torch writes in `expr_str`: sympy constructors of symbols and integer arithmetic
_EXPR_TOKEN = re.compile(r"\s+|'[a-z]+[0-9]+'|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?"
                         r"|\*\*|//|[-+*/%(),<>=!]=?")
_EXPR_WORD_LIST = """Symbol Integer Rational Float positive integer nonnegative real
finite True False Max Min Abs Eq Ne Lt Le Gt Ge And Or Not oo int_oo floor ceiling Mod
FloorDiv CeilDiv CleanDiv ModularIndexing Where PythonMod CeilToInt FloorToInt PowByNatural
FloatPow FloatTrueDiv IntTrueDiv TruncToFloat TruncToInt RoundToInt RoundDecimal ToFloat
Identity"""
_EXPR_WORDS = frozenset(_EXPR_WORD_LIST.split())
_EXPR_SYMBOL = re.compile(r"^[a-z]+[0-9]+$")


def _export_operator(target: str) -> str:
    """'torch.ops.aten.conv2d.default' -> 'aten::conv2d'; Python callables stay as written."""
    m = _TARGET.match(target)
    return f"{m.group(1)}::{m.group(2)}" if m else target


def _check_expression(expr: str) -> None:
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            raise RefusedArchive(f"file: a symbolic size expression holds {expr[pos:pos+1]!r}"
                                 " at position " + str(pos) + "; only plain size arithmetic "
                                 "is accepted")
        token = m.group(0)
        if (token[0].isalpha() or token[0] == "_") and token not in _EXPR_WORDS \
                and not _EXPR_SYMBOL.match(token):
            raise RefusedArchive(f"file: a symbolic size expression uses {token[:40]!r}; only "
                                 "plain size arithmetic is accepted")
        pos = m.end()


def _walk_json(value: object) -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk_json(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_json(v)


def _check_payload_config(z: zipfile.ZipFile, members: dict[str, str], name: str) -> None:
    if name not in members:
        raise RefusedArchive(f"file: the torch.export archive has no {name}")
    try:
        config = json.loads(z.read(members[name]))["config"]
    except (ValueError, KeyError, TypeError):
        raise RefusedArchive(f"file: {name} is not the JSON torch.export writes") from None
    for fqn, meta in config.items():
        path = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or meta.get("tensor_meta") is None or \
                path.startswith(("custom_obj_", "opaque_obj_")):
            raise RefusedArchive(
                f"file: {str(fqn)[:80]!r} is stored as a pickled or custom object; only "
                "tensors stored as raw bytes are accepted (export a plain nn.Module)")


def check_export_metadata(z: zipfile.ZipFile) -> None:
    """Refuses a .pt2 whose metadata asks for unpickling, native code or eval (above)."""
    members = _members(z)
    for name in members:
        if name.startswith(_PT2_FORBIDDEN_DIRS) or name in ("data/weights/model.pt",
                                                            "data/constants/model.pt"):
            raise RefusedArchive(f"file: the archive holds {name[:80]!r} (compiled code or "
                                 "pickled weights); export with torch.export.save only")
    models = [n for n in members if n.startswith("models/") and n.endswith(".json")]
    if models != ["models/model.json"]:
        raise RefusedArchive("file: a torch.export archive must hold exactly one program, "
                             "models/model.json")
    _check_payload_config(z, members, "data/weights/model_weights_config.json")
    _check_payload_config(z, members, "data/constants/model_constants_config.json")
    try:
        program = json.loads(z.read(members["models/model.json"]))
    except ValueError:
        raise RefusedArchive("file: models/model.json is not JSON") from None
    graphs = [v for k, v in _walk_json(program) if k == "graph" and isinstance(v, dict)]
    for graph in graphs:
        for node in graph.get("nodes", []):
            operator = _export_operator(str(node.get("target", "")))
            if not is_allowed(operator):
                raise RefusedArchive(f"file: the network calls {operator[:100]!r}, which is "
                                     "not an operator networks are made of")
    for key, value in _walk_json(program):
        if key == "expr_str":
            _check_expression(str(value))
        elif key in ("name", "target") and isinstance(value, str) and value and \
                not _NAME.match(value) and not value.startswith("torch.ops."):
            raise RefusedArchive(f"file: a node or attribute is named {value[:60]!r}")
    for symbol in program.get("range_constraints", {}):
        if not _EXPR_SYMBOL.match(str(symbol)):
            raise RefusedArchive(f"file: a size symbol is named {str(symbol)[:40]!r}")


def _load_export(data: bytes) -> torch.export.ExportedProgram:
    """torch.export.load's steps for the one program, with the sample inputs (a pickle) never
    read and the guards code (Python source) dropped. Only after check_export_metadata."""
    from torch._export.serde.schema import ExportedProgram as SerializedProgram
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
    from torch.export.pt2_archive._package import (
        PT2ArchiveReader,
        _load_constants,
        _load_state_dict,
    )

    with PT2ArchiveReader(io.BytesIO(data)) as reader:
        serialized = _bytes_to_dataclass(SerializedProgram, reader.read_bytes("models/model.json"))
        state_dict = _load_state_dict(reader, "model")
        constants = _load_constants(reader, "model")
    serialized.guards_code = []
    return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)


# -- 2b. TorchScript metadata ---------------------------------------------------------------
def check_torchscript_metadata(z: zipfile.ZipFile) -> None:
    """Refuses a TorchScript archive that would run code while loading (`__setstate__`) or
    that holds custom classes."""
    for full in z.namelist():
        name = full.split("/", 1)[-1]
        if name.startswith("code/") and name.endswith(".py"):
            text = z.read(full).decode("utf-8", "replace")
            if re.search(r"def\s+__setstate__", text):
                raise RefusedArchive("file: the TorchScript code defines __setstate__, which "
                                     "runs while loading; script a plain nn.Module")
            if "torch.classes" in text:
                raise RefusedArchive("file: the TorchScript code uses a custom class "
                                     "(torch.classes); script a plain nn.Module")
        elif name.endswith(".pkl") and b"torch.classes" in z.read(full):
            raise RefusedArchive(f"file: {name[:60]!r} holds a custom class (torch.classes); "
                                 "script a plain nn.Module")


# -- 3. the loaded graphs -------------------------------------------------------------------
def _torchscript_operators(module: torch.jit.ScriptModule) -> set[str]:
    found: set[str] = set()

    def walk(block: torch._C.Block | torch._C.Graph) -> None:
        for node in block.nodes():
            found.add(node.kind())
            for sub in node.blocks():
                walk(sub)

    for _, sub in module.named_modules():
        for method in sub._c._method_names():
            graph = sub._c._get_method(method).graph.copy()
            torch._C._jit_pass_inline(graph)
            walk(graph)
    return found


def _callable_name(target: object) -> str:
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return target._schema.name if hasattr(target, "_schema") else str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', target)}"


def _fx_operators(root: nn.Module) -> set[str]:
    found: set[str] = set()
    for sub in root.modules():
        if not isinstance(sub, torch.fx.GraphModule):
            continue
        for node in sub.graph.nodes:
            if node.op == "call_function":
                found.add(_callable_name(node.target))
            elif node.op in ("call_method", "call_module"):
                found.add(f"{node.op}:{node.target}")
    return found


def program_operators(program: torch.export.ExportedProgram) -> set[str]:
    """Every operator an exported program calls (its graph and its subgraphs)."""
    return _fx_operators(program.graph_module)


def scripted_operators(module: torch.jit.ScriptModule) -> set[str]:
    """Every operator of every method of a scripted module, inlined, with nested blocks."""
    return _torchscript_operators(module)


def refuse_unlisted(operators: set[str]) -> None:
    bad = sorted(op for op in operators if not is_allowed(op))
    if bad:
        listed = ", ".join(repr(op[:80]) for op in bad[:5])
        raise RefusedArchive(f"file: the network calls {listed}, not operators networks are "
                             "made of (see nadcore/operators.py)")


@dataclass
class Untrusted:
    """A module loaded from an archive that passed every check."""

    module: nn.Module
    program: torch.export.ExportedProgram | None  # the exported program (export format)


def load_untrusted(data: bytes, fmt: str, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
                   checks: bool = True) -> Untrusted:
    """The archive's module after steps 1-3 (RefusedArchive names what failed). `checks=False`
    loads the way torch itself does, with no check at all: only the service's tests of the
    sandbox use it (NADS_UNSAFE_SKIP_ARCHIVE_CHECKS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        if not checks:
            if fmt == "torchscript":
                return Untrusted(torch.jit.load(io.BytesIO(data), map_location="cpu"), None)
            program = torch.export.load(io.BytesIO(data))
            return Untrusted(program.module(), program)
        z = _open_zip(data, max_uncompressed)
        if fmt == "torchscript":
            check_torchscript_metadata(z)
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
            refuse_unlisted(scripted_operators(module))
            return Untrusted(module, None)
        check_export_metadata(z)
        program = _load_export(data)
        refuse_unlisted(program_operators(program))
        return Untrusted(program.module(), program)
