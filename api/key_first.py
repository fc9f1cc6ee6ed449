"""Checks a job submission's API key before its body is read (401 otherwise, body unread).

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, the
key's check among them: without this, an anonymous POST of 32 MB (NADS_MAX_BODY_BYTES) of
`[{},{},...]` held 810 MB of the API's memory (10.6 M dicts) and its event loop for seconds
before its 401. The routes that take a JSON body are the submissions (`POST /v1/jobs/<kind>`);
the streamed uploads read their body inside the route, after their dependencies. The route's
own dependency checks the key again (`api/deps.py`): this only answers earlier.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import MISSING_KEY, UNKNOWN_KEY
from store.auth import find_key
from store.db import get_sessionmaker


class KeyBeforeBody:
    """ASGI middleware: 401 for a POST to one of `paths` without a known, unrevoked key,
    before one byte of its body is read."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"].rstrip("/") not in self.paths):
            await self.app(scope, receive, send)
            return
        # as fastapi.security.HTTPBearer reads it: "<scheme> <credentials>", scheme any case
        # the first Authorization header, as the route's HTTPBearer reads it (Starlette's
        # Headers.get): the check and the route must read the same one
        header = next((value for name, value in scope.get("headers") or []
                       if name == b"authorization"), b"")
        scheme, _, credentials = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            await _refuse(send, MISSING_KEY)
            return
        url = scope["app"].state.settings.resolved_database_url
        if not await run_in_threadpool(_known, url, credentials):
            await _refuse(send, UNKNOWN_KEY)
            return
        await self.app(scope, receive, send)


def _known(database_url: str, key: str) -> bool:
    with get_sessionmaker(database_url)() as session:
        return find_key(session, key) is not None


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer"),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
