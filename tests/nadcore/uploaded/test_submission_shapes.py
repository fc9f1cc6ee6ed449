"""Errors a user gets when a job or an upload is submitted, not from a worker later (issue 17):
the built-ins' input shapes by torch-free arithmetic, held to what torch builds; the zip layout
of an upload and the format its name declares; and which dimension of a declared shape an
uploaded model disagrees with."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from nadcore.nads.spec import NADSpec
from nadcore.networks.factory import ArchitectureError, build_model
from nadcore.probe.spec import ProbeSpec
from nadcore.specs.architecture import BUILTIN_ARCHITECTURES
from nadcore.specs.input_shapes import minimum_size, shape_problem
from nadcore.uploaded.archive_format import ArchiveFormatError, check_declared, declared_format
from nadcore.uploaded.network import UploadedArchitectureError
from nadcore.uploaded.validation import validate
from nads.export_command import export_architecture

CONVOLUTIONAL = ("lenet", "vgg11", "resnet18", "densenet121")


def test_minimum_sizes_are_the_papers_networks() -> None:
    assert {a: minimum_size(a) for a in BUILTIN_ARCHITECTURES} == {
        "logreg": (1, 1), "lenet": (16, 16), "vgg11": (32, 32), "resnet18": (25, 25),
        "densenet121": (32, 32)}


@pytest.mark.parametrize("arch", CONVOLUTIONAL)
def test_the_arithmetic_agrees_with_torch_at_the_boundary(arch: str) -> None:
    """At the minimum torch builds the network (any channel count); one pixel less in H or in
    W and torch refuses it too, as the spec already did without torch."""
    h, w = minimum_size(arch)
    for c in (1, 5):
        assert shape_problem(arch, (c, h, w)) is None
        build_model(arch, (c, h, w))
    for shape, short in (((2, h - 1, w), "H"), ((2, h, w - 1), "W")):
        problem = shape_problem(arch, shape)
        assert problem is not None and f"{short} = {shape[1 if short == 'H' else 2]} is below" \
            f" {arch}'s minimum" in problem
        with pytest.raises(ArchitectureError, match="cannot take input shape"):
            build_model(arch, shape)


def test_specs_refuse_what_a_builtin_cannot_take_naming_the_field_once() -> None:
    with pytest.raises(ValidationError) as info:
        NADSpec(architecture="lenet", input_shape=(1, 8, 8), num_networks=4)
    msg = info.value.errors()[0]["msg"].removeprefix("Value error, ")
    assert msg.startswith("input_shape: lenet cannot take input shape (1, 8, 8): H = 8 is "
                          "below lenet's minimum 16 and W = 8 is below lenet's minimum 16")
    assert msg.count("input_shape") == 1 and "any number of channels" in msg
    with pytest.raises(ValidationError, match="resnet18 cannot take input shape"):
        ProbeSpec(architecture="resnet18", input_shape=(3, 24, 64),
                  directions={"kind": "random", "count": 2})
    # torchvision builders and small logistic regressions are not the arithmetic's to refuse
    NADSpec(architecture="torchvision:squeezenet1_1", input_shape=(3, 8, 8), num_networks=4)
    NADSpec(architecture="logreg", input_shape=(1, 1, 1), num_networks=4)


# ---------- uploads: the zip layout and the declared format (torch-free) ----------

@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    out = {fmt: export_architecture("lenet", (3, 32, 32), folder / f"lenet3.{fmt}")
           for fmt in ("pt", "pt2")}
    (folder / "model.py").write_text("import torch\nclass Net(torch.nn.Module): pass\n")
    out["py"] = folder / "model.py"
    (folder / "pickle.pt").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    out["pickle"] = folder / "pickle.pt"
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 1).state_dict(), buf)
    (folder / "checkpoint.pt").write_bytes(buf.getvalue())
    out["checkpoint"] = folder / "checkpoint.pt"
    with zipfile.ZipFile(folder / "other.zip", "w") as z:
        z.writestr("archive/readme.txt", "not a model")
    out["zip"] = folder / "other.zip"
    return out


def test_archive_formats_and_what_names_declare(archives: dict[str, Path]) -> None:
    assert check_declared(archives["pt"], "lenet.pt") == "torchscript"
    assert check_declared(archives["pt2"], "lenet.pt2") == "export"
    assert check_declared(archives["pt2"], "upload") == "export"  # no suffix: the layout says
    assert [declared_format(n) for n in ("a.PT2", "a.pt", "a.pth", "a.bin")] == [
        "export", "torchscript", "torchscript", None]
    refusals = {
        "py": ("model.py", r"file: not a zip archive \(first bytes b'impo'\)"),
        "pickle": ("pickle.pt", "file: a plain pickle"),
        "checkpoint": ("checkpoint.pt", "file: a torch.save checkpoint"),
        "zip": ("other.zip", "file: a zip archive but neither TorchScript nor a torch.export"),
        "pt": ("lenet.pt2", r"file: 'lenet.pt2' is named as a torch.export program .* but "
               r"holds a TorchScript archive .*; name it lenet.pt "),
        "pt2": ("lenet.pt", r"named as a TorchScript archive .* but holds a torch.export "
                r"program .*; name it lenet.pt2 "),
    }
    for key, (name, reason) in refusals.items():
        with pytest.raises(ArchiveFormatError, match=reason):
            check_declared(archives[key], name)


# ---------- a declared shape the uploaded model disagrees with ----------

@pytest.mark.parametrize(("shape", "dimensions"), [
    ((1, 32, 32), ["channels: declared 1, the program takes 3"]),
    ((3, 28, 32), ["height: declared 28, the program takes 32"]),
    ((3, 32, 36), ["width: declared 36, the program takes 32"]),
    ((1, 28, 28), ["channels: declared 1", "height: declared 28", "width: declared 28"]),
])
def test_an_exported_model_names_each_dimension_that_disagrees(
        archives: dict[str, Path], shape: tuple[int, int, int], dimensions: list[str]) -> None:
    with pytest.raises(UploadedArchitectureError) as info:
        validate(archives["pt2"], shape, "torch-default")
    reason = str(info.value)
    assert reason.startswith(f"input_shape: {','.join(map(str, shape))} disagrees with the "
                             "uploaded program in ")
    for part in dimensions:
        assert part in reason
    assert "exported for inputs of shape (batch, 3, 32, 32)" in reason
    assert "declare input_shape 3,32,32" in reason
    assert "dynamic batch dimension" not in reason  # the batch is not what is wrong


def test_a_torchscript_model_names_channels_or_height_and_width(
        archives: dict[str, Path]) -> None:
    with pytest.raises(UploadedArchitectureError, match=r"^input_shape: 1,32,32 disagrees with "
                       r"the uploaded network in channels: declared 1, its first convolution "
                       r"takes 3; declare input_shape 3,32,32"):
        validate(archives["pt"], (1, 32, 32), "torch-default")
    with pytest.raises(UploadedArchitectureError, match=r"^input_shape: 3,28,32 disagrees with "
                       r"the uploaded network in height or width: at H x W = 28 x 32 its "
                       r"features reach a linear layer as 320 values where it takes 400"):
        validate(archives["pt"], (3, 28, 32), "torch-default")
    assert validate(archives["pt"], (3, 32, 32), "torch-default")["num_outputs"] == 1
