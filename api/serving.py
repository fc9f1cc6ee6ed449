"""uvicorn's HTTP protocols with a deadline on request headers (`NADS_HEADER_TIMEOUT_S`).

uvicorn times out idle keep-alive connections, but not a request whose headers never end: a
client that opens a connection and sends a header line now and then holds the connection (and
its memory) for as long as it likes ("slowloris"). Here a request's headers must be complete
within the deadline, counted from the connection's start or from the first byte of each later
request on it; past it the connection gets a 408 naming the setting and is closed. Bodies are
not affected (uploads stream under their own limits).

Use: `uvicorn --http api.serving:HeaderTimeoutProtocol ...` (the deadline read from the
settings), or `uvicorn.Config(app, http=header_timeout_protocol(seconds))` (`server_config`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from store.settings import Settings, get_settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is optional for uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

SETTING = "NADS_HEADER_TIMEOUT_S"


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"detail": f"request headers: not complete within {seconds:g} s "
                                 f"({SETTING})"}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


class _HeaderDeadline:
    """Mixed into a uvicorn protocol: arms a timer while a request's headers are incomplete."""

    header_timeout: float | None = None  # None: the settings' header_timeout_s
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_timer: asyncio.TimerHandle | None = None

    def _deadline_s(self) -> float:
        return self.header_timeout if self.header_timeout is not None else \
            get_settings().header_timeout_s

    _awaiting_headers: Callable[[], bool]  # each protocol below: its parser mid-headers?

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._deadline_s(), self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _check_headers(self) -> None:
        if self._awaiting_headers():
            self._arm()
        else:
            self._disarm()

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_timeout_response(self._deadline_s()))
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class HeaderTimeoutH11(_HeaderDeadline, H11Protocol):
    """h11: headers are awaited while the peer's state is IDLE (no Request event yet)."""

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.transport.is_closing():
            self._check_headers()


if HttpToolsProtocol is not None:
    class HeaderTimeoutHttpTools(_HeaderDeadline, HttpToolsProtocol):
        """httptools: headers are awaited from a message's first byte to on_headers_complete."""

        _in_headers = False

        def _awaiting_headers(self) -> bool:
            return self._in_headers

        def on_message_begin(self) -> None:
            self._in_headers = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.transport.is_closing() and self._in_headers:
                self._arm()

    HeaderTimeoutProtocol: type = HeaderTimeoutHttpTools
else:  # pragma: no cover
    HeaderTimeoutProtocol = HeaderTimeoutH11


def header_timeout_protocol(seconds: float, base: type | None = None) -> type:
    """The protocol class (httptools when installed, else h11; or `base`) with a fixed
    deadline of `seconds`."""
    base = base or HeaderTimeoutProtocol
    return type(base.__name__, (base,), {"header_timeout": float(seconds)})


def server_config(app: FastAPI, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's Config for the API with the header deadline of `settings`; `kwargs` go to
    uvicorn.Config (host, port, log_level, timeout_keep_alive...)."""
    return uvicorn.Config(app, http=header_timeout_protocol(settings.header_timeout_s),
                          **kwargs)
