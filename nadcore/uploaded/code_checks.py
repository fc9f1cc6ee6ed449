"""Checks of the code-like members of an uploaded archive, on tokens and parse trees, never on
text patterns (torch-free; `nadcore.uploaded.untrusted` runs them on the members
`nadcore.uploaded.strict_zip`
read, before torch sees any of them).

- TorchScript code files (`code/**.py`), which `torch.jit.load` compiles: Python's own
  tokenizer reads them (TorchScript's lexer follows Python's: line continuations, strings and
  comments end where Python's do), so `def \\` + newline + `__setstate__` is the name
  `__setstate__` like any other spelling. Only printable ASCII, newlines and tabs are accepted,
  so that no character is a line break to one lexer and not to the other.
- Pickles (`data.pkl`, `constants.pkl`, `*.debug_pkl`), which torch's C++ unpickler reads:
  walked opcode by opcode (`pickletools.genops`, nothing executed); every global they name
  must be one of the few a scripted module's pickles use; extension-registry and stack-built
  globals are refused, and so are bytes after the STOP opcode.
- Symbolic size expressions of a torch.export program (`expr_str`, which torch hands to
  sympy's `sympify`, an `eval`): parsed with `ast` and accepted only as a small tree of size
  arithmetic over symbols `s<n>`, short integer and float literals and the functions torch
  writes, with powers only of a literal exponent up to 16 and never nested, so that no
  accepted expression is expensive to build (a tower of powers is a 60 s `sympify`).
"""

from __future__ import annotations

import ast
import io
import math
import pickletools
import re
import tokenize

_CODE_BYTES = re.compile(rb"[\x20-\x7e\n\t]*")
# Names whose presence alone means code that runs while loading, or a custom (C++) class.
_LOAD_TIME_NAMES = frozenset({"__setstate__"})


class CodeRefused(ValueError):
    """A code-like member that is refused; the message starts with `file:`."""


# -- TorchScript code ------------------------------------------------------------------------
def check_torchscript_code(name: str, body: bytes) -> None:
    """Refuses a TorchScript code file that defines or names `__setstate__` (which
    torch.jit.load runs while loading) or uses a custom class (`torch.classes`), judged on
    Python's tokens; and one Python's tokenizer cannot read whole."""
    if not _CODE_BYTES.fullmatch(body):
        raise CodeRefused(f"file: {name[:80]!r} holds bytes other than printable ASCII, "
                          "newlines and tabs")
    previous: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(body.decode("ascii")).readline):
            if token.type == tokenize.ERRORTOKEN:
                raise CodeRefused(f"file: {name[:80]!r} line {token.start[0]}: "
                                  f"{token.string[:20]!r} is not a Python token")
            # also inside strings and comments: should TorchScript's lexer end one where
            # Python's does not, what it hides is still seen
            for word in _LOAD_TIME_NAMES:
                if word in token.string:
                    raise CodeRefused(f"file: the TorchScript code ({name[:80]!r} line "
                                      f"{token.start[0]}) names {word}, which runs while "
                                      "loading; script a plain nn.Module")
            if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                              tokenize.INDENT, tokenize.DEDENT):
                continue
            previous = [*previous[-1:], token.string]
            if token.type == tokenize.NAME and token.string == "classes" and \
                    previous[0] == ".":
                raise CodeRefused(f"file: the TorchScript code ({name[:80]!r} line "
                                  f"{token.start[0]}) uses a custom class (torch.classes); "
                                  "script a plain nn.Module")
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise CodeRefused(f"file: {name[:80]!r} is not readable Python tokens "
                          f"({str(exc)[:80]})") from None


