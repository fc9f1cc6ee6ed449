"""The worker's half of each job kind, found through the registry (jobs/kinds): the kind's
`worker` names its module, which defines `RUNNER` (a `KindRunner`)."""

from __future__ import annotations

import importlib

from jobs.kinds import get_kind
from worker.kinds.base import KindRunner, WholeJobRunner


def runner(kind: str) -> KindRunner:
    """The runner of job kind `kind` (KeyError for a kind the registry does not hold)."""
    return importlib.import_module(get_kind(kind).worker).RUNNER


def whole_job_runner(kind: str) -> WholeJobRunner:
    """The runner of `kind` for a SEQUENTIAL plan; TypeError naming the kind when its runner
    cannot run a whole job (a kind that plans SEQUENTIAL must define both methods)."""
    found = runner(kind)
    missing = [m for m in ("run_whole", "result_files") if not callable(getattr(found, m, None))]
    if missing:
        raise TypeError(f"kind {kind!r}: its runner has no {' or '.join(missing)}, so it cannot "
                        "run a whole job (a SEQUENTIAL plan)")
    return found  # type: ignore[return-value]
