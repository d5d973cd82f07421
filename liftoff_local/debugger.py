"""The debugger: a live page of what local mode accepts and quarantines, on the tracking
API's port (``/debugger``), for people who would rather look than read JSON.

The page (``liftoff_local/debugger_page/``: plain HTML, CSS and JavaScript, no dependency,
nothing loaded from elsewhere) follows ``GET /debugger/live``, a server-sent event stream:

- ``hello`` — the stack, its sources, the filters in force, the bounds;
- ``entries`` — accepted and quarantined events, oldest first, each with the fields the list
  shows and its JSON exactly as the stream holds it (``raw``); ``missed`` counts matching
  entries it did not send (the page keeps at most ``backlog``) and, an upper bound, entries
  the view let go before this reader saw them;
- ``reload`` — what the page holds is no longer what the views hold (a reset, a new stream
  after ``--fresh``, quarantined events deleted by a replay): it starts again from the
  entries that follow;
- ``stats`` — every second: the status line's counts (accepted, lag per consumer,
  quarantined, dead-lettered, warehouse rows), what each view holds and the last two
  minutes' events per second.

Every message carries ``id:`` = where the reader is (``<events seq>-<quarantine seq>-<events
mark>-<quarantine mark>-<when the events stream was created>``). After a disconnection (local
mode restarted, say) the browser sends it back as ``Last-Event-ID`` (or the page as
``after=``) and the stream resumes after it: nothing the views still hold is lost or sent
twice.

Filters are the page's URL parameters, applied here so the page's bounded list holds
matches only: ``show`` (``accepted`` / ``quarantined``), ``source``, ``type``, ``event``
(track event, or page/screen name), ``user`` (``userId`` or ``anonymousId``), all exact, and
``text`` (case-insensitive, anywhere in the event's JSON or the quarantine's reason).

**Bounded.** A reader costs a thread and a cursor: it reads the tracking views, which are
bounded already, and holds at most one message (:data:`MESSAGE_BYTES`) of its own. At most
:data:`MAX_STREAMS` streams at once (more get a 503); a write that stalls for the API's
I/O timeout (a page that stopped reading) ends the stream, and the page resumes where it was.
A stream is not one of the API's pooled connections and has no overall deadline.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from liftoff_local.tracking import LISTED, MAX_ENTRIES, Entry
from liftoff_local.tracking_api import TrackingApi, _quarantine_json, _send

PATH = "/debugger"
LIVE = f"{PATH}/live"
PAGE_DIR = Path(__file__).with_name("debugger_page")
ASSETS = {
    PATH: ("index.html", "text/html; charset=utf-8"),
    f"{PATH}/debugger.js": ("debugger.js", "text/javascript; charset=utf-8"),
    f"{PATH}/debugger.css": ("debugger.css", "text/css; charset=utf-8"),
    f"{PATH}/icon.svg": ("icon.svg", "image/svg+xml"),
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this origin's own files: an event that slipped past the page's escaping could run
nothing and load nothing."""

MAX_STREAMS = 8
BACKLOG = 5_000
"""Entries sent on connecting (the page keeps as many); a page may ask for up to MAX_ENTRIES."""
MESSAGE_BYTES = 256 * 1024
MESSAGE_ENTRIES = 500
COALESCE_SECONDS = 0.02
"""After a change, wait this long for more before reading: fewer, larger messages."""
STATS_SECONDS = 1.0
HISTORY_SECONDS = 120
TEXT_MAX = 200
SHOW = ("", "accepted", "quarantined")
PARAMETERS = ("show", "source", "type", "event", "user", "text", "after", "backlog")


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Filters:
    show: str = ""
    source: str = ""
    type: str = ""
    event: str = ""
    user: str = ""
    text: str = ""

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filters:
        unknown = sorted(set(query) - set(PARAMETERS))
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; allowed: {list(PARAMETERS)}")
        filters = cls(**{name: query.get(name, "") for name in cls.__dataclass_fields__})
        if filters.show not in SHOW:
            raise BadRequest(f"show must be one of {[s for s in SHOW if s]} (or absent)")
        if len(filters.text) > TEXT_MAX:
            raise BadRequest(f"text is at most {TEXT_MAX} characters")
        return filters

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def wants(self, kind: str) -> bool:
        return not self.show or self.show == ("accepted" if kind == "e" else "quarantined")

    def matches(self, entry: Entry) -> bool:
        fields = entry.fields
        for name in ("source", "type", "event"):
            wanted = getattr(self, name)
            if wanted and fields.get(name) != wanted:
                return False
        if self.user and self.user not in (fields.get("userId"), fields.get("anonymousId")):
            return False
        if self.text:
            needle = self.text.casefold()
            haystack = entry.data.decode("utf-8", "replace")
            if needle not in haystack.casefold() and not any(
                needle in value.casefold() for value in entry.headers.values()
            ):
                return False
        return True


