"""The per-user storage quota at the API (`NADS_MAX_STORAGE_BYTES_PER_USER`; usage counted by
store/usage.py): checked before anything is stored, with one call from each route.

Refusals are 507 Insufficient Storage, not 413: 413 says this request's content is too large
for the server whatever else happened, while a quota refusal depends on what the user already
stores and goes away once they delete something (507 is what WebDAV quotas answer, RFC 4331).
The message names the setting, the limit and the user's usage.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, status
from sqlalchemy.orm import Session

from store.settings import Settings
from store.usage import estimated_result_bytes, lock_user, usage

SETTING = "NADS_MAX_STORAGE_BYTES_PER_USER"
_OVERHEAD = 64 * 1024  # multipart framing in a Content-Length (as api/multipart.py)


def _check(session: Session, user_id: int, incoming: int, limit: int, what: str, field: str,
           lock: bool) -> None:
    if limit <= 0:
        return
    if lock:
        lock_user(session, user_id)
    used = usage(session, user_id)
    if not lock:  # end the read: on SQLite a read transaction cannot later become a write
        session.rollback()
    if used.total + incoming <= limit:
        return
    session.rollback()  # releases the lock
    raise HTTPException(
        status.HTTP_507_INSUFFICIENT_STORAGE,
        detail=f"{field}: {what} of {incoming:,} bytes would pass your storage limit of "
               f"{limit:,} bytes ({SETTING}): you use {used.total:,} ({used.describe()}); "
               "delete uploads, architectures or finished jobs to free space",
    )


def check_upload_storage(session: Session, user_id: int, size: int, settings: Settings,
                         lock: bool = True) -> None:
    """507 when storing `size` more bytes would pass the user's limit. With `lock`, call it in
    the transaction that stores the row (the user's row stays locked until the commit)."""
    _check(session, user_id, size, settings.max_storage_bytes_per_user, "this upload", "file",
           lock)


def precheck_upload_storage(session: Session, request: Request, user_id: int,
                            settings: Settings) -> None:
    """Before the body is read: 507 when the file the Content-Length announces (less the
    multipart framing) cannot fit, so a refused upload costs no transfer."""
    length = request.headers.get("content-length", "")
    size = max(0, int(length) - _OVERHEAD) if length.isdigit() else 0
    check_upload_storage(session, user_id, size, settings, lock=False)


def check_job_storage(session: Session, user_id: int, estimate: dict[str, Any] | None,
                      settings: Settings) -> None:
    """507 when the job's estimated results would pass the user's limit; call it in the
    transaction that stores the job."""
    _check(session, user_id, estimated_result_bytes(estimate),
           settings.max_storage_bytes_per_user, "this job's estimated results", "storage", True)
