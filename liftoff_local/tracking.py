"""The local tracking API: what the pipeline accepted and what it quarantined, for end-to-end
tests of tracking code (what Snowplow Micro is used for).

The supervisor reads the event stream and the dead-letter stream with ordered (ephemeral,
unacknowledged) JetStream consumers, so it sees exactly what the collector's 200 covered and
every quarantined event with its reason, without being a consumer the pipeline waits for.
The most recent events are kept in memory (and rebuilt from the stream after a restart);
``POST /reset`` sets a mark at the current stream positions, kept on disk, and everything
before it is hidden from then on. Loopback only; no credentials are involved.

Routes (JSON):

- ``GET /`` — counts and the routes;
- ``GET /events`` — accepted events, oldest first; filters ``source``, ``type``, ``event``
  (track event name, or page/screen name), ``userId``, ``anonymousId``, ``messageId``;
  ``limit`` (default 100, the most recent);
- ``GET /quarantine`` — quarantined and dead-lettered events with ``reason``, ``consumer``
  (``collector`` for events rejected at the door, else the consumer that parked it); the same
  filters plus ``consumer``;
- ``POST /reset`` — forget everything seen so far.

Reads are consistent with the collector: every query first waits (up to 2 s) until the views
hold everything the streams held when it arrived, so an event whose request got a 200 before
the query is in its answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from services.quarantine import event_as_json, header_index

log = logging.getLogger("liftoff.local.tracking")

CAPACITY = 10_000
FILTERS = ("source", "type", "event", "userId", "anonymousId", "messageId")


@dataclass
class Entry:
    sequence: int
    subject: str
    event: Any
    """The event as JSON (a dict), or its text when it was not JSON."""
    headers: dict[str, str] = field(default_factory=dict)

    def source(self) -> str | None:
        if isinstance(self.event, dict):
            liftoff = self.event.get("liftoff")
            if isinstance(liftoff, dict) and isinstance(liftoff.get("source"), str):
                return liftoff["source"]
        return self.headers.get("Liftoff-Source")

    def field(self, name: str) -> Any:
        if name == "source":
            return self.source()
        if not isinstance(self.event, dict):
            return None
        if name == "event":
            return self.event.get("event") or self.event.get("name")
        return self.event.get(name)

    def matches(self, filters: Mapping[str, str]) -> bool:
        for name, wanted in filters.items():
            if name == "consumer":
                if self.headers.get("Liftoff-Consumer") != wanted:
                    return False
            elif str(self.field(name)) != wanted:
                return False
        return True


class TrackingView:
    """Recent entries of one stream after the reset mark; thread-safe for the HTTP server."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._entries: deque[Entry] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.mark = 0
        self.last_sequence = 0

    def add(self, entry: Entry) -> None:
        with self._lock:
            self.last_sequence = max(self.last_sequence, entry.sequence)
            if entry.sequence > self.mark:
                self._entries.append(entry)

    def reset(self) -> int:
        with self._lock:
            self.mark = self.last_sequence
            self._entries.clear()
            return self.mark

    def query(self, filters: Mapping[str, str], limit: int) -> list[Entry]:
        with self._lock:
            found = [e for e in self._entries if e.matches(filters)]
        return found[-limit:] if limit else []

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _decode(data: bytes) -> Any:
    # Strict JSON or the text: Python's json reads 1e999 as inf and writes it back as
    # Infinity, which JSON.parse refuses.
    return event_as_json(data)


async def follow(js: Any, stream: str, subjects: str, view: TrackingView) -> Any:
    """Feed `view` from `stream` with an ordered consumer, starting after the reset mark (at
    most the last CAPACITY messages)."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    info = await js.stream_info(stream)
    start = max(view.mark + 1, info.state.last_seq - CAPACITY + 1, info.state.first_seq, 1)
    view.last_sequence = max(view.last_sequence, info.state.last_seq)

    async def on_message(message: Any) -> None:
        headers = dict(message.headers or {})
        view.add(
            Entry(message.metadata.sequence.stream, message.subject, _decode(message.data), headers)
        )

    return await js.subscribe(
        subjects,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
    )


async def caught_up(js: Any, views: Mapping[str, TrackingView], deadline: float = 2.0) -> None:
    """Wait until each view has seen its stream's last sequence as of now (or `deadline`)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    for stream, view in views.items():
        last = (await js.stream_info(stream)).state.last_seq
        while view.last_sequence < last and loop.time() < give_up:
            await asyncio.sleep(0.005)


