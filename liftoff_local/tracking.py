"""The local tracking API's views: what the pipeline accepted and what it quarantined, for
end-to-end tests of tracking code (what Snowplow Micro is used for). The HTTP side is
:mod:`liftoff_local.tracking_api`.

The supervisor reads the event stream and the dead-letter stream with ordered (ephemeral,
unacknowledged) JetStream consumers, so it sees exactly what the collector's 200 covered and
every quarantined event with its reason, without being a consumer the pipeline waits for.
``POST /reset`` sets a mark at the current stream positions, kept on disk, and everything
before it is hidden from then on.

**Bounded by bytes.** A view keeps the most recent entries after the mark up to
:data:`VIEW_BYTES` (each entry counted as its message's bytes, headers and the fields it is
filtered on, plus a fixed allowance for the Python objects) and at most :data:`MAX_ENTRIES`;
the event JSON is kept as the stream's bytes and decoded only for an answer. Older entries are
dropped and counted (``dropped``), so an answer can say that matches may be missing. After a
restart the view is rebuilt from at most the last :data:`MAX_ENTRIES` messages of the stream.

**Consistent with the streams.** Before each query the views catch up with everything the
streams held when it arrived (up to 2 s), and forget what was deleted from a stream since
(``python -m services quarantine replay`` deletes the events it replays from the quarantine;
retention expires old ones), so the API shows what the streams hold.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.collector.quarantine import event_as_json

MAX_ENTRIES = 10_000
VIEW_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 1024
"""What the Python objects around one entry take beyond its bytes (measured: ~0.9 KiB)."""
FILTERS = ("source", "type", "event", "userId", "anonymousId", "messageId")
LISTED = ("receivedAt", "groupId", "previousId")


@dataclass(frozen=True)
class Entry:
    sequence: int
    subject: str
    data: bytes
    """The message as the stream holds it (the event's JSON)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    """The filter fields, as text (absent: not there), and those the debugger lists
    (``receivedAt``, ``groupId``, ``previousId``): read once, when the event is decoded here."""

    @classmethod
    def of(cls, sequence: int, subject: str, data: bytes, headers: Mapping[str, str]) -> Entry:
        event = _decode(data)
        found: dict[str, str] = {}
        if isinstance(event, dict):
            liftoff = event.get("liftoff")
            if isinstance(liftoff, dict) and isinstance(liftoff.get("source"), str):
                found["source"] = str(liftoff["source"])
            for name in ("type", "userId", "anonymousId", "messageId", *LISTED):
                if event.get(name) is not None:
                    found[name] = str(event[name])
            event_name = event.get("event") or event.get("name")
            if event_name is not None:
                found["event"] = str(event_name)
        if "source" not in found and "Liftoff-Source" in headers:
            found["source"] = headers["Liftoff-Source"]
        return cls(sequence, subject, bytes(data), dict(headers), found)

    @property
    def event(self) -> Any:
        """The event as JSON (a dict), or its text when it is not JSON."""
        return _decode(self.data)

    @property
    def size(self) -> int:
        texts = [self.subject, *self.headers.keys(), *self.headers.values(), *self.fields.values()]
        return len(self.data) + sum(len(t) for t in texts) + ENTRY_OVERHEAD_BYTES

    def matches(self, filters: Mapping[str, str]) -> bool:
        for name, wanted in filters.items():
            value = self.headers.get("Liftoff-Consumer") if name == "consumer" else None
            if name != "consumer":
                value = self.fields.get(name)
            if value != wanted:
                return False
        return True


def _decode(data: bytes) -> Any:
    # Strict JSON or the text: Python's json reads 1e999 as inf and writes it back as
    # Infinity, which JSON.parse refuses.
    return event_as_json(data)


@dataclass(frozen=True)
class Found:
    """A query's matches (oldest first) and how many entries after the mark are not held."""

    entries: list[Entry]
    dropped: int


class TrackingView:
    """Recent entries of one stream after the reset mark; thread-safe for the HTTP server."""

    def __init__(self, max_bytes: int = VIEW_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.mark = 0
        self.last_sequence = 0
        self.dropped = 0
        """Entries after the mark that the bounds made it let go of (or never replayed)."""
        self.forgotten = 0
        """Entries forgotten because the stream deleted them, in total (never reset)."""
        self.created = 0
        """When the stream was created (ms since the epoch; 0: not known): a stream made anew
        (``--fresh``) restarts its sequences, and this tells it from the one before."""
        self.on_change: Callable[[], None] | None = None
        """Called (under the view's lock: keep it short) after an entry was added, a reset
        or entries forgotten; the debugger's live streams wait on it."""

    def add(self, entry: Entry) -> None:
        with self._lock:
            self.last_sequence = max(self.last_sequence, entry.sequence)
            if entry.sequence <= self.mark:
                return
            self._entries.append(entry)
            self._bytes += entry.size
            while self._entries and (
                self._bytes > self.max_bytes or len(self._entries) > self.max_entries
            ):
                self._bytes -= self._entries.popleft().size
                self.dropped += 1
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def not_replayed(self, count: int) -> None:
        with self._lock:
            self.dropped += max(0, count)

    def forget(self, deleted: Iterable[int], first_sequence: int) -> int:
        """Drop what the stream itself no longer holds; returns how many (not `dropped`)."""
        gone = set(deleted)
        with self._lock:
            kept = [
                e for e in self._entries if e.sequence >= first_sequence and e.sequence not in gone
            ]
            forgotten = len(self._entries) - len(kept)
            if forgotten:
                self._entries = deque(kept)
                self._bytes = sum(e.size for e in kept)
                self.forgotten += forgotten
                self._changed()
            return forgotten

    def reset(self) -> int:
        with self._lock:
            self.mark = self.last_sequence
            self._entries.clear()
            self._bytes = 0
            self.dropped = 0
            self._changed()
            return self.mark

    def after(self, sequence: int) -> tuple[list[Entry], int]:
        """The entries held after `sequence`, oldest first (walked from the newest: cheap
        for a reader that keeps up), and how many sequences after it (and after the mark)
        came before the oldest entry held when the view let entries go: an upper bound of
        what a reader at `sequence` missed (sequences the stream deleted count too)."""
        with self._lock:
            found = []
            for entry in reversed(self._entries):
                if entry.sequence <= sequence:
                    break
                found.append(entry)
            found.reverse()
            oldest = self._entries[0].sequence if self._entries else self.last_sequence + 1
            gap = oldest - max(sequence, self.mark) - 1 if self.dropped else 0
        return found, max(0, gap)

    def query(self, filters: Mapping[str, str], limit: int) -> Found:
        with self._lock:
            found = [e for e in self._entries if e.matches(filters)]
            dropped = self.dropped
        return Found(found[-limit:] if limit else [], dropped)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "held": len(self._entries),
                "bytes": self._bytes,
                "dropped": self.dropped,
                "maxBytes": self.max_bytes,
                "maxEntries": self.max_entries,
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


async def follow(js: Any, stream: str, subjects: str, view: TrackingView) -> Any:
    """Feed `view` from `stream` with an ordered consumer, starting after the reset mark (at
    most the last MAX_ENTRIES messages; those before count as dropped)."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    info = await js.stream_info(stream)
    if info.created is not None:
        view.created = int(info.created.timestamp() * 1000)
    lowest = max(view.mark + 1, info.state.first_seq, 1)
    start = max(lowest, info.state.last_seq - view.max_entries + 1)
    view.not_replayed(start - lowest)
    view.last_sequence = max(view.last_sequence, info.state.last_seq)

    async def on_message(message: Any) -> None:
        headers = dict(message.headers or {})
        sequence = message.metadata.sequence.stream
        view.add(Entry.of(sequence, message.subject, message.data, headers))

    return await js.subscribe(
        subjects,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
    )


async def stream_state(nc: Any, stream: str) -> dict[str, Any]:
    """The stream's state with the sequences deleted from it (JetStream's STREAM.INFO with
    deleted_details; nats-py's stream_info does not ask for them)."""
    reply = await nc.request(
        f"$JS.API.STREAM.INFO.{stream}", json.dumps({"deleted_details": True}).encode(), timeout=5
    )
    document = json.loads(reply.data)
    if "error" in document:
        raise RuntimeError(f"stream info {stream}: {document['error']}")
    state: dict[str, Any] = document["state"]
    return state


async def caught_up(nc: Any, views: Mapping[str, TrackingView], deadline: float = 2.0) -> None:
    """Wait until each view has seen its stream's last sequence as of now (or `deadline`),
    and forget what the stream no longer holds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    for stream, view in views.items():
        state = await stream_state(nc, stream)
        view.forget(state.get("deleted") or (), state.get("first_seq", 0))
        while view.last_sequence < state.get("last_seq", 0) and loop.time() < give_up:
            await asyncio.sleep(0.005)


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
