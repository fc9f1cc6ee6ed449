"""Deleting an uploaded architecture while it is validated (api/routers/architectures.py,
`jobs.state.delete_architecture`): one held for the validation lane goes; one whose validation
was sent answers 409 naming the field and the limit, and stays, because its sandbox runs on
and the lane counts its slots by such rows: deleting it would free a slot that is not free
(upload, delete, upload... would put one user's validations before everyone else's)."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from api.main import create_app
from store.db import session_scope
from store.models import REJECTED, Architecture, utcnow
from store.settings import Settings
from tests.support import ServerThread, keyed_client, new_key


@pytest.fixture(scope="module")
def held_url(settings: Settings) -> Iterator[str]:
    """An API on the suite's database whose broker is unreachable: every upload stays held
    (its send fails), and the test plays the dispatcher that sends it."""
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with ServerThread(create_app(unreachable)) as server:
        yield server.url


def _torchscript_layout() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for member in ("code/__torch__.py", "data.pkl", "constants.pkl", "version"):
            z.writestr(f"archive/{member}", "")
    return buf.getvalue()


def _upload(client: httpx.Client, name: str) -> str:
    r = client.post("/v1/architectures", data={"name": name, "input_shape": "1,8,8"},
                    files={"file": (f"{name}.pt", _torchscript_layout())})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _set(settings: Settings, architecture_id: str, **values: object) -> None:
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Architecture).where(Architecture.id == architecture_id)
                        .values(**values))


def test_a_sent_validation_cannot_be_deleted_a_held_one_can(held_url: str,
                                                             settings: Settings) -> None:
    key = new_key(settings, f"del-{uuid.uuid4().hex[:6]}")
    with keyed_client(held_url, key, timeout=60) as alice:
        held = _upload(alice, "held")
        assert alice.delete(f"/v1/architectures/{held}").status_code == 204
        assert alice.get(f"/v1/architectures/{held}").status_code == 404

        sent = _upload(alice, "sent")
        _set(settings, sent, validation_sent_at=utcnow())  # as dispatch_validations does
        r = alice.delete(f"/v1/architectures/{sent}")
        assert r.status_code == 409, r.text
        msg = r.json()["detail"]
        assert msg.startswith(f"architecture_id: {sent!r} is being validated"), msg
        assert "NADS_ARCHITECTURE_VALIDATION_TIMEOUT_S" in msg, msg
        row = alice.get(f"/v1/architectures/{sent}")
        assert row.status_code == 200 and row.json()["status"] == "validating", row.text

        _set(settings, sent, status=REJECTED, reason="test: validated")  # its validation ends
        assert alice.delete(f"/v1/architectures/{sent}").status_code == 204
        assert alice.get(f"/v1/architectures/{sent}").status_code == 404
