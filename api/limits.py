"""Refuses oversize request bodies early (413 naming `NADS_MAX_BODY_BYTES`), before a route
reads, parses or validates them.

A body announced by Content-Length is judged by its header, before one byte of it is read; any
other body (a Transfer-Encoding, whatever codings it names: httptools reads `gzip, chunked` as
chunked) is read up to the limit and refused as soon as it passes it. The streamed upload
routes are exempt: they enforce their own, larger limit while they write to disk.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# (method, path) of the routes that stream their body to disk under their own limit.
STREAMED_UPLOADS = frozenset({("POST", "/v1/uploads"), ("POST", "/v1/architectures")})


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes outside `STREAMED_UPLOADS`."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in STREAMED_UPLOADS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no length, no coding: HTTP/1.1's empty body
            await self.app(scope, receive, send)
            return
        # Chunked, under any spelling the server reads as chunked (`gzip, chunked` is chunked
        # to httptools): buffer (at most `limit` bytes), then replay to the app.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body exceeds the limit of {self.limit:,} bytes "
                                     "(NADS_MAX_BODY_BYTES)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
