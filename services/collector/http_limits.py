"""HTTP-level limits for the collector: uvicorn's httptools protocol plus what it lacks.

uvicorn 0.54 with httptools has no bound on the size of a request's headers (llhttp parses any
length and httptools buffers it), no timeout while a request's headers or body arrive (only a
keep-alive timeout *between* requests), and its ``limit_concurrency`` answers 503 only once a
request's headers are complete, so connections that never finish them are never counted out.
A slow or huge request could hold memory and a connection slot forever (slowloris). This
subclass adds, per worker process (:class:`services.collector.config.HttpLimits`):

- header size: request line + headers larger than ``max_header_bytes`` → 431 and close;
- trailers: a chunked request's trailer section (and chunk framing) is bounded the same way
  (431 and close), and its fields are dropped: uvicorn appends them to the very list the
  request's scope holds as its headers, so a trailer ``Authorization`` or ``Content-Encoding``
  would act as a header (httptools buffers a field until it ends, quadratically);
- header timeout: headers not complete within ``header_timeout_seconds`` of the connection (or
  of a keep-alive request's first byte) → 408 and close;
- body timeout: body not complete within ``body_timeout_seconds`` after the headers → close
  (the app sees a disconnect and publishes nothing);
- connections: at ``max_connections`` open ones, a new connection takes the place of the
  oldest one that has no request in progress (idle, or still sending its headers: closed, with
  a 503 if it had sent anything); only when every connection holds a request is the new one
  closed at once. Counting connections that never finish their headers and refusing newcomers
  let ~520 slow sockets (behind a load balancer: one client) take ingestion offline; shedding
  the oldest waiter means a slow client can hold a slot only until newcomers need it, while a
  complete request, whose headers arrive in one read, is never waiting for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("liftoff.http")
LOG_EVERY_SECONDS = 10.0
"""Connections shed or refused are logged at most this often, with counts (an attack would
otherwise write a line per connection)."""


class _Tally:
    """Counts of one kind of event, logged at most every LOG_EVERY_SECONDS."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.logged_at = 0.0

    def add(self, **fields: Any) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY_SECONDS:
            log.warning(self.message, extra={"fields": {**fields, "count": self.count}})
            self.logged_at, self.count = now, 0


_shed = _Tally("connections shed to make room: oldest without a request in progress")
_refused = _Tally("connections refused: every open connection holds a request")


def _json_answer(status: str, code: str, message: str) -> bytes:
    """A complete HTTP response in the collector's error shape, then the connection closes."""
    body = json.dumps(
        {"success": False, "code": code, "message": message}, separators=(",", ":")
    ).encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        *args: Any,
        max_header_bytes: int = 64 * 1024,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_connections: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self._in_headers = True
        self._header_bytes = 0
        self._bytes_since_body = 0
        """Bytes read after the headers since the body last advanced: chunk framing and the
        trailer section, which httptools buffers until each field ends."""
        self._trailer_bytes = 0
        self._request_refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._waiting_since = 0.0
        """When this connection last started waiting for a request (connect, or the end of
        the previous one): the oldest waiter is shed first."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._shed_oldest_waiter():
            _refused.add(limit=self.max_connections)
            # Never registered: connection_lost's bookkeeping below has nothing to undo.
            self.transport = transport
            self._refused = True
            transport.abort()
            return
        super().connection_made(transport)
        self._waiting_since = self.loop.time()
        self._arm(self.header_timeout, self._header_timed_out)

    def _waiting(self) -> bool:
        """No request in progress: idle, or still receiving a request's headers."""
        return self._in_headers and (self.cycle is None or self.cycle.response_complete)

    def _shed_oldest_waiter(self) -> bool:
        waiting = [
            other
            for other in self.connections
            if isinstance(other, LimitedHttpToolsProtocol) and other._waiting()
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda other: other._waiting_since)
        _shed.add(limit=self.max_connections)
        # Counted out now: the transport reports the loss only on a later loop iteration.
        self.connections.discard(oldest)
        if oldest._header_bytes:
            oldest._refuse(
                "503 Service Unavailable",
                "overloaded",
                "too many connections: this one had not finished its headers; retry",
                quiet=True,
            )
        else:
            oldest.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            if self._timer is None:  # first byte of a keep-alive request
                self._arm(self.header_timeout, self._header_timed_out)
            self._header_bytes += len(data)
        else:
            self._bytes_since_body += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        # Still inside the headers after this chunk: everything counted so far is header bytes.
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._refuse_headers_too_large()
        elif not self._in_headers and self._bytes_since_body > self.max_header_bytes:
            self._refuse_trailers_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_headers:
            super().on_header(name, value)
            return
        # A trailer field: counted like a header, then dropped. Refused here, before the
        # parser can report the message complete in this same read.
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._refuse_trailers_too_large()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        # Headers that arrived whole in one read: count them too.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_header_bytes:
            self._refuse_headers_too_large()
            return
        super().on_headers_complete()
        self._arm(self.body_timeout, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        self._bytes_since_body = 0
        if self.cycle is not None and not self._request_refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._waiting_since = self.loop.time()
        self._in_headers = True
        self._header_bytes = self._bytes_since_body = self._trailer_bytes = 0
        # A refused request never completes: its app sees a disconnect and publishes nothing.
        if self.cycle is not None and not self._request_refused:
            super().on_message_complete()

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: str, code: str, message: str, quiet: bool = False) -> None:
        # The parser may still call back in this read (body, message complete): those
        # callbacks belong to a request that is over.
        self._request_refused = True
        self._disarm()
        if not quiet:
            log.warning("request refused", extra={"fields": {"status": status[:3], "code": code}})
        if not self.transport.is_closing():
            self.transport.write(_json_answer(status, code, message))
            self.transport.close()

    def _refuse_headers_too_large(self) -> None:
        self._refuse(
            "431 Request Header Fields Too Large",
            "headers_too_large",
            f"request line and headers exceed {self.max_header_bytes} bytes",
        )

    def _refuse_trailers_too_large(self) -> None:
        self._refuse(
            "431 Request Header Fields Too Large",
            "trailers_too_large",
            f"request trailers (with chunk framing) exceed {self.max_header_bytes} bytes",
        )

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to bytes that are not HTTP, in the collector's JSON error shape. It
        # calls this inside its `except HttpParserError`: the parser's reason names what is
        # wrong ("Invalid character in Content-Length"), so say it.
        error = sys.exc_info()[1]
        reason = f"request is not valid HTTP/1.1: {error}" if error is not None else msg
        self._refuse("400 Bad Request", "malformed_http", reason)

    def _header_timed_out(self) -> None:
        self._timer = None
        if self._header_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            # Nothing sent at all (an idle new connection): just close it.
            self.transport.close()
            return
        self._refuse(
            "408 Request Timeout",
            "header_timeout",
            f"request headers not received within {self.header_timeout:g} s",
        )

    def _body_timed_out(self) -> None:
        self._timer = None
        log.warning("request body not received in time: connection closed")
        # The app's receive() then reports a disconnect: nothing of the request is published.
        self.transport.close()