# -- pickles ----------------------------------------------------------------------------------
_STORAGES = {f"{kind}Storage" for kind in (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble")}
_GLOBALS = {
    "torch._utils": {"_rebuild_tensor_v2"},
    "torch": _STORAGES,
    "collections": {"OrderedDict"},
    "torch.jit._pickle": {"build_intlist", "build_tensorlist", "build_doublelist",
                          "build_boollist", "build_tensor_from_id", "restore_type_tag"},
}
_SCRIPTED_CLASS = re.compile(r"__torch__(?:\.[A-Za-z_][A-Za-z0-9_]*)* [A-Za-z_][A-Za-z0-9_]*")
_REFUSED_OPCODES = {"STACK_GLOBAL", "INST", "OBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4",
                    "PERSID"}


def _allowed_global(arg: str) -> bool:
    module, _, attr = arg.partition(" ")
    if _SCRIPTED_CLASS.fullmatch(arg):  # a class of the archive's own code, not a custom one
        return "classes" not in module.split(".")
    return attr in _GLOBALS.get(module, ())


def check_pickle(name: str, body: bytes) -> None:
    """Refuses a pickle naming a global outside the few scripted modules use (custom classes,
    whose C++ `__setstate__` runs while loading, included), or that pickletools cannot walk."""
    end = -1
    try:
        for opcode, arg, pos in pickletools.genops(body):
            if opcode.name in _REFUSED_OPCODES:
                raise CodeRefused(f"file: {name[:80]!r} uses the pickle opcode {opcode.name}")
            if opcode.name == "GLOBAL" and not _allowed_global(str(arg)):
                raise CodeRefused(f"file: {name[:80]!r} names {str(arg)[:80]!r}, not a class "
                                  "or function a scripted module's pickles use (custom "
                                  "classes are refused)")
            if opcode.name == "STOP":
                end = pos + 1
    except CodeRefused:
        raise
    except Exception as exc:  # noqa: BLE001 (pickletools raises what the bytes make it)
        raise CodeRefused(f"file: {name[:80]!r} is not a readable pickle "
                          f"({type(exc).__name__})") from None
    if end != len(body):
        raise CodeRefused(f"file: {name[:80]!r} holds bytes after its pickle")


# -- symbolic size expressions ------------------------------------------------------------------
SYMBOL = re.compile(r"[a-z]+[0-9]+")
# sympy's own classes as `srepr` writes them (Add, Mul, the relationals) and torch's functions
_FUNCTION_LIST = """Symbol Integer Rational Float Add Mul Max Min Abs Eq Ne Lt Le Gt Ge
StrictLessThan LessThan StrictGreaterThan GreaterThan Equality Unequality And Or Not floor
ceiling Mod FloorDiv CeilDiv CleanDiv ModularIndexing Where PythonMod CeilToInt FloorToInt
FloatTrueDiv IntTrueDiv TruncToInt TruncToFloat ToFloat RoundToInt RoundDecimal Identity"""
_FUNCTIONS = frozenset(_FUNCTION_LIST.split())
_CONSTANT_NAMES = frozenset({"oo", "int_oo", "True", "False", "true", "false"})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow"})
_FLOAT_TEXT = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{0,20})?(?:e-?[0-9]{1,3})?")
MAX_FLOAT_PRECISION = 64
_ASSUMPTIONS = frozenset({"positive", "integer", "nonnegative", "real", "finite"})
_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_COMPARE = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
MAX_EXPRESSION_CHARS = 2000
MAX_EXPRESSION_NODES = 200
MAX_EXPONENT = 16
MAX_LITERAL = 1 << 63


def _refuse(expr: str, why: str) -> CodeRefused:
    return CodeRefused(f"file: the symbolic size expression {expr[:60]!r} {why}; only plain "
                       "size arithmetic is accepted")


def _check_power(base: ast.AST, exponent: ast.AST, expr: str, in_power: bool) -> None:
    if in_power or not (isinstance(exponent, ast.Constant) and type(exponent.value) is int
                        and 0 <= exponent.value <= MAX_EXPONENT):
        raise _refuse(expr, f"raises to a power other than a literal 0..{MAX_EXPONENT} (or "
                      "nests powers)")
    _check_node(base, expr, True)


def _literal_exponent(node: ast.AST) -> ast.AST:
    """`Integer(16)` as the exponent of `Pow(...)` (srepr's spelling) is the literal 16."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == "Integer" and len(node.args) == 1 and not node.keywords:
        return node.args[0]
    return node


def _check_node(node: ast.AST, expr: str, in_power: bool) -> None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINARY):
        if isinstance(node.op, ast.Pow):
            _check_power(node.left, node.right, expr, in_power)
            return
        _check_node(node.left, expr, in_power)
        _check_node(node.right, expr, in_power)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _check_node(node.operand, expr, in_power)
    elif isinstance(node, ast.Compare) and all(isinstance(op, _COMPARE) for op in node.ops):
        for child in (node.left, *node.comparators):
            _check_node(child, expr, in_power)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in _POWERS:
        if len(node.args) != 2 or node.keywords:
            raise _refuse(expr, f"calls {node.func.id} with other than two arguments")
        _check_power(node.args[0], _literal_exponent(node.args[1]), expr, in_power)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id in _FUNCTIONS:
        args = node.args
        if node.func.id == "Float":  # srepr's Float('2.0', precision=53)
            if len(args) != 1 or not (isinstance(args[0], ast.Constant) and
                                      isinstance(args[0].value, str) and
                                      _FLOAT_TEXT.fullmatch(args[0].value)) or \
                    any(k.arg != "precision" or not isinstance(k.value, ast.Constant) or
                        type(k.value.value) is not int or
                        not 1 <= k.value.value <= MAX_FLOAT_PRECISION for k in node.keywords):
                raise _refuse(expr, f"holds a Float other than a short literal of precision "
                              f"up to {MAX_FLOAT_PRECISION}")
            return
        if node.func.id == "Symbol":
            if len(args) != 1 or not (isinstance(args[0], ast.Constant) and
                                      isinstance(args[0].value, str) and
                                      SYMBOL.fullmatch(args[0].value)):
                raise _refuse(expr, "names a symbol other than s<n>")
            args = []
        for keyword in node.keywords:
            if keyword.arg not in _ASSUMPTIONS or not (
                    isinstance(keyword.value, ast.Constant) and
                    isinstance(keyword.value.value, bool)):
                raise _refuse(expr, f"passes {str(keyword.arg)[:20]!r}")
        for arg in args:
            _check_node(arg, expr, in_power)
    elif isinstance(node, ast.Name):
        if node.id not in _CONSTANT_NAMES and not SYMBOL.fullmatch(node.id):
            raise _refuse(expr, f"uses {node.id[:40]!r}")
    elif isinstance(node, ast.Constant):
        value = node.value
        if not (type(value) is int and abs(value) < MAX_LITERAL or
                type(value) is float and math.isfinite(value)):
            raise _refuse(expr, f"holds the literal {str(value)[:20]!r} (integers below "
                          "2**63 and finite floats only)")
    else:
        raise _refuse(expr, f"holds a {type(node).__name__}")


def check_size_expression(expr: str) -> None:
    """Refuses an `expr_str` that is not a small tree of size arithmetic (above)."""
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise _refuse(expr, f"is {len(expr):,} characters long (at most "
                      f"{MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _refuse(expr, "is not an expression Python parses") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_EXPRESSION_NODES:
        raise _refuse(expr, f"has more than {MAX_EXPRESSION_NODES} parts")
    _check_node(tree.body, expr, False)
