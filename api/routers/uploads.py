"""/v1/uploads: datasets (.npz) and NAD arrays (.npy) for poison jobs. A caller sees only its
own uploads; another user's upload is a 404, exactly like one that does not exist."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.deps import BlobsDep, CurrentKey, CurrentUser, SessionDep, SettingsDep, released
from api.multipart import bad_request, check_upload, receive_upload, store_upload
from api.own_rows import get_own
from api.ratelimit import count_upload_attempt
from api.schemas.uploads import UploadOut, UploadPage
from api.storage import check_upload_storage, precheck_upload_storage
from store.blobs import touch_blobs
from store.models import Upload, User
from store.npz import ArchiveError, inspect_upload

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


def get_own_upload(session: SessionDep, user: User, upload_id: str) -> Upload:
    """By its id or a unique prefix: 404 or 409 naming `upload_id` (api/own_rows.py)."""
    return get_own(session, Upload, user, upload_id, "upload_id")


_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "kind"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "kind": {"type": "string", "enum": ["dataset", "nads"]}}}}}}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadOut,
             openapi_extra=_BODY)
async def create_upload(request: Request, session: SessionDep, user: CurrentUser,
                        key: CurrentKey,
                        settings: SettingsDep, blobs: BlobsDep, response: Response
                        ) -> UploadOut:
    """multipart/form-data: `file` and `kind` (`dataset`: an .npz with x uint8 NHWC or float
    NCHW in [0, 1] and y integers, optional x_test/y_test; `nads`: an .npy of NAD rows).
    Refused with 413 past NADS_MAX_UPLOAD_BYTES or, once decompressed as the arrays' headers
    declare, past NADS_MAX_DATASET_DECOMPRESSED_BYTES; with 507 past the caller's storage
    (NADS_MAX_STORAGE_BYTES_PER_USER); with 422 when the magic bytes, the
    headers or a dataset's keys, ranks, dtypes or lengths are wrong."""
    await run_in_threadpool(count_upload_attempt, session, key, settings.upload_rate_per_minute)
    await run_in_threadpool(precheck_upload_storage, session, request, user.id, settings)
    received = await receive_upload(request, blobs, settings.max_upload_bytes)
    try:  # every refusal, and any error, removes the received file at once
        kind = check_upload(received)
        try:
            arrays = await run_in_threadpool(inspect_upload, received.path, kind,
                                             settings.max_dataset_decompressed_bytes)
        except ArchiveError as exc:
            if exc.status == status.HTTP_413_CONTENT_TOO_LARGE:
                raise HTTPException(exc.status, detail=f"file: {exc}") from None
            raise bad_request("file", str(exc)) from None
        row = await store_upload(session, blobs, received, lambda: Upload(
            id=uuid.uuid4().hex, user_id=user.id, api_key_id=key.id, kind=kind,
            filename=received.filename, size=received.size, sha256=received.sha256,
            arrays=arrays),
            before=lambda: check_upload_storage(session, user.id, received.size, settings))
    finally:
        received.discard()
    response.headers["Location"] = f"/v1/uploads/{row.id}"
    return UploadOut.from_row(row)


@router.get("", response_model=UploadPage)
def list_uploads(session: SessionDep, user: CurrentUser,
                 kind: Literal["dataset", "nads"] | None = None) -> UploadPage:
    """The caller's uploads, newest first."""
    query = select(Upload).where(Upload.user_id == user.id)
    if kind is not None:
        query = query.where(Upload.kind == kind)
    rows = session.scalars(query.order_by(Upload.pk.desc()).limit(1000)).all()
    return released(session, UploadPage(items=[UploadOut.from_row(r) for r in rows]))


@router.get("/{upload_id}", response_model=UploadOut)
def read_upload(upload_id: str, session: SessionDep, user: CurrentUser) -> UploadOut:
    return released(session, UploadOut.from_row(get_own_upload(session, user, upload_id)))


@router.delete("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_upload(upload_id: str, session: SessionDep, user: CurrentUser) -> Response:
    """Forgets the upload: its size no longer counts against the caller's storage, and the
    blob collector removes the file once nothing references it (store/blobgc.py). A queued
    job that refers to it fails when its shard runs."""
    row = get_own_upload(session, user, upload_id)
    touch_blobs(session, [row.sha256])  # kept the grace period after (store/blobgc.py)
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
