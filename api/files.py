"""Immutable files under a strong ETag (the sha256): job artifacts and the public catalog."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import FileResponse


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in candidates or etag in candidates


def file_response(request: Request, path: Path, etag_value: str, media_type: str, name: str,
                  cache_control: str) -> Response:
    """An immutable file under a strong ETag: 304 on If-None-Match, Range/If-Range by
    FileResponse. Shared by job artifacts and the public catalog."""
    etag = f'"{etag_value}"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if not path.is_file():
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            detail=f"blob {etag_value} of {name!r} is missing from the store")
    return FileResponse(path, media_type=media_type, filename=name, headers=headers)
