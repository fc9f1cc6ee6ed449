"""uvicorn's HTTP protocols with limits on what a client may make the server hold: the size of a
request's headers (`NADS_MAX_HEADER_BYTES`), the time they take (`NADS_HEADER_TIMEOUT_S`) and
the time its body takes (`NADS_BODY_TIMEOUT_S`, `NADS_BODY_MIN_RATE_BYTES_S`).

Headers. uvicorn times out idle keep-alive connections, but not a request whose headers never
end: a client that sends a header line now and then holds the connection (and its memory) for as
long as it likes ("slowloris"). Here a request's headers must be complete within the deadline,
counted from the connection's start or from the first byte of each later request on it (408 and
closed past it). Their size is bounded too: httptools keeps a header's value, and uvicorn the
URL, by appending each read to what came before, so one 100 MiB header without a key copied
gigabytes on the event loop and stalled every other client for 10 s. Past the limit the
connection gets a 431 naming the setting and is closed, after at most one read (<= 256 KiB)
more than the limit. A chunked body's trailers are headers too (and chunk extensions are bytes
no limit on the body counts): what a body's reads hold besides its data is bounded the same
way (httptools; h11 bounds both itself, with a 400).

Bodies. Once its headers are in, a request's body must keep coming: no read may be more than
`NADS_BODY_TIMEOUT_S` after the previous one, and the body's bytes must keep up with
`NADS_BODY_MIN_RATE_BYTES_S` after an allowance of `NADS_BODY_TIMEOUT_S` (as Apache's
mod_reqtimeout: every `rate` bytes buy one more second), so a client that trickles a byte a
second is cut off like one that sends nothing. Past either, the connection gets a 408 (unless a
response has started) and is closed; the route reading the body sees a disconnect, and an
upload's temporary file is removed (api/multipart.py). Time in which the server itself stopped
reading (flow control: the app was not consuming the body), or had not yet asked a client that
sent `Expect: 100-continue` for its body, is not counted against the client.

Use: `uvicorn --http api.serving:HeaderTimeoutProtocol ...` (the limits read from the
settings), or `uvicorn.Config(app, http=limited_protocol(settings))` (`server_config`).
"""

from __future__ import annotations

import asyncio
import json
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

MAX_READ_BYTES = 256 * 1024  # asyncio's largest read from a socket
READ_PAUSED_CHECK_S = 1.0  # how often a body deadline is looked at while the server is not reading


