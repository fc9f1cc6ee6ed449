"""/v1/jobs/{id}/artifacts/{name}: immutable blobs, so the sha256 is a strong ETag."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from api.deps import BlobsDep, CurrentUser, SessionDep
from api.files import blob_response
from api.submission import get_own_job

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


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
    sha256, media_type = artifact.sha256, artifact.media_type
    # Give the database connection back before the file streams: the session would otherwise
    # hold it until the last byte reached a (slow) client, and 100 concurrent downloads would
    # starve every other request of the pool (the load test: 30 s waits, then 500s).
    session.close()
    return blob_response(request, blobs, sha256, media_type, name,
                         "private, max-age=31536000, immutable")
