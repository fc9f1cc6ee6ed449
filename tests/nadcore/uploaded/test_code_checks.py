"""The token and opcode checks of an archive's code-like members (nadcore.uploaded.code_checks):
what a text pattern misses is seen on tokens, and a pickle's globals are judged by its opcodes."""

from __future__ import annotations

import pickle

import pytest
from torch import nn

from nadcore.uploaded.code_checks import CodeRefused, check_pickle, check_torchscript_code
from nadcore.uploaded.strict_zip import read_members
from tests.bad_models import scripted_bytes
from tests.hostile_models import _Exec


@pytest.mark.parametrize(("source", "match"), [
    (b"class A:\n  def \\\n    __setstate__(self):\n    pass\n", "names __setstate__"),
    (b"class A:\n  def __setstate__ (self):\n    pass\n", "names __setstate__"),
    (b"x = '''\n__setstate__\n'''\n", "names __setstate__"),  # hidden in a string
    (b"# __setstate__\n", "names __setstate__"),  # or a comment
    (b"def f(x):\n  return torch . classes.ns.C()\n", "custom class"),
    (b"x = 1\r\ndef __setstate__(self): pass\n", "printable ASCII"),
    (b"x = 1\x0cdef f(): pass\n", "printable ASCII"),
    (b"x = \xc3\xa9\n", "printable ASCII"),
    (b"x = 'open\n", "not a Python token"),
    (b"def f(:\n  (\n", "not readable Python tokens"),
])
def test_torchscript_code_is_judged_on_tokens(source: bytes, match: str) -> None:
    with pytest.raises(CodeRefused, match=match):
        check_torchscript_code("code/__torch__/m.py", source)


def test_real_torchscript_members_pass() -> None:
    members = read_members(scripted_bytes(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2),
                                                        nn.ReLU(), nn.Flatten())))
    checked = 0
    for name, body in members.items():
        if name.endswith(".py"):
            check_torchscript_code(name, body)
            checked += 1
        elif name.endswith("pkl"):
            check_pickle(name, body)
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize(("body", "match"), [
    (pickle.dumps(_Exec("print(1)"), protocol=2), "'__builtin__ exec'"),
    (b"c__torch__.torch.classes.ns\nC\n)\x81.", "custom classes"),
    (b"ctorch\nFloatStorage\n.junk", "bytes after its pickle"),
    (pickle.dumps(_Exec("print(1)"), protocol=4), "STACK_GLOBAL"),
    (b"\x80\x02\x82\x01.", "EXT1"),
    (b"\x80\x02cos\nsys", "not a readable pickle"),
])
def test_pickles_are_judged_on_their_opcodes(body: bytes, match: str) -> None:
    with pytest.raises(CodeRefused, match=match):
        check_pickle("data.pkl", body)