def _event_json(entry: Entry) -> dict[str, Any]:
    return {"sequence": entry.sequence, "subject": entry.subject, "event": entry.event}


def _quarantine_json(entry: Entry) -> dict[str, Any]:
    h = entry.headers
    document: dict[str, Any] = {
        "sequence": entry.sequence,
        "consumer": h.get("Liftoff-Consumer"),
        "reason": h.get("Liftoff-Reason"),
        "source": entry.source(),
        "messageId": h.get("Liftoff-Message-Id"),
        "event": entry.event,
    }
    if "Liftoff-Index" in h:
        document["index"] = header_index(h)  # an integer, as in the collector's answers
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


class TrackingApi:
    """The HTTP side (stdlib server in a thread: requests only read the views)."""

    def __init__(
        self,
        events: TrackingView,
        quarantine: TrackingView,
        on_reset: Callable[[], None],
        host: str,
        port: int,
    ) -> None:
        self.events, self.quarantine, self.on_reset = events, quarantine, on_reset
        self.catch_up: Callable[[], None] = lambda: None
        """Blocks until the views hold everything the streams had when it was called: a
        query made after a 200 from the collector includes that request's events."""
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "liftoff-local"

            def log_message(self, *args: Any) -> None:  # quiet: the status line is the UI
                pass

            def do_GET(self) -> None:
                api._get(self)

            def do_POST(self) -> None:
                api._post(self)

            def do_DELETE(self) -> None:
                api._post(self)

            do_PUT = do_PATCH = do_DELETE

            def send_error(self, code: int, message: str | None = None, explain: Any = None):
                # The stdlib answers malformed requests (bad request line, URI too long) with
                # HTML; this API answers JSON, always.
                self.close_connection = True
                _send(self, code, {"error": message or self.responses.get(code, ("",))[0]})

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _get(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        self.catch_up()
        if path == "/":
            return _send(request, 200, self._summary())
        if path not in ("/events", "/quarantine"):
            return _send(request, 404, {"error": f"no route {path}", "routes": _ROUTES})
        allowed = (*FILTERS, "limit", *(("consumer",) if path == "/quarantine" else ()))
        unknown = sorted(set(query) - set(allowed))
        if unknown:
            return _send(
                request,
                400,
                {"error": f"unknown parameter(s) {unknown}", "allowed": list(allowed)},
            )
        try:
            limit = int(query.pop("limit", "100"))
            if not 0 <= limit <= CAPACITY:
                raise ValueError
        except ValueError:
            return _send(
                request, 400, {"error": f"limit must be a whole number from 0 to {CAPACITY}"}
            )
        if path == "/events":
            found = self.events.query(query, limit)
            return _send(
                request, 200, {"count": len(found), "events": [_event_json(e) for e in found]}
            )
        found = self.quarantine.query(query, limit)
        return _send(
            request, 200, {"count": len(found), "quarantined": [_quarantine_json(e) for e in found]}
        )

    def _post(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path.rstrip("/")
        if request.command == "POST" and path == "/reset":
            self.catch_up()
            self.on_reset()
            return _send(request, 200, {"reset": True, **self._summary()})
        return _send(
            request,
            405 if path in ("", "/events", "/quarantine", "/reset") else 404,
            {"error": f"{request.command} {path or '/'} is not a route", "routes": _ROUTES},
        )

    def _summary(self) -> dict[str, Any]:
        return {
            "events": len(self.events),
            "quarantined": len(self.quarantine),
            "routes": _ROUTES,
        }


_ROUTES = ["GET /events", "GET /quarantine", "POST /reset"]


def _send(request: BaseHTTPRequestHandler, status: int, document: Any) -> None:
    body = json.dumps(document, default=str).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


class ResetMarks:
    """The reset marks, kept in the data directory so a restart hides what was reset."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
            return {k: int(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def save(self, marks: Mapping[str, int]) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(dict(marks), sort_keys=True))
        temporary.replace(self.path)
