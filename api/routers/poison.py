"""POST /v1/jobs/poison: NAD carriers planted in an image dataset (or the flipped-basis
experiment), then a network trained on it, one model per poison index."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.architectures import resolve_architecture
from api.deps import BlobsDep, CeleryDep, CurrentKey, SessionDep, SettingsDep
from api.poison import (
    NAMED_DATASETS,
    check_nad_source,
    check_poison_quota,
    estimate_poison,
    poison_shards,
    train_size,
)
from api.ratelimit import SUBMIT_RATE
from api.schemas import JobOut
from api.storage import check_job_storage
from api.submission import submit_job
from nadcore.poison_spec import PoisonSpec
from store.models import POISON, SHARDED

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("/poison", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             dependencies=[SUBMIT_RATE])
def submit_poison(spec: PoisonSpec, session: SessionDep, key: CurrentKey,
                  settings: SettingsDep, celery: CeleryDep, blobs: BlobsDep,
                  response: Response) -> JobOut:
    """Queues a poison job: `shards` tasks, each training the models of a range of positions
    in `indices`, and a merge.

    Body: the engine's `PoisonSpec` (architecture, dataset `{"name": "digits"|"cifar10"}` or
    `{"upload": id}`, nads `{"job": id}` or `{"upload": id}`, indices, eps, mode `poison` or
    `flip`, training, keep_dataset, seed, shards).
    """
    user = key.user
    named = NAMED_DATASETS.get(spec.dataset.name or "")  # (shape, classes, size) or None
    spec, _ = resolve_architecture(session, user, spec, outputs=named and named[1],
                                   exact_outputs=True, input_shape=named and named[0])
    size = train_size(spec, session, user, blobs, settings)
    check_nad_source(session, user, spec)
    estimate = estimate_poison(spec, size)
    check_poison_quota(estimate, settings)
    check_job_storage(session, user.id, estimate, settings)
    return submit_job(session, celery, key, response, kind=POISON, mode=SHARDED,
                      spec=spec.model_dump(mode="json"), estimate=estimate,
                      ranges=poison_shards(spec))