@dataclass(frozen=True)
class Cursor:
    """Where a reader is: the last sequence read of each stream, the reset marks then, and
    which events stream that was (when it was created: --fresh makes a new one)."""

    events: int
    quarantine: int
    events_mark: int
    quarantine_mark: int
    stream: int = 0

    def __str__(self) -> str:
        return (
            f"{self.events}-{self.quarantine}-{self.events_mark}-{self.quarantine_mark}-"
            f"{self.stream}"
        )

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        try:
            parts = [int(part) for part in (text or "").split("-")]
        except ValueError:
            return None
        if len(parts) != 5 or min(parts) < 0:
            return None
        return cls(*parts)


def summary(kind: str, entry: Entry) -> dict[str, Any]:
    """What the page shows of one entry: the list's fields and the JSON as stored. Nothing
    is decoded here (the view read the fields when the entry arrived): a reader keeping up
    with thousands of events a second must cost little, and hold the GIL briefly."""
    fields = entry.fields
    row: dict[str, Any] = {"k": kind, "seq": entry.sequence, "subject": entry.subject}
    try:
        text = entry.data.decode("utf-8")
    except UnicodeDecodeError:  # shown with replacement characters, and said so
        text = entry.data.decode("utf-8", "replace")
        row["notUtf8"] = True
    for name in ("type", "source", "userId", "anonymousId", "messageId", *LISTED):
        if name in fields:
            row[name] = fields[name]
    if "event" in fields:
        row["name"] = fields["event"]
    if kind == "q":  # the quarantine's headers (its receivedAt is the collector's)
        document = _quarantine_json(entry, event=False)
        row.update({k: v for k, v in document.items() if v is not None and k != "sequence"})
    row["raw"] = text
    return row


