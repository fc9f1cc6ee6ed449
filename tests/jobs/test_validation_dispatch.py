"""Validations go to the lane fairly between users (jobs/dispatch.py, `dispatch_validations`),
on SQLite and the embedded broker: held in the database, sent one per free process of the
workers that take `validate`, each freed process to the user with the fewest in flight and,
among those, the one served longest ago; the reconciler neither takes a held validation for
lost nor forgets one whose message was lost."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs import state
from jobs.dispatch import dispatch_validations, validation_lost_after_s, validation_slots
from store.blobs import record_blob
from store.models import READY, VALIDATING, ApiKey, Architecture, Worker, utcnow
from store.settings import Settings
from tests.embedded import add_user, sent_messages
from worker.reconcile import reconcile_once

SHA = "d" * 64


def _upload(session: Session, key: ApiKey, name: str) -> str:
    """An architecture row as the API stores it: `validating`, not sent."""
    row = Architecture(id=name, user_id=key.user_id, name=name, filename=f"{name}.pt2",
                       input_shape=[1, 4, 4], size=1, sha256=SHA, status=VALIDATING)
    session.add(row)
    session.commit()
    return name


def _validated(session: Session, architecture_id: str) -> None:
    """What the worker's task does when it is done with one."""
    session.execute(update(Architecture).where(Architecture.id == architecture_id)
                    .values(status=READY, updated_at=utcnow()))
    session.commit()


def _queued(settings: Settings) -> list[str]:
    """The architectures whose validation messages wait in the broker, in send order (a
    message's body is base64 of the task's [args, kwargs, options])."""
    return [json.loads(base64.b64decode(json.loads(p.read_text())["body"]))[0][0]
            for p in sent_messages(settings)]


def test_one_users_burst_does_not_hold_back_another_users_upload(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    session.add(Worker(name="lane", hostname="h", pid=1, processes=1, queues="validate",
                       last_seen=utcnow()))
    session.commit()
    assert validation_slots(session, settings) == 1
    record_blob(session, SHA, 1)
    bob = add_user(session, "bob")
    burst = [_upload(session, alice, f"a{i}") for i in range(5)]
    assert dispatch_validations(app, session, settings) == 1
    assert dispatch_validations(app, session, settings) == 0  # the lane's one process is busy
    _upload(session, bob, "b0")
    assert dispatch_validations(app, session, settings) == 0
    order = ["a0"]
    for _ in range(5):
        _validated(session, order[-1])
        assert dispatch_validations(app, session, settings) == 1
        order += [i for i in _queued(settings) if i not in order]
    assert order == ["a0", "b0", *burst[1:]]


def test_deleting_a_sent_validation_does_not_free_its_slot(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    """Upload, delete, upload...: a validation that was sent runs on in its sandbox, so its row
    stays until it ends and its slot is not given to the owner's next upload before another
    user's. A held one is deleted."""
    session.add(Worker(name="lane", hostname="h", pid=1, processes=1, queues="validate",
                       last_seen=utcnow()))
    session.commit()
    record_blob(session, SHA, 1)
    bob = add_user(session, "bob")
    burst = [_upload(session, alice, f"a{i}") for i in range(3)]
    assert dispatch_validations(app, session, settings) == 1  # a0
    pks = dict(session.execute(select(Architecture.id, Architecture.pk)).all())
    assert not state.delete_architecture(session, pks["a0"])
    assert state.delete_architecture(session, pks["a2"])  # held: it goes
    session.commit()
    assert dispatch_validations(app, session, settings) == 0  # a0 still runs
    _upload(session, bob, "b0")
    assert dispatch_validations(app, session, settings) == 0
    _validated(session, "a0")
    assert dispatch_validations(app, session, settings) == 1
    assert _queued(settings) == ["a0", "b0"]
    assert state.delete_architecture(session, pks["a0"])  # validated: it goes
    session.commit()
    assert session.scalars(select(Architecture.id).order_by(Architecture.pk)).all() == [
        burst[1], "b0"]


def test_held_validations_are_not_lost_and_lost_ones_are_sent_again(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    record_blob(session, SHA, 1)
    first, second = _upload(session, alice, "a0"), _upload(session, alice, "a1")
    assert reconcile_once(session, app, settings) == 1  # no lane connected yet: one slot
    lost_after = validation_lost_after_s(settings)
    old = utcnow() - timedelta(seconds=lost_after + 1)
    session.execute(update(Architecture).values(updated_at=old))  # held and sent alike
    session.commit()
    # the sent one's message is lost: held again and sent; the held one still waits
    assert reconcile_once(session, app, settings) == 1
    rows = {r.id: r for r in session.scalars(select(Architecture))}
    assert rows[first].validation_sent_at is not None and rows[first].updated_at > old
    assert rows[second].validation_sent_at is None
    assert _queued(settings) == [first, first]
