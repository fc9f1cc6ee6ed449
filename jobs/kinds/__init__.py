"""The registry of job kinds: the one list from which the API's routes and schemas, the worker's
task dispatch, the CLI's `submit` verbs, the client and the web page (GET /v1/kinds) take the
kinds. A kind is `jobs/kinds/<name>.py` (its spec, admission and plan: `KIND`, a `JobKind`)
and `worker/kinds/<name>.py` (running and merging its shards); adding one is a line here.
"""

from __future__ import annotations

import importlib

from jobs.kinds.base import JobKind

REGISTRY = ("nads", "probe", "poison")  # in this order in listings; one line per kind

KINDS: dict[str, JobKind] = {
    name: importlib.import_module(f"jobs.kinds.{name}").KIND for name in REGISTRY
}


def get_kind(name: str) -> JobKind:
    """The kind `name`; KeyError naming the known kinds otherwise (a row of an unknown kind)."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"kind: unknown job kind {name!r}; known: {', '.join(KINDS)}") from None
