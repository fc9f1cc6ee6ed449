"""/v1/uploads: a user's uploaded dataset (.npz) or NAD array (.npy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from api.schemas import utc
from store.models import Upload


class UploadOut(BaseModel):
    id: str
    kind: Literal["dataset", "nads"]
    filename: str
    size: int
    sha256: str
    created_at: datetime
    # shape and dtype of each array, from the .npy headers ({"x": {"shape": [...],
    # "dtype": "|u1"}, ...}; a NAD array: {"nads": ...}); None for uploads older than this
    arrays: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_row(cls, row: Upload) -> UploadOut:
        return cls(id=row.id, kind=row.kind, filename=row.filename, size=row.size,
                   sha256=row.sha256, created_at=utc(row.created_at), arrays=row.arrays)


class UploadPage(BaseModel):
    items: list[UploadOut]
