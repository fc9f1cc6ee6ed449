"""The domain's refusal of a spec: a field and why. The API answers it with a 422 naming the
field (api/errors.py); a worker that meets it fails the job with the same message."""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """A spec refused for a reason the spec's own validation cannot see (a referenced job, an
    upload, the shape of the directions): `field` and why, with the offending value."""

    def __init__(self, field: str, reason: str, value: Any = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.value = field, reason, value
