"""The job-kind registry (jobs/kinds): one list that the API's routes and schemas, the worker's
dispatch and GET /v1/kinds all read, and each kind's admission and plan on SQLite."""

from __future__ import annotations

import importlib.util
import typing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.main import create_app
from api.schemas.jobs import KindName
from jobs.kinds import KINDS, REGISTRY, get_kind
from jobs.kinds.base import (
    SEQUENTIAL,
    SHARDED,
    Admission,
    QuotaError,
    SpecError,
    check_upload,
    limits,
)
from nadcore.nads.spec import NADSpec
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.spec import ProbeSpec
from store.blobs import BlobStore, record_blob
from store.models import SUCCEEDED, ApiKey, Artifact, Job, User
from store.settings import Settings

WEB_APP = Path(__file__).resolve().parents[2] / "api" / "web" / "app.js"


def _admit(session: Session, settings: Settings, user_id: int) -> Admission:
    return Admission(session, user_id, settings, BlobStore(settings.resolved_blob_dir), None)


def test_every_registered_kind_is_complete() -> None:
    assert tuple(KINDS) == REGISTRY and len(set(REGISTRY)) == len(REGISTRY)
    for name, kind in KINDS.items():
        assert kind.name == name
        assert issubclass(kind.spec, BaseModel)
        assert kind.unit and kind.title and kind.figures and kind.label
        assert all(f.name.endswith(".png") and f.caption for f in kind.figures)
        # the web page has each view the kind declares (api/web/app.js, VIEWS)
        assert all(f'"{view}": {{' in WEB_APP.read_text() for view in kind.web_views), name
        # the worker half exists (found without importing it: it loads torch)
        assert importlib.util.find_spec(kind.worker) is not None, kind.worker
    with pytest.raises(KeyError, match=f"unknown job kind 'nope'; known: {', '.join(REGISTRY)}"):
        get_kind("nope")


def test_the_api_takes_its_kinds_from_the_registry(settings: Settings) -> None:
    assert typing.get_args(KindName) == REGISTRY
    app = create_app(settings)
    paths = app.openapi()["paths"]
    for name, kind in KINDS.items():
        body = paths[f"/v1/jobs/{name}"]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"].endswith(f"/{kind.spec.__name__}")
        # its route takes the refusals it lets users waive as query flags, and no other kind's
        flags = {p["name"] for p in paths[f"/v1/jobs/{name}"]["post"]["parameters"]
                 if p["in"] == "query"}
        assert flags == {"accept_long", *kind.acceptances}, name
    assert "accept_underpowered" in KINDS["probe"].acceptances
    with TestClient(app) as client:
        listed = client.get("/v1/kinds")
    assert listed.status_code == 200
    assert [k["name"] for k in listed.json()] == list(REGISTRY)
    probe = listed.json()[1]
    assert probe["unit"] == "directions" and probe["submit_url"] == "/v1/jobs/probe"
    assert [f["name"] for f in probe["figures"]] == ["heatmap.png", "accuracy_vs_index.png",
                                                     "curves.png"]
    assert "directions" in probe["spec_schema"]["properties"]
    # the CLI's `nads submit` options, as the kind maps them to its spec's fields
    assert probe["cli_options"]["nad-job"] == "directions.job"
    assert (probe["label"], probe["web_views"]) == ("probe", ["probe-facts"])
    assert list(probe["acceptances"]) == ["accept_underpowered"]
    assert listed.json()[0]["acceptances"] == {}


def test_nad_plan_shards_or_runs_whole_and_keeps_the_quota(session: Session, settings: Settings,
                                                           alice: ApiKey) -> None:
    kind = get_kind("nads")
    spec = NADSpec(architecture="lenet", num_networks=100, shards=3)
    plan = kind.plan(spec, _admit(session, settings, alice.user_id))
    assert (plan.mode, plan.ranges) == (SHARDED, spec.shard_ranges())
    assert plan.estimate["forward_passes"] > 0
    early = spec.model_copy(update={"target_stability": 0.9, "shards": 1})
    assert kind.plan(early, _admit(session, settings, alice.user_id)).mode == SEQUENTIAL
    tight = settings.model_copy(update={"max_forward_passes": 10})
    with pytest.raises(QuotaError, match="NADS_MAX_FORWARD_PASSES") as exc:
        kind.plan(spec, _admit(session, tight, alice.user_id))
    assert exc.value.limits["forward_passes"] == 10


def _nad_job(session: Session, user_id: int, num_nads: int = 8) -> Job:
    """A succeeded NAD job of the user, with its nads.npy (its blob row only)."""
    job = Job(id="n" * 32, user_id=user_id, kind="nads", mode=SHARDED, status=SUCCEEDED,
              spec={"input_shape": [1, 8, 8]}, summary={"num_nads": num_nads})
    record_blob(session, "b" * 64, 1)
    job.artifacts = [Artifact(name="nads.npy", sha256="b" * 64, size=1,
                              media_type="application/octet-stream")]
    session.add(job)
    session.commit()
    return job


def test_probe_plan_checks_its_nad_source_for_the_owner_only(
        session: Session, settings: Settings, alice: ApiKey) -> None:
    kind = get_kind("probe")
    job = _nad_job(session, alice.user_id)
    spec = ProbeSpec(architecture="logreg", input_shape=[1, 8, 8],
                     directions={"kind": "nad", "job": job.id, "start": 0, "stop": 6}, shards=2)
    plan = kind.plan(spec, _admit(session, settings, alice.user_id))
    assert (plan.mode, plan.ranges, plan.estimate["directions"]) == (SHARDED, [(0, 3), (3, 6)], 6)
    bob = User(name="bob")
    session.add(bob)
    session.commit()
    with pytest.raises(SpecError) as exc:  # Bob sees Alice's job as a missing one
        kind.plan(spec, _admit(session, settings, bob.id))
    assert (exc.value.field, exc.value.reason) == ("directions.job", f"no job {job.id!r} of yours")
    too_far = spec.model_copy(update={"directions": spec.directions.model_copy(
        update={"stop": 9})})
    with pytest.raises(SpecError, match="row 8 is out of range"):
        kind.plan(too_far, _admit(session, settings, alice.user_id))


