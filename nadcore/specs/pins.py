"""Where a spec pins blobs: the `sha256` fields the service fills at admission (an uploaded
architecture's archive, `ArchitectureRef`; the nads.npy a NAD reference resolved to,
`NadSource`). The worker reads those blobs whatever becomes of their source meanwhile, so the
blob collector keeps them while the job is queued or running (store/blobgc.py). Found by
walking the spec's types, so a new kind's spec is covered without declaring anything."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from nadcore.specs.architecture import ArchitectureRef
from nadcore.specs.nad_source import NadSource

PINNING = (ArchitectureRef, NadSource)  # the models whose `sha256` names a blob a job reads

Path = tuple[str, ...]


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold, through unions and Annotated (lists are
    not walked: no spec keeps a reference in one)."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def pinned_paths(spec: type[BaseModel], prefix: Path = ()) -> frozenset[Path]:
    """The JSON paths of `spec`'s pinned sha256 fields, e.g. ("architecture", "sha256")."""
    paths: set[Path] = set()
    for name, field in spec.model_fields.items():
        for model in _models(field.annotation):
            if issubclass(model, PINNING):
                paths.add((*prefix, name, "sha256"))
            elif model is not spec:
                paths |= pinned_paths(model, (*prefix, name))
    return frozenset(paths)
