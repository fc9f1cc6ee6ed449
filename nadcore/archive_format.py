"""Which kind of model archive a file is, from its zip layout alone (no torch, nothing loaded).

TorchScript (`torch.jit.save`, `.pt`) and torch.export (`torch.export.save`, `.pt2`) both write
a zip archive with one top folder: TorchScript's holds `<root>/code/`, an exported program's
`<root>/models/`. Only the zip's central directory is read. The API uses this to refuse, in the
upload's own request, a file that cannot be an architecture (a `.py` script, a plain pickle, a
`torch.save` checkpoint, a TorchScript file named `.pt2`); the worker's validation
(`nadcore.custom.sniff_format`) uses it again before anything of the archive is loaded.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

FORMATS = ("torchscript", "export")
# What a file name declares: `.pt2` is torch.export's suffix, `.pt` / `.pth` TorchScript's.
DECLARED = {".pt2": "export", ".pt": "torchscript", ".pth": "torchscript"}
NAMES = {"torchscript": "a TorchScript archive (torch.jit.save)",
         "export": "a torch.export program (torch.export.save)"}
ZIP_MAGIC = b"PK\x03\x04"
EXPORT_HOWTO = (
    "save a TorchScript archive with torch.jit.save(torch.jit.script(model), 'model.pt') "
    "(or torch.jit.trace), or preferably a torch.export program with "
    "torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=({0: "
    "torch.export.Dim('batch')},)), 'model.pt2')"
)


class ArchiveFormatError(ValueError):
    """The file is not a TorchScript or torch.export archive; the message starts with `file:`
    and says what it is instead and how to write one."""


def sniff_format(source: Path | bytes) -> str:
    """"torchscript" or "export" from the archive's layout; ArchiveFormatError otherwise."""
    if isinstance(source, bytes):
        head, opened = source[:4], io.BytesIO(source)
    else:
        with open(source, "rb") as f:
            head = f.read(4)
        opened = source
    if head[:1] == b"\x80":
        raise ArchiveFormatError(
            f"file: a plain pickle, not a TorchScript or torch.export archive; {EXPORT_HOWTO}")
    if head != ZIP_MAGIC:
        raise ArchiveFormatError(
            f"file: not a zip archive (first bytes {head!r}); TorchScript and torch.export "
            f"archives are zip files; {EXPORT_HOWTO}")
    try:
        with zipfile.ZipFile(opened) as z:
            names = [n.split("/", 1)[1] for n in z.namelist() if "/" in n]
    except zipfile.BadZipFile as exc:
        raise ArchiveFormatError(f"file: a damaged zip archive ({exc})") from None
    if any(n.startswith("code/") for n in names):
        return "torchscript"
    if any(n.startswith("models/") for n in names):
        return "export"
    if "data.pkl" in names:
        raise ArchiveFormatError(
            "file: a torch.save checkpoint (a pickled module or state dict), which holds no "
            f"code to run; {EXPORT_HOWTO}")
    raise ArchiveFormatError(f"file: a zip archive but neither TorchScript nor a "
                             f"torch.export program; {EXPORT_HOWTO}")


def declared_format(filename: str) -> str | None:
    """The format a file name's suffix declares (`.pt2`: export; `.pt`, `.pth`: torchscript),
    None for another suffix."""
    return DECLARED.get(PurePosixPath(filename).suffix.lower())


def check_declared(path: Path, filename: str) -> str:
    """The archive's format, when it is an archive and matches what its name declares;
    ArchiveFormatError naming both otherwise."""
    fmt = sniff_format(path)
    declared = declared_format(filename)
    if declared is not None and declared != fmt:
        raise ArchiveFormatError(
            f"file: {filename[:80]!r} is named as {NAMES[declared]} but holds {NAMES[fmt]}; "
            f"name it {PurePosixPath(filename).stem[:80]}"
            f"{'.pt2' if fmt == 'export' else '.pt'} or save it in the declared format")
    return fmt
