"""POST /v1/jobs/probe: how well an architecture learns D(v) along chosen directions."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.architectures import resolve_architecture
from api.deps import CeleryDep, CurrentKey, SessionDep, SettingsDep
from api.probe import (
    check_nad_source,
    check_probe_quota,
    check_shape,
    count_directions,
    estimate_probe,
)
from api.ratelimit import SUBMIT_RATE
from api.schemas import JobOut
from api.storage import check_job_storage
from api.submission import submit_job
from api.validation import shard_ranges
from nadcore.probe_spec import ProbeSpec
from store.models import PROBE, SHARDED

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("/probe", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             dependencies=[SUBMIT_RATE])
def submit_probe(spec: ProbeSpec, session: SessionDep, key: CurrentKey,
                 settings: SettingsDep, celery: CeleryDep, response: Response) -> JobOut:
    """Queues a probe job: `shards` tasks, each training a range of directions, and a merge.

    Body: the engine's `ProbeSpec` (architecture, input_shape, directions with `kind` fourier,
    nad, random or custom, data, training, seed, shards). `nad` directions name one of the
    caller's succeeded NAD jobs in `directions.job`.
    """
    user = key.user
    spec, arch_info = resolve_architecture(session, user, spec, outputs=2, exact_outputs=True,
                                           input_shape=spec.input_shape)
    num_directions = count_directions(spec)
    check_shape(spec, num_directions)
    estimate = estimate_probe(spec, num_directions, arch_info)
    check_probe_quota(estimate, settings)
    check_nad_source(session, user, spec)
    check_job_storage(session, user.id, estimate, settings)
    return submit_job(session, celery, key, response, kind=PROBE, mode=SHARDED,
                      spec=spec.model_dump(mode="json"), estimate=estimate,
                      ranges=shard_ranges(num_directions, spec.shards))