class Debugger:
    """Serves the page and its live streams from the tracking API's views."""

    def __init__(self, api: TrackingApi, context: Mapping[str, Any] | None = None) -> None:
        self.api = api
        self.events, self.quarantine = api.events, api.quarantine
        self.context = dict(context or {})
        """Shown by the page: stack, sources, collectorUrl."""
        self.max_streams = MAX_STREAMS
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._changed = threading.Condition()
        self._version = 0
        self._closed = threading.Event()
        self.refused = 0
        self._history: deque[tuple[int, int]] = deque(maxlen=HISTORY_SECONDS)
        self._sampler = threading.Thread(target=self._sample, daemon=True, name="debugger")
        for view in (self.events, self.quarantine):
            view.on_change = self._poke
        api.extensions.append(self)
        api.pages.add(PATH)
        self._sampler.start()

    # --- the API's extension protocol ----------------------------------------------------

    def handles(self, path: str) -> bool:
        return path == PATH or path.startswith(f"{PATH}/")

    def get(self, request: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None:
        if path == LIVE:
            return self._live(request, query)
        if path not in ASSETS:
            return _send(request, 404, {"error": f"no route {path}", "page": PATH})
        name, content_type = ASSETS[path]
        body = (PAGE_DIR / name).read_bytes()
        request.send_response(200)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-cache")
        _protective_headers(request)
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self._closed.set()
        self._poke()
        with self._open_lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    # --- live streams --------------------------------------------------------------------

    def _poke(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _live(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        try:
            filters = Filters.of(query)
            backlog = int(query.get("backlog") or BACKLOG)
            if not 0 <= backlog <= MAX_ENTRIES:
                raise BadRequest(f"backlog must be a whole number from 0 to {MAX_ENTRIES}")
        except ValueError as error:
            message = str(error) if isinstance(error, BadRequest) else "backlog: not a number"
            return _send(request, 400, {"error": message})
        cursor = Cursor.parse(request.headers.get("Last-Event-ID") or query.get("after"))
        with self._open_lock:
            admitted = len(self._open) < self.max_streams
            if admitted:
                self._open.add(request.connection)
        if not admitted:
            self.refused += 1
            message = (
                f"busy: {self.max_streams} debugger streams at once; close a debugger tab "
                "(a browser also allows only 6 connections per site over HTTP/1.1)"
            )
            return _send(request, 503, {"error": message})
        try:
            request.long_lived()  # type: ignore[attr-defined]
            self.api.catch_up()
            request.send_response(200)
            request.send_header("Content-Type", "text/event-stream; charset=utf-8")
            request.send_header("Cache-Control", "no-store")
            _protective_headers(request)
            request.end_headers()
            _Reader(self, request, filters, backlog, cursor).run()
        except OSError:
            pass  # the page went away, or stopped reading: it resumes where it was
        finally:
            with self._open_lock:
                self._open.discard(request.connection)

    @property
    def version(self) -> int:
        with self._changed:
            return self._version

    def wait(self, version: int, timeout: float) -> int:
        """The views' version once it is not `version` any more, or after `timeout`."""
        with self._changed:
            if self._version == version and not self._closed.is_set():
                self._changed.wait(timeout)
            return self._version

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # --- stats ---------------------------------------------------------------------------

    def _sample(self) -> None:
        last = (self.events.last_sequence, self.quarantine.last_sequence)
        while not self._closed.wait(1.0):
            now = (self.events.last_sequence, self.quarantine.last_sequence)
            self._history.append((max(0, now[0] - last[0]), max(0, now[1] - last[1])))
            last = now

    def stats(self) -> dict[str, Any]:
        status = dict(self.api.status)
        return {
            # The view's sequence is live; the status line's counts are read every 2 s.
            "accepted": max(status.get("accepted") or 0, self.events.last_sequence),
            "quarantined": status.get("quarantined"),
            "deadLettered": status.get("deadLettered"),
            "warehouseRows": status.get("warehouseRows"),
            "lag": status.get("lag", {}),
            "views": {"events": self.events.stats(), "quarantine": self.quarantine.stats()},
            "perSecond": list(self._history),
            "streams": self.streams,
        }

    @property
    def streams(self) -> int:
        with self._open_lock:
            return len(self._open)


class _Reader:
    """One page's stream: reads the views after its cursor and writes what matches."""

    def __init__(
        self,
        debugger: Debugger,
        request: BaseHTTPRequestHandler,
        filters: Filters,
        backlog: int,
        cursor: Cursor | None,
    ) -> None:
        self.debugger, self.request = debugger, request
        self.filters, self.backlog = filters, backlog
        self.resumed_from = cursor
        self.cursor = cursor or self._start()
        self.forgotten = (debugger.events.forgotten, debugger.quarantine.forgotten)

    def _start(self) -> Cursor:
        """Before the first entry held after the marks: the reader gets what is held."""
        events, quarantine = self.debugger.events, self.debugger.quarantine
        return Cursor(events.mark, quarantine.mark, events.mark, quarantine.mark, events.created)

    def _marks(self) -> tuple[int, int]:
        return self.debugger.events.mark, self.debugger.quarantine.mark

    def _write(self, event: str, data: Any, with_id: bool = True) -> None:
        lines = [f"event: {event}"]
        if with_id:
            lines.append(f"id: {self.cursor}")
        lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
        self.request.wfile.write(("\n".join(lines) + "\n\n").encode())

    def run(self) -> None:
        debugger = self.debugger
        self.request.wfile.write(b"retry: 1000\n\n")
        why = self._why_reload(self.cursor) if self.resumed_from else None
        if why:
            self._reload(why)
        hello = {
            **debugger.context,
            "filters": self.filters.as_dict(),
            "backlog": self.backlog,
            "resumed": self.resumed_from is not None and why is None,
            "maxStreams": debugger.max_streams,
            "maxEntries": MAX_ENTRIES,
        }
        self._write("hello", hello)
        version = debugger.version
        self._deliver()
        self._write("stats", debugger.stats())
        next_stats = time.monotonic() + STATS_SECONDS
        while not debugger.closed:
            changed = debugger.wait(version, max(0.0, next_stats - time.monotonic()))
            if changed != version:
                time.sleep(COALESCE_SECONDS)
                version = debugger.version
                why = self._why_reload(self.cursor)
                if why:
                    self._reload(why)
                self._deliver()
            if time.monotonic() >= next_stats:
                self._write("stats", debugger.stats())
                next_stats = time.monotonic() + STATS_SECONDS

    def _why_reload(self, cursor: Cursor) -> str | None:
        events, quarantine = self.debugger.events, self.debugger.quarantine
        if cursor.stream != events.created or (
            cursor.events > events.last_sequence or cursor.quarantine > quarantine.last_sequence
        ):
            return "new stream"
        if (cursor.events_mark, cursor.quarantine_mark) != self._marks():
            return "reset"
        if (events.forgotten, quarantine.forgotten) != self.forgotten:
            return "deleted"
        return None

    def _reload(self, why: str) -> None:
        self.cursor = self._start()
        self.forgotten = (self.debugger.events.forgotten, self.debugger.quarantine.forgotten)
        self._write("reload", {"why": why})

    def _deliver(self) -> None:
        """Send what matches after the cursor: the newest `backlog` of it, oldest first."""
        debugger, cursor = self.debugger, self.cursor
        marks = self._marks()  # before reading: a reset meanwhile is seen next time
        new_events, events_gap = debugger.events.after(cursor.events)
        new_quarantine, quarantine_gap = debugger.quarantine.after(cursor.quarantine)
        if not (new_events or new_quarantine or events_gap or quarantine_gap):
            return
        matching: list[tuple[str, Entry]] = []
        for kind, entries in (("e", new_events), ("q", new_quarantine)):
            if self.filters.wants(kind):
                matching += [(kind, e) for e in entries if self.filters.matches(e)]
        missed = events_gap * self.filters.wants("e") + quarantine_gap * self.filters.wants("q")
        chosen = _newest(matching, self.backlog)
        missed += len(matching) - len(chosen)
        self.cursor = Cursor(
            new_events[-1].sequence if new_events else cursor.events,
            new_quarantine[-1].sequence if new_quarantine else cursor.quarantine,
            *marks,
            cursor.stream,
        )
        chunks = list(_chunks(chosen)) or [[]]
        for index, chunk in enumerate(chunks):
            # Built, sent and let go one message at a time: a reader holds one of its own.
            message: dict[str, Any] = {"entries": [summary(kind, e) for kind, e in chunk]}
            if index == 0 and missed:
                message["missed"] = missed
            # Only the last message moves the reader's place: a reader cut off in between
            # resumes before this delivery (the page ignores what it has already).
            self._write("entries", message, with_id=index == len(chunks) - 1)


def _newest(matching: Sequence[tuple[str, Entry]], count: int) -> list[tuple[str, Entry]]:
    """The `count` newest matches, oldest first by the time they arrived (each kind is in
    sequence order already, so only its last `count` compete)."""
    if not count:
        return []
    chosen: list[tuple[str, Entry]] = []
    for kind in ("e", "q"):
        chosen += [(k, entry) for k, entry in matching if k == kind][-count:]
    chosen.sort(key=_arrival)
    return chosen[-count:]


def _arrival(item: tuple[str, Entry]) -> tuple[str, str, int]:
    kind, entry = item
    at = entry.headers.get("Liftoff-Received-At") if kind == "q" else None
    return at or entry.fields.get("receivedAt") or "", kind, entry.sequence


def _chunks(rows: Iterable[tuple[str, Entry]]) -> Iterable[list[tuple[str, Entry]]]:
    chunk: list[tuple[str, Entry]] = []
    size = 0
    for row in rows:
        row_size = len(row[1].data) + 512
        if chunk and (size + row_size > MESSAGE_BYTES or len(chunk) >= MESSAGE_ENTRIES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def _protective_headers(request: BaseHTTPRequestHandler) -> None:
    request.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    request.send_header("X-Content-Type-Options", "nosniff")
    request.send_header("X-Frame-Options", "DENY")
    request.send_header("Referrer-Policy", "no-referrer")
    request.send_header("Cross-Origin-Opener-Policy", "same-origin")
    request.send_header("Cross-Origin-Resource-Policy", "same-origin")