def test_poison_plan_refuses_an_upload_that_is_not_the_callers(
        session: Session, settings: Settings, alice: ApiKey, tmp_path: Path) -> None:
    spec = PoisonSpec(architecture="lenet", dataset={"name": "digits"},
                      nads={"upload": "u" * 32}, indices=[0, 1])
    with pytest.raises(SpecError) as exc:
        get_kind("poison").plan(spec, _admit(session, settings, alice.user_id))
    assert exc.value.field == "nads.upload" and "of yours" in exc.value.reason


def test_a_kinds_quotas_are_read_by_the_names_it_declares(
        session: Session, settings: Settings, alice: ApiKey,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """store/settings.py names no kind's quota: `Settings.quota` reads what the kind declares,
    from the environment or the constructor, and refuses a value that is no number >= 0."""
    spec = NADSpec(architecture="lenet", num_networks=100, shards=3)
    monkeypatch.setenv("NADS_MAX_FORWARD_PASSES", "10")
    with pytest.raises(QuotaError, match="NADS_MAX_FORWARD_PASSES"):
        get_kind("nads").plan(spec, _admit(session, settings, alice.user_id))
    assert limits(get_kind("nads").quotas, settings)["forward_passes"] == 10
    monkeypatch.setenv("NADS_MAX_PROBE_FLOPS", "-1")
    with pytest.raises(ValueError, match="NADS_MAX_PROBE_FLOPS: Input should be greater than"):
        limits(get_kind("probe").quotas, settings)
    given = settings.model_copy(update={"max_probe_flops": 5})
    assert limits(get_kind("probe").quotas, given)["flops"] == 5
    assert limits(get_kind("poison").quotas, settings) == {"train_samples": 1_000_000_000}


def test_a_kind_that_runs_built_ins_only_refuses_an_uploaded_architecture(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kind = get_kind("nads")
    uploaded = NADSpec(architecture={"id": "ab12cd"}, num_networks=10)
    check_upload(kind, uploaded)  # NAD jobs run uploaded architectures
    check_upload(kind, NADSpec(architecture="lenet", num_networks=10))
    monkeypatch.setattr(kind, "supports_upload", False)
    with pytest.raises(SpecError) as exc:
        check_upload(kind, uploaded)
    assert (exc.value.field, exc.value.value) == ("architecture", "ab12cd")
    assert exc.value.reason == "nads jobs run built-in architectures only, not an uploaded one"
    check_upload(kind, NADSpec(architecture="lenet", num_networks=10))


def test_admission_pins_the_nad_result_a_spec_reads(session: Session, settings: Settings,
                                                    alice: ApiKey) -> None:
    """The stored spec names the NADs' blob, resolved for the caller at admission; a sha256
    the client sends is replaced, never trusted (the worker reads the pinned blob)."""
    job = _nad_job(session, alice.user_id)
    forged = "f" * 64
    probe = ProbeSpec(architecture="logreg", input_shape=[1, 8, 8],
                      directions={"kind": "nad", "job": job.id, "start": 0, "stop": 6,
                                  "sha256": forged})
    plan = get_kind("probe").plan(probe, _admit(session, settings, alice.user_id))
    assert plan.spec.directions.sha256 == "b" * 64
    assert probe.directions.sha256 == forged  # the submitted spec itself is left as it was


def test_an_uploads_nad_job_whose_shards_cannot_come_back_is_refused_first(
        session: Session, settings: Settings, alice: ApiKey) -> None:
    """The moments of a covariance at D = 16,384 (2 D^2 float64, 4 GiB) are past what one frame
    from the sandbox can declare: such a job on an upload failed after computing every shard.
    It is refused at submission, naming the field and the ways out; built-ins (no sandbox) and
    every smaller result are not."""
    import struct

    from jobs.kinds.base import SpecError
    from jobs.kinds.nads import SANDBOX_FRAME_LIMIT, check_returnable
    from nadcore.uploaded.isolated import HEADER

    assert HEADER.format == ">cI" and 2 ** (8 * struct.calcsize(">I")) - 1 == SANDBOX_FRAME_LIMIT
    kind = get_kind("nads")
    spec = NADSpec(architecture="lenet", input_shape=(1, 128, 128), num_networks=16_385,
                   decomposition="covariance", shards=4)
    assert spec.representation == "moments"
    upload = Admission(session, alice.user_id, settings,
                       BlobStore(settings.resolved_blob_dir), {"num_params": 10})
    with pytest.raises(SpecError, match="decomposition: a covariance of D = 16,384 from 16,385 "
                       r"networks .* 4.0 GiB, more than the sandbox can return \(4 GiB\); use "
                       "decomposition lowrank, or at most 16,384 networks"):
        kind.plan(spec, upload)
    assert kind.plan(spec, _admit(session, settings, alice.user_id)).ranges  # a built-in
    for fits in (spec.model_copy(update={"num_networks": 16_384}),  # gradients
                 spec.model_copy(update={"decomposition": "lowrank"}),
                 NADSpec(architecture="lenet", input_shape=(1, 64, 64), num_networks=70_000,
                         decomposition="covariance")):  # moments of 256 MiB
        check_returnable(fits)
