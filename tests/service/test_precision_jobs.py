"""The `precision` field through the service: stored with the job's spec, resolved precision in
the result summary, bf16 arrays different from fp32 ones, fp16 refused naming the field."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from store.db import session_scope
from store.models import Job
from store.settings import Settings
from tests.support import refused_messages, submit_job, wait_for_job

pytestmark = pytest.mark.usefixtures("worker")
BODY = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 30, "shards": 2}


def _run(alice: httpx.Client, **extra: object) -> tuple[dict, np.ndarray]:
    job = wait_for_job(alice, submit_job(alice, BODY | extra, "/v1/jobs/nads")["id"])
    assert job["status"] == "succeeded", job
    r = alice.get(f"/v1/jobs/{job['id']}/artifacts/nads.npy")
    return job, np.load(io.BytesIO(r.content))


def test_precision_is_stored_and_reported(alice: httpx.Client, settings: Settings) -> None:
    default, nads32 = _run(alice)
    bf16, nads16 = _run(alice, precision="bf16")
    assert default["spec"]["precision"] == "auto" and bf16["spec"]["precision"] == "bf16"
    assert (default["summary"]["precision"], default["summary"]["precision_requested"]) == \
        ("fp32", "auto")  # the CPU worker resolves auto to fp32
    assert (bf16["summary"]["precision"], bf16["summary"]["precision_requested"]) == \
        ("bf16", "bf16")
    assert bf16["summary"]["torch"] and bf16["summary"]["device_name"]
    assert not np.array_equal(nads32, nads16)
    with session_scope(settings.resolved_database_url) as session:
        stored = session.scalar(select(Job.spec).where(Job.id == bf16["id"]))
    assert stored["precision"] == "bf16"


def test_fp16_and_unknown_precisions_are_refused(alice: httpx.Client) -> None:
    msgs = refused_messages(alice, BODY | {"precision": "fp16"}, "/v1/jobs/nads")
    assert msgs[0].startswith("precision: 'fp16' is not offered"), msgs
    msgs = refused_messages(alice, BODY | {"precision": "int8"}, "/v1/jobs/nads")
    assert msgs[0].startswith("precision:") and "bf16" in msgs[0], msgs
