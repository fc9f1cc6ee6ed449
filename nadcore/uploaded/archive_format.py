"""Which kind of model archive a file is, from its zip layout alone (no torch, nothing loaded).

TorchScript (`torch.jit.save`, `.pt`) and torch.export (`torch.export.save`, `.pt2`) both write
a zip archive with one top folder: TorchScript's holds `<root>/code/`, an exported program's
`<root>/models/`. The archive is read with `nadcore.uploaded.strict_zip` (its end records first,
then its directory and local headers, nothing decompressed), and every member name must be one that
its format writes (`TORCHSCRIPT_LAYOUT`, `EXPORT_LAYOUT`): anything else, from compiled code to
a stray file, is refused by name. The API uses this to refuse, in the upload's own request, a
file that cannot be an architecture (a `.py` script, a plain pickle, a `torch.save`
checkpoint, a TorchScript file named `.pt2`, a zip of 500,000 entries); the worker's
validation (`nadcore.uploaded.untrusted`) reads the archive again with the same reader.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from nadcore.uploaded.strict_zip import DEFAULT_LIMITS, Entry, Limits, ZipError, read_directory

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


# Member names (below the one root folder) each format writes, as full matches.
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_COMMON = (r"version", r"byteorder", r"\.data/version", r"\.data/serialization_id")
TORCHSCRIPT_LAYOUT = (*_COMMON, r"data\.pkl", r"constants\.pkl", r"data/[0-9]+",
                      r"constants/[0-9]+",
                      rf"code/(?:{_IDENTIFIER}/)*{_IDENTIFIER}\.py(?:\.debug_pkl)?")
EXPORT_LAYOUT = (*_COMMON, r"archive_format", r"archive_version", r"models/model\.json",
                 r"data/weights/model_weights_config\.json", r"data/weights/weight_[0-9]+",
                 r"data/constants/model_constants_config\.json",
                 r"data/constants/tensor_[0-9]+", r"data/sample_inputs/model\.pt")
# Members each format needs (any one name of each tuple): torch.jit.save writes its version
# as `version` or, for some modules, `.data/version` only.
REQUIRED = {"torchscript": (("data.pkl",), ("constants.pkl",), ("version", ".data/version")),
            "export": (("models/model.json",), ("data/weights/model_weights_config.json",),
                       ("data/constants/model_constants_config.json",))}
_LAYOUTS = {fmt: re.compile("|".join(f"(?:{p})" for p in layout)) for fmt, layout in
            (("torchscript", TORCHSCRIPT_LAYOUT), ("export", EXPORT_LAYOUT))}
# What some torch.export archives hold that the service never loads: named in the refusal.
_COMPILED = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/",
             "data/weights/model.pt", "data/constants/model.pt")


def _check_layout(fmt: str, members: list[str]) -> None:
    for name in members:
        if not _LAYOUTS[fmt].fullmatch(name):
            what = ("compiled code or pickled weights; export with torch.export.save only"
                    if name.startswith(_COMPILED) else f"not a member {NAMES[fmt]} holds")
            raise ArchiveFormatError(f"file: the archive holds {name[:80]!r}, {what}")
    for names in REQUIRED[fmt]:
        if not any(name in members for name in names):
            raise ArchiveFormatError(f"file: {NAMES[fmt]} must hold {' or '.join(names)}; this "
                                     "one does not")


def read_layout(source: Path | bytes, limits: Limits = DEFAULT_LIMITS
                ) -> tuple[str, str, list[Entry]]:
    """(format, root folder, entries) of an archive that `nadcore.uploaded.strict_zip` accepts, with
    one root folder and only the member names its format writes; ArchiveFormatError
    otherwise (the entry count and directory size are judged from the file's end first)."""
    if isinstance(source, bytes):
        head = source[:4]
    else:
        with open(source, "rb") as f:
            head = f.read(4)
    if head[:1] == b"\x80":
        raise ArchiveFormatError(
            f"file: a plain pickle, not a TorchScript or torch.export archive; {EXPORT_HOWTO}")
    if head != ZIP_MAGIC:
        raise ArchiveFormatError(
            f"file: not a zip archive (first bytes {head!r}); TorchScript and torch.export "
            f"archives are zip files; {EXPORT_HOWTO}")
    try:
        entries = read_directory(source, limits)
    except ZipError as exc:
        raise ArchiveFormatError(str(exc)) from None
    roots = {entry.name.split("/", 1)[0] for entry in entries}
    if len(roots) != 1 or any("/" not in entry.name for entry in entries):
        raise ArchiveFormatError(f"file: the archive has {len(roots)} top-level names; "
                                 "TorchScript and torch.export archives have one root folder")
    members = [entry.name.split("/", 1)[1] for entry in entries]
    if any(n.startswith("code/") for n in members):
        fmt = "torchscript"
    elif any(n.startswith("models/") for n in members):
        fmt = "export"
    elif "data.pkl" in members:
        raise ArchiveFormatError(
            "file: a torch.save checkpoint (a pickled module or state dict), which holds no "
            f"code to run; {EXPORT_HOWTO}")
    else:
        raise ArchiveFormatError(f"file: a zip archive but neither TorchScript nor a "
                                 f"torch.export program; {EXPORT_HOWTO}")
    _check_layout(fmt, members)
    return fmt, roots.pop(), entries


def sniff_format(source: Path | bytes) -> str:
    """"torchscript" or "export" (`read_layout`); ArchiveFormatError otherwise."""
    return read_layout(source)[0]


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
