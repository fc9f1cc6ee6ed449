"""/v1/architectures: a user's uploaded architecture."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas import utc
from store.models import Architecture


class ArchitectureOut(BaseModel):
    id: str
    name: str
    filename: str
    input_shape: list[int]
    init: str
    output: str | None = Field(None, description="the element of the network's tuple, list or "
                               "dict output that jobs use (null: it returns one tensor)")
    format: str | None = Field(description="torchscript or export; null until validated")
    size: int
    sha256: str
    status: str = Field(description="validating, ready or rejected")
    reason: str | None = Field(description="why it was rejected")
    info: dict[str, Any] | None = Field(
        description="what validation measured: num_outputs, num_params, flops (one forward "
        "pass of one input), module_types, params_by_type, ...")
    created_at: datetime
    validation_sent_at: datetime | None = Field(
        None, description="when its validation was sent to a worker (null while it waits for "
        "a free process of the validation lane, which serves users in turn)")

    @classmethod
    def from_row(cls, row: Architecture) -> ArchitectureOut:
        return cls(id=row.id, name=row.name, filename=row.filename,
                   input_shape=list(row.input_shape), init=row.init, output=row.output,
                   format=row.format,
                   size=row.size, sha256=row.sha256, status=row.status, reason=row.reason,
                   info=row.info, created_at=utc(row.created_at),
                   validation_sent_at=row.validation_sent_at and utc(row.validation_sent_at))


class ArchitecturePage(BaseModel):
    items: list[ArchitectureOut]
