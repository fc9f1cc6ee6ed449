"""The registry of job kinds: the one list from which the API's routes and schemas, the worker's
task dispatch, GET /v1/kinds (and through it the CLI, the client and the web page) take the
kinds. A kind is `jobs/kinds/<name>.py` (its spec, admission and plan: `KIND`, a `JobKind`)
and `worker/kinds/<name>.py` (running and merging its shards); adding one is a line here.

A deployment adds kinds of its own without editing this file: `NADS_KIND_MODULES`, module
paths separated by commas (importable by the API and the workers alike), each defining `KIND`
(tests/service/test_toy_kind.py adds one so).
"""

from __future__ import annotations

import importlib
import os

from jobs.kinds.base import JobKind
from nadcore.specs.pins import pinned_paths

BUILT_IN = ("nads", "probe", "poison")  # in this order in listings; one line per kind


def _modules() -> list[str]:
    extra = os.environ.get("NADS_KIND_MODULES", "")
    return [f"jobs.kinds.{name}" for name in BUILT_IN] + \
        [m.strip() for m in extra.split(",") if m.strip()]


def _load(modules: list[str]) -> dict[str, JobKind]:
    kinds: dict[str, JobKind] = {}
    for module in modules:
        kind = importlib.import_module(module).KIND
        if kind.name in kinds:
            raise ValueError(f"NADS_KIND_MODULES: {module} defines the kind {kind.name!r} "
                             "again")
        kinds[kind.name] = kind
    return kinds


KINDS: dict[str, JobKind] = _load(_modules())
REGISTRY = tuple(KINDS)


def pinned_blob_paths() -> frozenset[tuple[str, ...]]:
    """Where any kind's stored spec pins a blob its job reads (`nadcore.specs.pins`): the blob
    collector keeps those of queued and running jobs (store/blobgc.py)."""
    return frozenset().union(*(pinned_paths(kind.spec) for kind in KINDS.values()))


def get_kind(name: str) -> JobKind:
    """The kind `name`; KeyError naming the known kinds otherwise (a row of an unknown kind)."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"kind: unknown job kind {name!r}; known: {', '.join(KINDS)}") from None
