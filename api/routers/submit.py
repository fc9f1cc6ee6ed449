"""POST /v1/jobs/<kind> for every registered job kind (jobs/kinds): the body is the kind's spec;
an uploaded architecture is resolved for the caller, the kind admits and plans the spec (422
naming the field, or the estimate over its quota; a torchvision builder's cost counted first by
a worker, once per input shape: api/architecture_counts.py), its run time is estimated on the
workers connected (jobs/fleet.py: 422 past NADS_MAX_ESTIMATED_RUN_S unless
`accept_long=true`; the refusals a kind lets users waive are query flags of its route too, its
`acceptances`), then the job is created and queued (202 with the job, its estimate under
`estimate.run`, and `Location`). Refused requests store nothing.
"""

# No `from __future__ import annotations`: each route's body type is its kind's spec class, which
# FastAPI reads from the annotations when the route is defined below.

import inspect
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from api.architecture_counts import plan_counted
from api.deps import BlobsDep, CeleryDep, CurrentKey, SessionDep, SettingsDep
from api.ratelimit import SUBMIT_RATE, check_submission_rate
from api.schemas.jobs import JobOut
from api.storage import check_job_storage
from api.submission import submit_job
from jobs.architectures import resolve_architecture
from jobs.fleet import check_run_time, estimating_workers, rate_key, run_estimate
from jobs.kinds import KINDS
from jobs.kinds.base import Admission, JobKind, check_upload
from jobs.ownership import resolve_references

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


AcceptLong = Annotated[bool, Query(
    description="Queue the job even when its estimated run time on the connected workers "
    "exceeds NADS_MAX_ESTIMATED_RUN_S (otherwise a 422 with the estimate and what fits).")]


def _acceptances(kind: JobKind) -> Callable[..., frozenset[str]]:
    """A dependency taking the kind's `acceptances` as boolean query flags (documented in the
    OpenAPI schema, false by default); it gives the names of those set true."""
    names = list(kind.acceptances)

    def accepted(**flags: bool) -> frozenset[str]:
        return frozenset(name for name in names if flags.get(name))

    accepted.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, Query(description=text)])
        for name, text in kind.acceptances.items()])
    return accepted


def _add_route(kind: JobKind) -> None:
    spec_type = kind.spec

    def submit(spec: spec_type, session: SessionDep, key: CurrentKey,  # type: ignore[valid-type]
               settings: SettingsDep, celery: CeleryDep, blobs: BlobsDep,
               response: Response,
               accepted: Annotated[frozenset[str], Depends(_acceptances(kind))],
               accept_long: AcceptLong = False) -> JobOut:
        # the ids the spec names, from unique prefixes to whole ids (jobs/ownership.py); the
        # domain's refusals below (SpecError, QuotaError, TooLong) are answered by
        # api/errors.py
        spec = resolve_references(session, key.user_id, spec)
        check_upload(kind, spec)
        spec, arch_info = resolve_architecture(session, key.user_id, spec,
                                               **kind.architecture(spec))
        plan = plan_counted(kind, spec, Admission(session, key.user_id, settings, blobs,
                                                  arch_info, accepted),
                            session, celery, settings, key)
        # Again, held to the insert: waiting for a count (plan_counted) ended the transaction
        # in which SUBMIT_RATE locked the key, and concurrent submissions passed it meanwhile.
        check_submission_rate(session, key, settings.submit_rate_per_minute)
        check_job_storage(session, key.user_id, plan.estimate, settings)
        workers = estimating_workers(session, settings)
        rates = rate_key(kind.name, spec.model_dump(mode="json"))
        run = run_estimate(rates, plan.estimate, plan.ranges, workers)
        if not accept_long:
            check_run_time(kind, run, plan.estimate, plan.ranges, workers, settings, rates)
        run["accepted_long"] = bool(accept_long and settings.max_estimated_run_s
                                    and (run["run_s"] or 0) > settings.max_estimated_run_s)
        estimate = dict(plan.estimate or {}) | {"run": run}
        if plan.spec is not None:  # its references pinned (jobs.sources.pin_nads)
            spec = plan.spec
        return submit_job(session, celery, key, response, kind=kind.name, mode=plan.mode,
                          spec=spec.model_dump(mode="json"), estimate=estimate,
                          ranges=plan.ranges, settings=settings)

    submit.__name__ = submit.__qualname__ = f"submit_{kind.name}"
    submit.__doc__ = kind.title
    router.post(f"/{kind.name}", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
                dependencies=[SUBMIT_RATE])(submit)


for _kind in KINDS.values():
    _add_route(_kind)