def _response(status: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


class _Limits:
    """Mixed into a uvicorn protocol: the header deadline and size, the body deadline. Each
    protocol below says whether its parser is mid-headers (`_awaiting_headers`) or mid-body
    (`_awaiting_body`, after the read was parsed)."""

    # None: from the settings (`uvicorn --http api.serving:HeaderTimeoutProtocol`)
    header_timeout: float | None = None
    max_header_bytes: int | None = None
    body_timeout: float | None = None
    body_min_rate: int | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: Any  # uvicorn's FlowControl
    cycle: Any  # uvicorn's RequestResponseCycle, None before the first request
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _mid_headers = False  # the last read left a request's headers incomplete
    _body_timer: asyncio.TimerHandle | None = None
    _body_start: float | None = None  # when the body began; None: no body awaited
    _body_last = 0.0  # when its last read arrived
    _body_bytes = 0
    _body_checked = 0.0
    _body_paused = False  # whether the server was not reading at the last look

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError

    def _awaiting_body(self) -> bool:
        raise NotImplementedError

    def _limit(self, name: str) -> Any:
        value = getattr(self, name)
        if value is not None:
            return value
        settings = get_settings()
        return {"header_timeout": settings.header_timeout_s,
                "max_header_bytes": settings.max_header_bytes,
                "body_timeout": settings.body_timeout_s,
                "body_min_rate": settings.body_min_rate_bytes_s}[name]

    # Headers: deadline and size -------------------------------------------------------------

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._limit("header_timeout"),
                                                      self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._refuse("408 Request Timeout", f"request headers: not complete within "
                     f"{self._limit('header_timeout'):g} s (NADS_HEADER_TIMEOUT_S)")

    def _refuse(self, status: str, detail: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_response(status, detail))
            self.transport.close()

    def _refuse_body(self, status: str, detail: str) -> None:
        """As `_refuse`, once the request's headers are in: the route may have answered."""
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is under way: only the connection ends
        else:
            self._refuse(status, detail)

    def _headers_too_large(self, data: bytes) -> bool:
        """Counts a read that continues a request's headers (the read in which a request
        starts may also carry its body, and is not counted: at most one read more than the
        limit); True (after a 431) past the limit, before the parser sees it."""
        if not self._mid_headers:
            return False
        self._header_bytes += len(data)
        limit = self._limit("max_header_bytes")
        if self._header_bytes <= limit:
            return False
        self._disarm()
        self._refuse("431 Request Header Fields Too Large", f"request headers: more than "
                     f"{limit:,} bytes (NADS_MAX_HEADER_BYTES)")
        return True

    # Body: deadline ---------------------------------------------------------------------------

    def _body_progress(self, data: bytes) -> None:
        """After a read was parsed: starts, advances or ends the body's clock."""
        if not self._awaiting_body():
            self._body_start = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            return
        now = self.loop.time()
        if self._body_start is None:  # this read ended the headers: the body starts now
            self._body_start, self._body_bytes, self._body_checked = now, 0, now
            self._body_paused = False
        else:
            self._body_bytes += len(data)
        self._body_last = now
        if self._body_timer is None:
            self._body_timer = self.loop.call_at(self._body_deadline(), self._body_check)

    def _body_deadline(self) -> float:
        timeout = self._limit("body_timeout")
        rate = self._limit("body_min_rate")
        return min(self._body_last + timeout,
                   self._body_start + timeout + self._body_bytes / rate)

    def _body_check(self) -> None:
        self._body_timer = None
        if self._body_start is None or self.transport.is_closing():
            return
        now = self.loop.time()
        paused = (self.flow is not None and self.flow.read_paused) or (
            self.cycle is not None and self.cycle.waiting_for_100_continue)
        if paused or self._body_paused:
            # The server stopped reading, or has not asked for the body: its wait. Paused at
            # the last look and reading now, the pause ended somewhere in between: the whole
            # interval is credited, or a client asked for its body just now (100 Continue)
            # would be refused at once (up to READ_PAUSED_CHECK_S counted against it).
            waited = now - self._body_checked
            self._body_start += waited
            self._body_last += waited
        self._body_paused = paused
        self._body_checked = now
        deadline = self._body_deadline()
        if paused or now < deadline:
            wait = READ_PAUSED_CHECK_S if paused else deadline - now
            self._body_timer = self.loop.call_later(wait, self._body_check)
            return
        took, self._body_start = now - self._body_start, None
        detail = (f"request body: {self._body_bytes:,} bytes in {took:.1f} s "
                  f"is too slow: a read at least every {self._limit('body_timeout'):g} s "
                  f"(NADS_BODY_TIMEOUT_S) and {self._limit('body_min_rate'):,} bytes/s after "
                  f"the first {self._limit('body_timeout'):g} s (NADS_BODY_MIN_RATE_BYTES_S)")
        self._refuse_body("408 Request Timeout", detail)

    # The protocol's hooks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _framing_too_large(self, data: bytes, continued: bool) -> bool:
        """A protocol whose parser accumulates what is not body in Python (httptools:
        trailers) says here, after a read of the body (`continued`: the body had begun before
        it), whether the body's framing passed its limit (and refuses it)."""
        return False

    def data_received(self, data: bytes) -> None:
        if self._headers_too_large(data):
            return
        continued = self._awaiting_body()
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing() or self._framing_too_large(data, continued):
            return
        self._mid_headers = self._awaiting_headers()
        if self._mid_headers:
            self._arm()
        else:
            self._header_bytes = 0
            self._disarm()
        self._body_progress(data)


class HeaderTimeoutH11(_Limits, H11Protocol):
    """h11: headers are awaited while the peer's state is IDLE (no Request event yet), the body
    while it is SEND_BODY. h11's own buffer limit (a 400) is set past ours plus one read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=(
            self._limit("max_header_bytes") + MAX_READ_BYTES))

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _awaiting_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY


if HttpToolsProtocol is not None:
    class HeaderTimeoutHttpTools(_Limits, HttpToolsProtocol):
        """httptools: headers are awaited from a message's first byte to on_headers_complete,
        the body from there to on_message_complete.

        A chunked body's trailers are headers too, which httptools accumulates the same way
        (a 100 MiB trailer stalled /healthz past 60 s): what a body's reads hold besides its
        data (chunk sizes, extensions, trailers) may not pass NADS_MAX_HEADER_BYTES plus 64
        bytes a chunk (431)."""

        _in_headers = False
        _in_body = False
        _body_wire = 0  # bytes of the reads that continued the body
        _body_data = 0  # of which data (on_body)
        _chunks = 0

        def _awaiting_headers(self) -> bool:
            return self._in_headers

        def _awaiting_body(self) -> bool:
            return self._in_body

        def on_message_begin(self) -> None:
            self._in_headers = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_headers, self._in_body = False, True
            self._body_wire = self._body_data = self._chunks = 0
            self._disarm()
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_data += len(body)
            super().on_body(body)

        def on_chunk_header(self) -> None:
            self._chunks += 1

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def _framing_too_large(self, data: bytes, continued: bool) -> bool:
            if not self._in_body:
                return False
            # the read that ended the headers: its body part counted as data alone
            self._body_wire = self._body_wire + len(data) if continued else self._body_data
            limit = self._limit("max_header_bytes")
            if self._body_wire - self._body_data <= limit + 64 * self._chunks:
                return False
            self._refuse_body("431 Request Header Fields Too Large", f"request body: its chunk "
                         f"framing and trailers pass {limit:,} bytes (NADS_MAX_HEADER_BYTES)")
            return True

    HeaderTimeoutProtocol: type = HeaderTimeoutHttpTools
else:  # pragma: no cover
    HeaderTimeoutProtocol = HeaderTimeoutH11


def limited_protocol(settings: Settings, base: type | None = None) -> type:
    """The protocol class (httptools when installed, else h11; or `base`) with the limits of
    `settings` fixed."""
    base = base or HeaderTimeoutProtocol
    return type(base.__name__, (base,), {
        "header_timeout": float(settings.header_timeout_s),
        "max_header_bytes": int(settings.max_header_bytes),
        "body_timeout": float(settings.body_timeout_s),
        "body_min_rate": int(settings.body_min_rate_bytes_s)})


def server_config(app: FastAPI, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's Config for the API with the limits of `settings`; `kwargs` go to
    uvicorn.Config (host, port, log_level, timeout_keep_alive...)."""
    return uvicorn.Config(app, http=limited_protocol(settings), **kwargs)
