"""Loading a user's archive as a plain network, or refusing it, without running its code.

Layer one of the two that keep an uploaded model from doing more than compute (layer two is the
worker's sandbox, `worker/sandbox.py`). Parse once, load what was parsed: torch never reads the
uploaded bytes. Each step refuses before the next one runs:

1. The zip, read once by `nadcore.uploaded.strict_zip` (end records first, so an archive declaring
   500,000 entries is refused in O(1) memory; no duplicate or case-folded duplicate names, one
   root folder, only the names its format writes (`nadcore.uploaded.archive_format`), no gaps,
   overlaps, symlinks, encryption or disagreeing headers; every member inflated within its
   declared size and CRC-checked).
2. The members' contents, on tokens and parse trees (`nadcore.uploaded.code_checks`), never
unpickled:
   - torch.export (`.pt2`): the JSON members parsed with duplicate keys refused; every weight
     and constant stored as raw bytes in a `weight_<n>` / `tensor_<n>` member that exists (an
     entry marked `use_pickle`, a custom or opaque object is refused); the graph's node targets
     on the operator allow-list (`nadcore.uploaded.operators`); every symbolic-size expression
     (which torch hands to sympy's `sympify`, an `eval`) a small tree of size arithmetic. Sample
     inputs (pickled by torch) are dropped, and so is the program's `guards_code` (Python
     source that `ExportedProgram.module()` would `exec`).
   - TorchScript: no `__setstate__` (which `torch.jit.load` runs while loading) and no custom
     class, judged on Python's tokens of every code file; every pickle's globals on a short
     list.
3. A canonical archive is written from the checked members (the JSON re-serialized from what
   was parsed, sample inputs left out): only it reaches `torch.jit.load` / the export loader.
4. The loaded graphs, walked node by node (a TorchScript module's every method and every
   forward and pre-forward hook of every submodule, inlined, with their blocks; an exported
   program's graph and subgraphs): every operator must be on the allow-list; the refusal
   names the first one that is not. A Python hook on a loaded module that is not torch's own
   is refused.

`load_untrusted` does all four and returns the module; `program_operators` /
`scripted_operators` list what a loaded module calls (for tests and for the validation report).
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from nadcore.uploaded.archive_format import NAMES, ArchiveFormatError, read_layout
from nadcore.uploaded.code_checks import (
    SYMBOL,
    CodeRefused,
    check_pickle,
    check_size_expression,
    check_torchscript_code,
)
from nadcore.uploaded.operators import is_allowed
from nadcore.uploaded.strict_zip import Limits, ZipError, read_member, write_canonical

DEFAULT_MAX_UNCOMPRESSED = Limits().max_uncompressed
CANONICAL_ROOT = "archive"


class RefusedArchive(ValueError):
    """The archive is not a plain network; the message says what was found (and where)."""


# -- 1. the zip, read once ------------------------------------------------------------------
def read_archive(data: bytes, fmt: str, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
                 ) -> dict[str, bytes]:
    """Member name (below the root folder) -> bytes, in file order, of an archive of format
    `fmt` that `nadcore.uploaded.strict_zip` and the format's layout accept."""
    try:
        found, _, entries = read_layout(data, Limits(max_uncompressed=max_uncompressed))
        if found != fmt:
            raise RefusedArchive(f"file: {NAMES[found]}, not {NAMES[fmt]}")
        return {entry.name.split("/", 1)[1]: read_member(data, entry) for entry in entries}
    except (ArchiveFormatError, ZipError) as exc:
        raise RefusedArchive(str(exc)) from None


# -- 2a. torch.export metadata --------------------------------------------------------------
_TARGET = re.compile(r"torch\.ops\.(\w+)\.(\w+)(?:\.(\w+))?", re.ASCII)
# Names torch writes into the Python source of the module it builds from a program (FX's
# codegen), unescaped: a node's or input's name as a Python name (`def forward(self, <arg>)`),
# a parameter's or buffer's dotted path between double quotes (`getattr(self.conv1,
# "<name>")`), a keyword of the input spec between single quotes. Beyond these characters a
# name is code. A path's parts may start with a digit (nn.Sequential's `0.weight`) or hold a
# dash (nn.ModuleDict's keys).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_PATH = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_KEYS = frozenset({"name", "target", "user_input_name", "user_output_name"})
_PATH_KEYS = frozenset({"fqn", "parameter_name", "buffer_name", "tensor_constant_name",
                        "custom_obj_name"})
_PAYLOADS = {"data/weights/model_weights_config.json": ("data/weights/", "weight_"),
             "data/constants/model_constants_config.json": ("data/constants/", "tensor_")}


def _export_operator(target: str) -> str:
    """'torch.ops.aten.conv2d.default' -> 'aten::conv2d'; Python callables stay as written."""
    m = _TARGET.fullmatch(target)
    return f"{m.group(1)}::{m.group(2)}" if m else target


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise RefusedArchive(f"file: a JSON object holds the key {twice[:60]!r} twice")
    return dict(pairs)


