"""/v1/architectures: users' own architectures, uploaded as TorchScript (`torch.jit.save`, .pt)
or torch.export (`torch.export.save`, .pt2) archives. The API stores the file (streamed, size
limited) and queues its validation in the worker; it never loads a model. A caller sees only
its own architectures; another user's is a 404, exactly like one that does not exist."""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api.deps import BlobsDep, CeleryDep, CurrentKey, CurrentUser, SessionDep, SettingsDep, released
from api.multipart import bad_request, receive_upload, store_upload
from api.own_rows import get_own
from api.ratelimit import count_upload_attempt
from api.schemas.architectures import ArchitectureOut, ArchitecturePage
from api.storage import check_upload_storage, precheck_upload_storage
from api.uploaded_architectures import (
    parse_input_shape,
    parse_output,
    parse_policy,
)
from jobs import state
from jobs.dispatch import dispatch_validations
from nadcore.uploaded.archive_format import ArchiveFormatError, check_declared
from store.blobs import touch_blobs
from store.models import VALIDATING, Architecture, User

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])
_MAX_NAME = 100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{_MAX_NAME - 1}}}")


def get_own_architecture(session: SessionDep, user: User, architecture_id: str) -> Architecture:
    """By its id or a unique prefix: 404 or 409 naming `architecture_id` (api/own_rows.py)."""
    return get_own(session, Architecture, user, architecture_id, "architecture_id")


_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "name", "input_shape"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "name": {"type": "string", "maxLength": _MAX_NAME,
                            "pattern": _NAME.pattern},
                   "input_shape": {"type": "string", "example": "1,32,32"},
                   "init": {"type": "string", "default": "torch-default",
                            "example": "torch-default | normal:0.05 | uniform:0.1 | keep"},
                   "output": {"type": "string", "example": "0 | logits",
                              "description": "the element of a tuple or list (an index) or "
                              "dict (a key) output that is the network's output"}}}}}}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ArchitectureOut,
             openapi_extra=_BODY)
async def create_architecture(request: Request, session: SessionDep, user: CurrentUser,
                              key: CurrentKey,
                              settings: SettingsDep, blobs: BlobsDep, celery: CeleryDep,
                              response: Response) -> ArchitectureOut:
    """multipart/form-data: `file` (a torch.export `.pt2`, preferred, or a TorchScript `.pt`),
    `name`, `input_shape` ("C,H,W"), optional `init` (torch-default, normal:<std>,
    uniform:<bound> or keep) and, for a network returning a tuple, list or dict, `output`: the
    index or key of the element that is its output (an unnamed structure is rejected). 201
    with status `validating`; the worker then sets `ready` or `rejected` with the reason. 413
    past NADS_MAX_ARCHITECTURE_BYTES; 422 naming `file` at once for a file that is not a
    TorchScript or torch.export zip archive, that the strict zip reader refuses
    (`nadcore.uploaded.strict_zip`: more than 20,000 entries, judged from the end records before
    anything reads the directory; a name twice; a name its format does not write...), or that
    is not the one its name declares (`.pt2`: torch.export, `.pt`: TorchScript)."""
    await run_in_threadpool(count_upload_attempt, session, key, settings.upload_rate_per_minute)
    await run_in_threadpool(precheck_upload_storage, session, request, user.id, settings)
    received = await receive_upload(request, blobs, settings.max_architecture_bytes,
                                    "NADS_MAX_ARCHITECTURE_BYTES",
                                    "the fields 'name' and 'input_shape'")
    try:  # every refusal, and any error, removes the received file at once
        if received.path is None:
            raise bad_request("file", "missing; send the archive as the multipart part 'file'")
        name = received.fields.get("name", "").strip()
        if not _NAME.fullmatch(name):
            raise bad_request("name", f"required, 1 to {_MAX_NAME} characters among letters, "
                              "digits and . _ - (it names files and CLI output)")
        shape = parse_input_shape(received.fields.get("input_shape", ""))
        policy = parse_policy(received.fields.get("init"))
        output = parse_output(received.fields.get("output"))
        try:  # at once, not minutes later in the worker: a strict zip of the declared format
            await run_in_threadpool(check_declared, received.path, received.filename)
        except ArchiveFormatError as exc:
            raise bad_request("file", str(exc).removeprefix("file: ")) from None
        except Exception as exc:  # noqa: BLE001 (zipfile: NotImplementedError, OSError, ...)
            raise bad_request("file", f"not a readable zip archive: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
        row = await store_upload(session, blobs, received, lambda: Architecture(
            id=uuid.uuid4().hex, user_id=user.id, api_key_id=key.id, name=name,
            filename=received.filename, input_shape=shape, init=policy, output=output,
            size=received.size, sha256=received.sha256, status=VALIDATING),
            before=lambda: check_upload_storage(session, user.id, received.size, settings))
    finally:
        received.discard()
    out = ArchitectureOut.from_row(row)
    # Held in the database; sent now if the validation lane has a free process, else when one
    # frees, fairly between users (a lost message: the reconciler sends it again).
    await run_in_threadpool(dispatch_validations, celery, session, settings)
    response.headers["Location"] = f"/v1/architectures/{row.id}"
    return released(session, out)


@router.get("", response_model=ArchitecturePage)
def list_architectures(session: SessionDep, user: CurrentUser) -> ArchitecturePage:
    """The caller's architectures, newest first."""
    rows = session.scalars(select(Architecture).where(Architecture.user_id == user.id)
                           .order_by(Architecture.pk.desc()).limit(1000)).all()
    return released(session, ArchitecturePage(items=[ArchitectureOut.from_row(r) for r in rows]))


@router.get("/{architecture_id}", response_model=ArchitectureOut)
def read_architecture(architecture_id: str, session: SessionDep, user: CurrentUser
                      ) -> ArchitectureOut:
    return released(session, ArchitectureOut.from_row(
        get_own_architecture(session, user, architecture_id)))


@router.delete("/{architecture_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: {"description": "Its validation is running"}})
def delete_architecture(architecture_id: str, session: SessionDep, user: CurrentUser,
                        settings: SettingsDep) -> Response:
    """Forgets the architecture: its size no longer counts against the caller's storage.
    Queued and running jobs keep working: their specs pin the archive's sha256, which the
    blob collector keeps while they run (store/blobgc.py). 409 while its validation runs
    (held for the lane, it can go): the sandbox is not stopped, and until it ends it holds a
    process of the validation lane that the lane's fairness counts (jobs/state.py)."""
    row = get_own_architecture(session, user, architecture_id)
    touch_blobs(session, [row.sha256])  # a job submitted meanwhile pins it within the grace
    if not state.delete_architecture(session, row.pk):
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail=(
            f"architecture_id: {row.id!r} is being validated (sent to the sandbox lane); "
            "delete it once its validation ends, at most "
            f"{settings.architecture_validation_timeout_s:.0f} s after it starts "
            "(NADS_ARCHITECTURE_VALIDATION_TIMEOUT_S)"))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
