"""The worker's half of each job kind, found through the registry (jobs/kinds): the kind's
`worker` names its module, which defines `RUNNER` (a `KindRunner`)."""

from __future__ import annotations

import importlib

from jobs.kinds import get_kind
from worker.kinds.base import KindRunner


def runner(kind: str) -> KindRunner:
    """The runner of job kind `kind` (KeyError for a kind the registry does not hold)."""
    return importlib.import_module(get_kind(kind).worker).RUNNER
