"""/v1/kinds: a registered job kind, described for the web page and clients."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class FigureOut(BaseModel):
    name: str
    caption: str


class KindOut(BaseModel):
    name: str
    title: str
    unit: str
    submit_url: str
    figures: list[FigureOut]
    spec_schema: dict[str, Any]
    cli_options: dict[str, str]
    label: str
    web_views: list[str]
    supports_upload: bool
    acceptances: dict[str, str]
