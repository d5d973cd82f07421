"""The local tracking API over HTTP (stdlib server, a thread per connection; requests only
read the views of :mod:`liftoff_local.tracking`).

Routes (JSON):

- ``GET /`` — what each view holds (entries, bytes, dropped) against its bounds, and the routes;
- ``GET /events`` — accepted events, oldest first; filters ``source``, ``type``, ``event``
  (track event name, or page/screen name), ``userId``, ``anonymousId``, ``messageId``;
  ``limit`` (default 100, the most recent);
- ``GET /quarantine`` — quarantined and dead-lettered events with ``reason``, ``consumer``
  (``collector`` for events rejected at the door, else the consumer that parked it); the same
  filters plus ``consumer``;
- ``POST /reset`` — forget everything seen so far.

An answer is at most :data:`ANSWER_BYTES`: the most recent matches that fit, with
``omitted`` (matches left out for that bound) and ``dropped`` (entries the view no longer
holds) and a ``note`` when either is not zero.

**Exposure.** It listens on 127.0.0.1 and holds no credential, like the services a developer
runs on a laptop; what reaches loopback from elsewhere is refused: a request whose ``Host`` is
not 127.0.0.1/localhost/[::1] with this port (a web page reaching loopback through DNS
rebinding), and any request from another origin (``Origin`` not this API's own, or
``Sec-Fetch-Site`` cross-site/same-site: a page's form or ``fetch`` POSTing ``/reset``).
Scripts and test runners send neither header. At most :attr:`ServerLimits.max_connections`
connections are served at once (more get a 503), each read or write times out, and a
connection that has not finished within :attr:`ServerLimits.deadline_seconds` is closed.

**Extensions** (:mod:`liftoff_local.debugger`) add routes behind the same checks. A page
among them (:attr:`TrackingApi.pages`) may also be opened by a link from another site (a
top-level navigation: its HTML holds no data, and it is never framed); what it then asks
for is same-origin. A long-lived answer (a live stream) leaves the connection pool and its
deadline (:meth:`Handler.long_lived`) for bounds of its own.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from liftoff_local.tracking import FILTERS, MAX_ENTRIES, Entry, TrackingView
from services.collector.quarantine import header_index

ANSWER_BYTES = 8 * 1024 * 1024
ROUTES = ["GET /events", "GET /quarantine", "POST /reset"]
_OWN_SITE = ("same-origin", "none")


class Extension(Protocol):
    """More routes on the tracking API's port, behind its Host and Origin checks."""

    def handles(self, path: str) -> bool: ...

    def get(self, request: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 16
    io_timeout_seconds: float = 5.0
    """Per read or write on a connection."""
    deadline_seconds: float = 15.0
    """A whole connection: request, catching up with the streams (≤ 2 s), the answer."""
    answer_bytes: int = ANSWER_BYTES


class _BoundedServer(ThreadingHTTPServer):
    """At most `max_connections` handler threads; a connection over that gets a 503."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self._detached = threading.local()
        self.max_connections = max_connections
        self.refused = 0
        super().__init__(address, handler)

    def detach(self) -> None:
        """From a handler thread: its connection stays open for long (a live stream, bounded
        by its own limit), so its slot goes back to the pool now."""
        if not getattr(self._detached, "yes", False):
            self._detached.yes = True
            self._slots.release()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            body = json.dumps({"error": f"busy: {self.max_connections} connections at once"})
            with contextlib.suppress(OSError):  # it is closed next anyway
                request.settimeout(0.5)
                request.sendall(_response_bytes(503, body.encode()))
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that went away, or was cut off: nothing to report
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self._detached.yes = False
        try:
            super().process_request_thread(request, client_address)
        finally:
            if not self._detached.yes:
                self._slots.release()


class TrackingApi:
    def __init__(
        self,
        events: TrackingView,
        quarantine: TrackingView,
        on_reset: Callable[[], None],
        host: str,
        port: int,
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        self.events, self.quarantine, self.on_reset = events, quarantine, on_reset
        self.limits = limits
        self.catch_up: Callable[[], None] = lambda: None
        """Blocks until the views hold everything the streams had when it was called: a
        query made after a 200 from the collector includes that request's events."""
        self.status: dict[str, Any] = {}
        """The status line's last counts (accepted, lag per consumer, ...), for the debugger."""
        self.extensions: list[Extension] = []
        self.pages: set[str] = set()
        """Paths of HTML pages a link from another site may open (a top-level GET)."""
        self.server = _BoundedServer((host, port), _handler(self), limits.max_connections)
        self.port = self.server.server_address[1]
        names = ("127.0.0.1", "localhost", "[::1]")
        self.hosts = {f"{name}:{self.port}" for name in names}
        self.origins = {f"http://{host}" for host in self.hosts}
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        for extension in self.extensions:
            extension.close()
        self.server.shutdown()
        self.server.server_close()

    def refusal(self, request: BaseHTTPRequestHandler) -> str | None:
        """Why a request that reached loopback is not from this machine's scripts, or None."""
        host = (request.headers.get("Host") or "").strip().lower()
        if host not in self.hosts:
            return (
                f"Host {host!r} is not this API's: use http://127.0.0.1:{self.port} (requests "
                "for other names are refused, as a web page's DNS rebinding would send them)"
            )
        origin = request.headers.get("Origin")
        site = request.headers.get("Sec-Fetch-Site")
        if (origin is not None and origin.lower() not in self.origins) or (
            site is not None and site.lower() not in _OWN_SITE and not self._opens_page(request)
        ):
            return (
                f"cross-origin request refused (Origin {origin!r}, Sec-Fetch-Site {site!r}): "
                "call the tracking API from a script or test runner, not from a web page"
            )
        return None

    def _opens_page(self, request: BaseHTTPRequestHandler) -> bool:
        """A link from another site opening one of the pages (its HTML only)."""
        h = request.headers
        return (
            request.command == "GET"
            and (h.get("Sec-Fetch-Mode") or "").lower() == "navigate"
            and (h.get("Sec-Fetch-Dest") or "").lower() == "document"
            and (urlsplit(request.path).path.rstrip("/") or "/") in self.pages
        )

    def get(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        if path == "/":
            self.catch_up()
            return _send(request, 200, self.summary())
        for extension in self.extensions:
            if extension.handles(path):
                return extension.get(request, path, query)
        if path not in ("/events", "/quarantine"):
            return _send(request, 404, {"error": f"no route {path}", "routes": ROUTES})
        allowed = (*FILTERS, "limit", *(("consumer",) if path == "/quarantine" else ()))
        unknown = sorted(set(query) - set(allowed))
        if unknown:
            problem = {"error": f"unknown parameter(s) {unknown}", "allowed": list(allowed)}
            return _send(request, 400, problem)
        try:
            limit = int(query.pop("limit", "100"))
            if not 0 <= limit <= MAX_ENTRIES:
                raise ValueError
        except ValueError:
            problem = {"error": f"limit must be a whole number from 0 to {MAX_ENTRIES}"}
            return _send(request, 400, problem)
        self.catch_up()
        if path == "/events":
            body = self.answer(self.events, query, limit, "events", _event_json)
        else:
            body = self.answer(self.quarantine, query, limit, "quarantined", _quarantine_json)
        _send_bytes(request, 200, body)

    def answer(
        self,
        view: TrackingView,
        filters: dict[str, str],
        limit: int,
        key: str,
        render: Callable[[Entry], dict[str, Any]],
    ) -> bytes:
        """The most recent matches that fit in the answer's bytes, oldest first."""
        found = view.query(filters, limit)
        budget = self.limits.answer_bytes - 1024  # the envelope and its note
        parts: list[bytes] = []
        for entry in reversed(found.entries):
            part = json.dumps(render(entry), default=str).encode()
            if len(part) + 1 > budget:
                break
            budget -= len(part) + 1
            parts.append(part)
        omitted = len(found.entries) - len(parts)
        envelope: dict[str, Any] = {"count": len(parts), "omitted": omitted}
        envelope["dropped"] = found.dropped
        notes = _notes(key, omitted, found.dropped, view, self.limits.answer_bytes)
        if notes:
            envelope["note"] = " ".join(notes)
        head = json.dumps(envelope)[:-1].encode()
        return head + f', "{key}": ['.encode() + b", ".join(reversed(parts)) + b"]}"

    def post(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path.rstrip("/")
        if request.command == "POST" and path == "/reset":
            self.catch_up()
            self.on_reset()
            return _send(request, 200, {"reset": True, **self.summary()})
        return _send(
            request,
            405 if path in ("", "/events", "/quarantine", "/reset") else 404,
            {"error": f"{request.command} {path or '/'} is not a route", "routes": ROUTES},
        )

    def summary(self) -> dict[str, Any]:
        return {
            "events": len(self.events),
            "quarantined": len(self.quarantine),
            "views": {"events": self.events.stats(), "quarantine": self.quarantine.stats()},
            "answerMaxBytes": self.limits.answer_bytes,
            "refusedConnections": self.server.refused,
            "routes": ROUTES,
        }


def _notes(key: str, omitted: int, dropped: int, view: TrackingView, answer: int) -> list[str]:
    notes = []
    if omitted:
        notes.append(
            f"{omitted} older matching {key} left out: an answer is at most "
            f"{answer // 1024 // 1024} MiB; narrow the filters or lower limit."
        )
    if dropped:
        notes.append(
            f"{dropped} {key} since the last reset are no longer held (the view keeps the most "
            f"recent {view.max_entries} and {view.max_bytes // 1024 // 1024} MiB): matches "
            "among them are missing here; the warehouse and the archive have every event."
        )
    return notes


def _handler(api: TrackingApi) -> type[BaseHTTPRequestHandler]:
    limits = api.limits

    class Handler(BaseHTTPRequestHandler):
        server_version = "liftoff-local"
        timeout = limits.io_timeout_seconds  # per read/write (StreamRequestHandler.setup)

        def setup(self) -> None:
            super().setup()
            # The whole connection is bounded too: a client trickling bytes below the
            # per-read timeout is cut off here.
            self._deadline = threading.Timer(limits.deadline_seconds, self._expire)
            self._deadline.daemon = True
            self._deadline.start()

        def _expire(self) -> None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def long_lived(self) -> None:
            """This connection stays open (a live stream with bounds of its own): it leaves
            the pool of max_connections and its deadline; each read and write still times
            out after io_timeout_seconds."""
            self._deadline.cancel()
            self.server.detach()  # type: ignore[attr-defined]

        def finish(self) -> None:
            self._deadline.cancel()
            with contextlib.suppress(OSError):  # a client gone, or cut off by the deadline
                super().finish()

        def log_message(self, *args: Any) -> None:  # quiet: the status line is the UI
            pass

        def do_GET(self) -> None:
            refused = api.refusal(self)
            return _send(self, 403, {"error": refused}) if refused else api.get(self)

        def do_POST(self) -> None:
            refused = api.refusal(self)
            return _send(self, 403, {"error": refused}) if refused else api.post(self)

        do_PUT = do_PATCH = do_DELETE = do_POST

        def send_error(self, code: int, message: str | None = None, explain: Any = None) -> None:
            # The stdlib answers malformed requests (bad request line, URI too long) with
            # HTML; this API answers JSON, always.
            self.close_connection = True
            _send(self, code, {"error": message or self.responses.get(code, ("",))[0]})

    return Handler


def _event_json(entry: Entry) -> dict[str, Any]:
    return {"sequence": entry.sequence, "subject": entry.subject, "event": entry.event}


def _quarantine_json(entry: Entry, event: bool = True) -> dict[str, Any]:
    """The quarantine's headers as JSON, with the event decoded (`event`) or without."""
    h = entry.headers
    document: dict[str, Any] = {
        "sequence": entry.sequence,
        "consumer": h.get("Liftoff-Consumer"),
        "reason": h.get("Liftoff-Reason"),
        "source": entry.fields.get("source"),
        "messageId": h.get("Liftoff-Message-Id"),
    }
    if event:
        document["event"] = entry.event
    if "Liftoff-Index" in h:
        document["index"] = header_index(dict(h))  # an integer, as in the collector's answers
    for header, name in (
        ("Liftoff-Code", "code"),
        ("Liftoff-Field", "field"),
        ("Liftoff-Route", "route"),
        ("Liftoff-Received-At", "receivedAt"),
        ("Liftoff-Position", "position"),
    ):
        if header in h:
            document[name] = h[header]
    return document


def _response_bytes(status: int, body: bytes) -> bytes:
    reason = {503: "Service Unavailable"}.get(status, "")
    return (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _send(request: BaseHTTPRequestHandler, status: int, document: Any) -> None:
    _send_bytes(request, status, json.dumps(document, default=str).encode())


def _send_bytes(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)
