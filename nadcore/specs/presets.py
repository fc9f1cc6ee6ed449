"""Named training presets of the probe and poison specs (`"preset": "quick"` or `"paper"`).

A preset fills the fields of its sections (`data`, `training`) that the request leaves out;
fields given explicitly win. It is applied while the spec is validated, so the stored spec
(`model_dump`) holds the resolved settings and the preset's name: a job stays reproducible
when a preset's values change later, and a stored spec from before presets (no `preset`
field) validates to exactly what it meant then. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

Preset = Mapping[str, Mapping[str, Any]]  # section -> field -> value


def fill_preset(data: Any, presets: Mapping[str, Preset]) -> Any:
    """`data` (a spec's raw input) with the sections of its preset completed; unchanged when it
    names no preset or an unknown one (the spec's `preset` field then refuses it)."""
    if not isinstance(data, Mapping):
        return data
    preset = presets.get(data.get("preset")) if isinstance(data.get("preset"), str) else None
    if preset is None:
        return data
    out = dict(data)
    for section, values in preset.items():
        given = out.get(section)
        if given is None:
            given = {}
        elif isinstance(given, BaseModel):  # a model built in Python: its explicit fields
            given = given.model_dump(include=given.model_fields_set)
        if not isinstance(given, Mapping):
            continue  # not a mapping: the section's own validation says why
        out[section] = {**values, **given}
    return out
