"""/v1/jobs/{id}/artifacts/{name}: immutable blobs, so the sha256 is a strong ETag."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from api.deps import BlobsDep, CurrentUser, SessionDep
from api.routers.jobs import get_own_job

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in candidates or etag in candidates


_RESPONSES = {200: {"content": {"application/octet-stream": {}}},
              206: {"description": "Partial content (Range)"},
              304: {"description": "Not modified (If-None-Match)"},
              416: {"description": "Range not satisfiable"}}


@router.head("/{job_id}/artifacts/{name}", response_class=FileResponse,
             operation_id="head_artifact", responses=_RESPONSES)
@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse,
            operation_id="download_artifact", responses=_RESPONSES)
def download_artifact(job_id: str, name: str, request: Request, session: SessionDep,
                      user: CurrentUser, blobs: BlobsDep) -> Response:
    """Streams an artifact; honours If-None-Match (304) and Range / If-Range (206)."""
    job = get_own_job(session, user, job_id)
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        names = ", ".join(a.name for a in job.artifacts) or "none yet"
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"artifact {name!r} not found; job {job_id} has: {names}")
    etag = f'"{artifact.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    path = blobs.path(artifact.sha256)
    if not path.is_file():
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            detail=f"blob {artifact.sha256} of {name!r} is missing from the store")
    return FileResponse(path, media_type=artifact.media_type, filename=name, headers=headers)
