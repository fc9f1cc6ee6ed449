"""Validation of uploaded architectures (Celery task on the "validate" queue, a lane of its own:
jobs/broker.py), and the blob store
as the place where the engine finds architecture archives by sha256.

The zip's directory is read here (`sniff_format`: a file that is no TorchScript or torch.export
archive needs no sandbox); everything else, loading included, runs in the sandbox
(`worker.uploaded.validate`): a model that hangs, explodes, crashes or attacks takes only the
sandbox down, and the worker records the reason in the service's own words.
The task is idempotent: an architecture that is no longer `validating` is left alone.
Validations are sent to the lane as its processes free up, fairly between users
(jobs/dispatch.py, `dispatch_validations`), not all at upload.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from jobs import state
from jobs.broker import VALIDATE_ARCHITECTURE
from jobs.dispatch import dispatch_validations
from nadcore.uploaded.network import UploadedArchitectureError, sniff_format
from store.blobs import open_blob_store
from store.db import session_scope
from store.models import READY, REJECTED, VALIDATING, Architecture
from store.settings import Settings, get_settings
from worker import uploaded
from worker.app import app

log = logging.getLogger(__name__)


def run_checks(path: Path, input_shape: list[int], init: str, settings: Settings,
               output: str | None = None) -> tuple[str, dict | None, str | None]:
    """(status, info, reason) of the archive at `path`."""
    try:
        sniff_format(path)  # reads the zip's directory only; never unpickles
    except UploadedArchitectureError as exc:
        return REJECTED, None, str(exc)
    try:
        info, reason = uploaded.validate(settings, path, input_shape, init, output)
    except Exception:
        # A bug of ours met by this model's output (two were found: a report nested past the
        # recursion limit, an integer past int64). Left to escape, the architecture would stay
        # `validating` and the reconciler would send its validation again for ever, a sandbox
        # run each time; rejected, it costs one run. The sandbox's own failures (SandboxError)
        # are handled inside validate; the database is not touched before this returns.
        log.exception("validation of %s failed inside the worker", path.name)
        return REJECTED, None, ("file: the worker failed while validating this archive (an "
                                "internal error, logged on the worker); it was not loaded "
                                "outside the sandbox")
    return (READY, info, None) if info is not None else (REJECTED, None, reason)


@app.task(name=VALIDATE_ARCHITECTURE, acks_late=True)
def validate_architecture(architecture_id: str) -> str | None:
    """Validates one uploaded architecture; returns its new status (None when not found or
    already decided: a duplicate message does nothing). Then its slot of the lane goes to the
    next held validation, fairly between users (jobs/dispatch.py)."""
    try:
        return _validate(architecture_id)
    finally:
        _next_validation()


def _next_validation() -> None:
    """Never fails the task: the reconciler dispatches too."""
    try:
        settings = get_settings()
        with session_scope(settings.resolved_database_url) as session:
            dispatch_validations(app, session, settings)
    except Exception:  # noqa: BLE001
        log.warning("could not send the next held validation", exc_info=True)


def _validate(architecture_id: str) -> str | None:
    settings = get_settings()
    with session_scope(settings.resolved_database_url) as session:
        row = session.scalar(select(Architecture).where(Architecture.id == architecture_id))
        if row is None or row.status != VALIDATING:
            return None
        sha, shape, init, output = row.sha256, list(row.input_shape), row.init, row.output
    path = open_blob_store(settings).path(sha)
    if not path.is_file():
        status, info, reason = REJECTED, None, "file: the uploaded archive is missing from " \
            "the blob store"
    else:
        status, info, reason = run_checks(path, shape, init, settings, output)
    log.info("architecture %s: %s %s", architecture_id, status, reason or "")
    with session_scope(settings.resolved_database_url) as session:
        if not state.finish_validation(session, architecture_id, status, info, reason):
            return None  # validated meanwhile, by a duplicate message
    return status