def _refuse_constant(name: str) -> None:
    raise RefusedArchive(f"file: the JSON holds {name}, which is not JSON")


def parse_json(name: str, body: bytes) -> object:
    """A JSON member, with duplicate keys and NaN/Infinity refused (readers disagree on them)."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys,
                          parse_constant=_refuse_constant)
    except RefusedArchive:
        raise
    except (ValueError, RecursionError):
        raise RefusedArchive(f"file: {name} is not the JSON torch.export writes") from None


def _walk_json(value: object) -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk_json(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_json(v)


def _check_payload_config(members: dict[str, bytes], name: str) -> dict:
    folder, prefix = _PAYLOADS[name]
    document = parse_json(name, members[name])
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise RefusedArchive(f"file: {name} is not the JSON torch.export writes")
    for fqn, meta in config.items():
        path = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path, str) or meta.get("use_pickle") is not False or \
                meta.get("tensor_meta") is None or not path.startswith(prefix):
            raise RefusedArchive(
                f"file: {str(fqn)[:80]!r} is stored as a pickled or custom object; only "
                "tensors stored as raw bytes are accepted (export a plain nn.Module)")
        if folder + path not in members:
            raise RefusedArchive(f"file: {str(fqn)[:80]!r} is stored in {path[:40]!r}, which "
                                 "the archive does not hold")
        if _elements(meta["tensor_meta"]) > len(members[folder + path]):
            # torch allocates the declared size for an empty member: no more elements than
            # the member has bytes
            raise RefusedArchive(f"file: {str(fqn)[:80]!r} declares more elements than "
                                 f"{path[:40]!r} holds bytes")
    return document


def _elements(tensor_meta: object) -> int:
    sizes = tensor_meta.get("sizes") if isinstance(tensor_meta, dict) else None
    if not isinstance(sizes, list) or not all(
            isinstance(size, dict) and list(size) == ["as_int"] and
            type(size["as_int"]) is int and size["as_int"] >= 0 for size in sizes):
        raise RefusedArchive("file: a weight or constant has sizes other than integers")
    return math.prod(size["as_int"] for size in sizes)


def check_export_members(members: dict[str, bytes]) -> dict[str, bytes]:
    """The members a checked .pt2 loads from: its JSON re-serialized from what was parsed,
    its weights and constants; RefusedArchive for what asks for unpickling, native code or
    eval (above)."""
    documents = {name: _check_payload_config(members, name) for name in _PAYLOADS}
    program = parse_json("models/model.json", members["models/model.json"])
    if not isinstance(program, dict):
        raise RefusedArchive("file: models/model.json is not the JSON torch.export writes")
    try:
        _check_program(program)
    except RecursionError:
        raise RefusedArchive("file: models/model.json nests deeper than a program") from None
    program["guards_code"] = []
    documents["models/model.json"] = program
    kept = {name: body for name, body in members.items()
            if not name.startswith("data/sample_inputs/")}
    kept.update((name, json.dumps(doc).encode()) for name, doc in documents.items())
    return kept


def _check_operator(target: str) -> None:
    operator = _export_operator(target)
    if not is_allowed(operator):
        raise RefusedArchive(f"file: the network calls {operator[:100]!r}, which is not an "
                             "operator networks are made of")


def _check_program(program: dict) -> None:
    graphs = [v for k, v in _walk_json(program) if k == "graph" and isinstance(v, dict)]
    for graph in graphs:
        nodes = graph.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise RefusedArchive("file: a graph's nodes are not the JSON torch.export writes")
        for node in nodes:
            _check_operator(str(node.get("target", "")))
    try:
        for key, value in _walk_json(program):
            if key == "expr_str":
                check_size_expression(str(value))
            elif key == "as_operator":  # an operator passed as an argument (to cond, map...)
                _check_operator(str(value))
            elif isinstance(value, str) and value and (
                    key in _NAME_KEYS and not _NAME.fullmatch(value) or
                    key in _PATH_KEYS and not _PATH.fullmatch(value)):
                raise RefusedArchive(f"file: a node or attribute is named {value[:60]!r}")
            elif key == "forward_arg_names":
                _check_identifiers(value, "an argument")
            elif key in ("in_spec", "out_spec"):
                _check_spec_keys(value)
    except CodeRefused as exc:
        raise RefusedArchive(str(exc)) from None
    for symbol in program.get("range_constraints", {}):
        if not SYMBOL.fullmatch(str(symbol)):
            raise RefusedArchive(f"file: a size symbol is named {str(symbol)[:40]!r}")


def _check_identifiers(values: object, what: str) -> None:
    if not isinstance(values, list) or not all(
            isinstance(v, str) and _IDENTIFIER.fullmatch(v) for v in values):
        raise RefusedArchive(f"file: {what} is named {str(values)[:60]!r}; only identifiers "
                             "are accepted")


def _check_spec_keys(spec: object) -> None:
    """The keys of every dict in a serialized input or output spec are identifiers."""
    document = parse_json("an input or output spec", str(spec).encode())
    for key, value in _walk_json(document):
        if key == "context" and isinstance(value, str):
            context = parse_json("an input or output spec", value.encode())
            if context is not None:
                _check_identifiers(context if isinstance(context, list) else [context],
                                   "a keyword argument")


def _load_export(canonical: bytes) -> torch.export.ExportedProgram:
    """torch.export.load's steps for the one program of a canonical archive (no sample inputs,
    no guards code)."""
    from torch._export.serde.schema import ExportedProgram as SerializedProgram
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
    from torch.export.pt2_archive._package import (
        PT2ArchiveReader,
        _load_constants,
        _load_state_dict,
    )

    with PT2ArchiveReader(io.BytesIO(canonical)) as reader:
        serialized = _bytes_to_dataclass(SerializedProgram, reader.read_bytes("models/model.json"))
        state_dict = _load_state_dict(reader, "model")
        constants = _load_constants(reader, "model")
    return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)


# -- 2b. TorchScript members ------------------------------------------------------------------
def check_torchscript_members(members: dict[str, bytes]) -> None:
    """Refuses TorchScript that would run code while loading (`__setstate__`, custom classes),
    on the tokens of every code file and the opcodes of every pickle."""
    try:
        for name, body in members.items():
            if name.startswith("code/") and name.endswith(".py"):
                check_torchscript_code(name, body)
            elif name.endswith((".pkl", ".debug_pkl")):
                check_pickle(name, body)
    except CodeRefused as exc:
        raise RefusedArchive(str(exc)) from None


def canonical_archive(members: dict[str, bytes]) -> bytes:
    """The archive torch reads: `members` under one fixed root, written afresh."""
    return write_canonical({f"{CANONICAL_ROOT}/{name}": body for name, body in members.items()})


# -- 3. the loaded graphs and hooks ---------------------------------------------------------
def _torchscript_operators(module: torch.jit.ScriptModule) -> set[str]:
    found: set[str] = set()

    def walk(block: torch._C.Block | torch._C.Graph) -> None:
        for node in block.nodes():
            found.add(node.kind())
            for sub in node.blocks():
                walk(sub)

    def walk_graph(graph: torch._C.Graph) -> None:
        graph = graph.copy()
        torch._C._jit_pass_inline(graph)
        walk(graph)

    for _, sub in module.named_modules():
        for method in sub._c._method_names():
            walk_graph(sub._c._get_method(method).graph)
        # hooks are functions of the module's type, not methods: torch runs a module's own
        # hooks around its forward, also the top module's, which no method's graph calls
        for hook in (*sub._c._get_forward_pre_hooks(), *sub._c._get_forward_hooks()):
            walk_graph(hook.graph)
    return found


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def refuse_python_hooks(root: nn.Module) -> None:
    """Refuses a module (or submodule) carrying a Python hook that is not torch's own (torch's
    export loader adds its input checks as hooks): an archive holds no Python, so any other
    hook would be code the checks did not walk."""
    for path, sub in root.named_modules():
        for attribute in _HOOK_DICTS:
            for hook in (getattr(sub, attribute, None) or {}).values():
                owner = str(getattr(hook, "__module__", None))
                if owner != "torch" and not owner.startswith("torch."):
                    raise RefusedArchive(
                        f"file: the module {path or '(top)'!r} carries a hook "
                        f"({attribute.strip('_').replace('_', ' ')}) from {owner[:60]!r}; "
                        "hooks are not accepted")


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
            # an operator or function passed as an argument is called by the one it is
            # passed to (cond calls its branches, map its body): checked like a target
            for arg in torch.utils._pytree.tree_leaves((node.args, node.kwargs)):
                if callable(arg) and not isinstance(arg, (nn.Module, torch.fx.Node)):
                    found.add(_callable_name(arg))
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
                             "made of (see nadcore/uploaded/operators.py)")


@dataclass
class Untrusted:
    """A module loaded from an archive that passed every check."""

    module: nn.Module
    program: torch.export.ExportedProgram | None  # the exported program (export format)


def load_untrusted(data: bytes, fmt: str, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
                   checks: bool = True) -> Untrusted:
    """The archive's module after steps 1-4 (RefusedArchive names what failed). `checks=False`
    loads the uploaded bytes the way torch itself does, with no check at all: only the
    service's tests of the sandbox use it (NADS_UNSAFE_SKIP_ARCHIVE_CHECKS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        if not checks:
            if fmt == "torchscript":
                return Untrusted(torch.jit.load(io.BytesIO(data), map_location="cpu"), None)
            program = torch.export.load(io.BytesIO(data))
            return Untrusted(program.module(), program)
        members = read_archive(data, fmt, max_uncompressed)
        if fmt == "torchscript":
            check_torchscript_members(members)
            module = torch.jit.load(io.BytesIO(canonical_archive(members)), map_location="cpu")
            refuse_unlisted(scripted_operators(module))
            refuse_python_hooks(module)
            return Untrusted(module, None)
        program = _load_export(canonical_archive(check_export_members(members)))
        refuse_unlisted(program_operators(program))
        module = program.module()
        refuse_python_hooks(module)
        return Untrusted(module, program)
