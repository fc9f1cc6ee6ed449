"""Response models, one module per resource (the router of the same name serves them), kept
apart from the table models: what the API promises stays stable."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime | None) -> datetime | None:
    """A naive datetime from the database, marked UTC (how every response model sends times)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
