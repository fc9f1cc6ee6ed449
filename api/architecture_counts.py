"""Planning a spec whose torchvision cost is not counted yet (jobs/architecture_costs.py): the
API asks a worker on the validation lane to count it and waits up to
NADS_ARCHITECTURE_COUNT_WAIT_S, then plans the spec with the count like a built-in's. Past the
wait: 503 with Retry-After (nothing stored; the count goes on and the next submission finds it).
With no worker connected that counts, the cost stays unknown and nothing is refused, as with no
worker at all (jobs/fleet.py). Each count asked for is a task on the validation lane, outside its
fair dispatch, asked for by submissions that may store nothing (a 422 or 503 is no job, so the
submission rate does not see it): it draws on the key's NADS_UPLOAD_RATE_PER_MINUTE like an
upload, or one key could fill the lane ahead of every user's validations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from celery import Celery
from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from api.ratelimit import count_upload_attempt
from jobs.architecture_costs import CostPending, counts, wait_for_count
from jobs.dispatch import enqueue_count
from jobs.fleet import connected_workers
from jobs.kinds.base import Admission, JobKind, Plan
from store.models import ApiKey
from store.settings import Settings

RETRY_AFTER_S = 10


def plan_counted(kind: JobKind, spec: Any, admission: Admission, session: Session,
                 celery: Celery, settings: Settings, key: ApiKey) -> Plan:
    """`kind.plan(spec, admission)`, the count it needs asked for (one of `key`'s
    NADS_UPLOAD_RATE_PER_MINUTE: 429 past it) and waited for first."""
    try:
        return kind.plan(spec, admission)
    except CostPending as pending:
        if not any(counts(w) for w in connected_workers(session, settings)):
            return kind.plan(spec, replace(admission, uncounted=True))
        count_upload_attempt(session, key, settings.upload_rate_per_minute,
                             "validation-lane requests (uploads and torchvision counts)")
        enqueue_count(celery, pending.architecture, pending.input_shape, pending.num_outputs)
        if not wait_for_count(session, pending, settings.architecture_count_wait_s):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"{pending}: a worker is counting it (once per builder, input shape and "
                f"output count) and did not finish within {settings.architecture_count_wait_s:g}"
                " s (NADS_ARCHITECTURE_COUNT_WAIT_S); submit again in a few seconds",
                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    return kind.plan(spec, admission)
