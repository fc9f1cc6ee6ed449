"""Immutable files under a strong ETag (the sha256): job artifacts and the public catalog.

From a directory store, FileResponse serves the file. From an S3 bucket (store/blobs_s3.py) the
API streams the bytes through itself with one S3 range GET, rather than redirecting to a
presigned URL: the client sees the same authentication (its API key, no URL that works for
anyone who holds it), the same headers (ETag, Cache-Control, Content-Disposition) and the same
304/206/416 answers as from a directory, and needs no route to the bucket, which may sit on a
network only the service's nodes reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from urllib.parse import quote

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from store.blobs import Blobs


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


def stream_response(request: Request, etag_value: str, size: int,
                    read: Callable[[int, int], Iterator[bytes]], media_type: str, name: str,
                    cache_control: str) -> Response:
    """`size` bytes that `read(start, end)` yields in chunks, streamed with the answers
    `file_response` gives a file: 304 on If-None-Match, one range (Range, If-Range on the ETag)
    as 206, 416 past the end, 400 for a malformed Range; several ranges get the whole body
    (RFC 9110 allows it). Streamed, a chunk at a time as the client takes them: a body made
    whole in memory stays there for as long as its client does not read (40 stalled anonymous
    connections held 205 MiB of the API's memory with a 4 MB body each)."""
    etag = f'"{etag_value}"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    headers["Content-Disposition"] = _disposition(name)
    asked = _one_range(request, etag, size, headers)
    if isinstance(asked, Response):
        return asked
    start, end, code = asked
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type=media_type)
    return StreamingResponse(read(start, end), status_code=code, headers=headers,
                             media_type=media_type)


def _one_range(request: Request, etag: str, size: int,
               headers: dict[str, str]) -> tuple[int, int, int] | Response:
    """(start, end, status) of what to send of `size` bytes: the one range asked for (Range,
    If-Range on `etag`) as 206, else all as 200 (several ranges too, which RFC 9110 allows);
    Content-Range and Content-Length set in `headers`. Or the answer: 400 for a malformed
    Range (as FileResponse), 416 past the end."""
    start, end, code = 0, size, status.HTTP_200_OK
    http_range, if_range = request.headers.get("range"), request.headers.get("if-range")
    if http_range is not None and (if_range is None or if_range == etag):
        try:
            ranges = FileResponse._parse_range_header(http_range, size)
        except MalformedRangeHeader as exc:
            return PlainTextResponse(exc.content, status_code=status.HTTP_400_BAD_REQUEST)
        except RangeNotSatisfiable:
            return PlainTextResponse("", status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
                                     headers={"Content-Range": f"bytes */{size}"})
        if len(ranges) == 1:
            (start, end), code = ranges[0], status.HTTP_206_PARTIAL_CONTENT
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    return start, end, code


def _disposition(name: str) -> str:
    quoted = quote(name)
    return (f'attachment; filename="{name}"' if quoted == name
            else f"attachment; filename*=utf-8''{quoted}")


def blob_response(request: Request, blobs: Blobs, sha256: str, media_type: str, name: str,
                  cache_control: str) -> Response:
    """A blob by `file_response` from a directory store; from a remote one, streamed with the
    same headers: 304 on If-None-Match, one range (Range, If-Range on the ETag) as 206 from an
    S3 range GET, 416 past the end, 400 for a malformed Range as FileResponse; several ranges
    get the whole blob (200), which RFC 9110 allows."""
    if not blobs.remote:
        return file_response(request, blobs.path(sha256), sha256, media_type, name,
                             cache_control)
    if etag_matches(request.headers.get("if-none-match"), f'"{sha256}"'):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED,
                        headers={"ETag": f'"{sha256}"', "Cache-Control": cache_control})
    size = blobs.size(sha256)
    if size is None:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            detail=f"blob {sha256} of {name!r} is missing from the store")
    return stream_response(request, sha256, size, partial(blobs.read_range, sha256),
                           media_type, name, cache_control)
