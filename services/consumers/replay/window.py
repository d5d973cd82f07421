"""What a replay reads: the archived events of a time window, in stream order per partition.

The archiver's keys (:mod:`services.consumers.archiver.sink`) put each event under its
source and the UTC hour of its ``receivedAt``, in objects named ``<partition>-<window>``; each
object holds its lines sorted by stream position. So, hour after hour, the objects of one
partition (every selected source, every window) are merged by stream sequence: the events of
one user (routed to one partition by a stable hash of the user) come out in the order the
stream stored them. Partitions follow each other in name order within an hour.

Each event's :class:`Cursor` (hour, partition, sequence) is its place in the walk, so a resumed
replay skips every event at or before the last acknowledged cursor. The events come a
:class:`Piece` at a time, as :mod:`.lines` reads them (:class:`~.lines.ArchivedEvent`).
"""

from __future__ import annotations

import gzip
import heapq
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from operator import attrgetter
from typing import Any, NamedTuple

import botocore.exceptions

from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.reconcile.repair import (
    format_hour,
    hour_prefix,
    iso_moment,
    list_sources,
)
from services.consumers.replay.lines import ArchivedEvent, archived_event
from services.contract import ConfigError


class Cursor(NamedTuple):
    """Where the walk is: comparable, JSON-friendly (``[hour, partition, sequence]``)."""

    hour: str
    partition: str
    sequence: int


@dataclass(frozen=True)
class Selection:
    """The events to replay: ``start <= receivedAt < end``, of these sources (empty: every
    archived source), types and track event names (empty: all)."""

    start: datetime
    end: datetime
    sources: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    events: tuple[str, ...] = ()

    def hours(self) -> list[datetime]:
        hour = self.start.replace(minute=0, second=0, microsecond=0)
        hours = []
        while hour < self.end:
            hours.append(hour)
            hour += timedelta(hours=1)
        return hours

    def chosen(self, events: list[ArchivedEvent], after: int | None) -> list[ArchivedEvent]:
        """``events`` (of one partition) that are selected and past the sequence ``after``."""
        start, end = self.start, self.end
        chosen = [event for event in events if start <= event.received_at < end]
        if after is not None:
            chosen = [event for event in chosen if event.sequence > after]
        if self.types:
            chosen = [event for event in chosen if event.type in self.types]
        if self.events:
            chosen = [
                event for event in chosen if event.type == "track" and event.name in self.events
            ]
        return chosen

    def describe(self) -> dict[str, Any]:
        """What identifies the replay (its progress file is only valid for the same one)."""
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "sources": list(self.sources),
            "types": list(self.types),
            "events": list(self.events),
        }


def parse_time(option: str, text: str) -> datetime:
    """``--from`` / ``--to``: ISO-8601 (``2026-11-27T10:00Z``); without an offset, UTC."""
    moment = iso_moment(text)
    if moment is None:
        raise ConfigError(f"{option} {text!r} is not an ISO-8601 time such as 2026-11-27T10:00Z")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass
class Reading:
    """What the walk met besides events: counts for the summary."""

    objects: int = 0
    lines: int = 0
    unreadable: int = 0
    """Lines that are not contract events (the loader and broadcaster would refuse them)."""
    corrupt: list[str] | None = None


class Piece(NamedTuple):
    """Consecutive selected events of one partition and hour, in the walk's order: the walk
    hands them over a piece at a time (about a MiB of archive), so the per-event work is only
    each line's own."""

    hour: str
    events: list[ArchivedEvent]

    def cursor(self, event: ArchivedEvent) -> Cursor:
        return Cursor(self.hour, event.partition, event.sequence)


def walk(
    client: Any,
    archive: ArchiverConfig,
    selection: Selection,
    reading: Reading,
    after: Cursor | None = None,
) -> Iterator[Piece]:
    """The selected events after ``after``, in the walk's order (see the module docstring)."""
    sources = selection.sources or tuple(list_sources(client, archive))
    for hour in selection.hours():
        label = format_hour(hour)
        if after is not None and label < after.hour:
            continue
        groups: dict[str, dict[str, list[str]]] = {}
        for source in sources:
            for key in _keys(client, archive, hour_prefix(archive, source, hour)):
                partition, _, window = key.rpartition("/")[2].partition(".")[0].rpartition("-")
                groups.setdefault(partition, {}).setdefault(window, []).append(key)
        for partition in sorted(groups):
            place = (label, partition)
            if after is not None and place < after[:2]:
                continue
            resume = after.sequence if after is not None and place == after[:2] else None
            for events in _partition(client, archive.bucket, groups[partition], reading):
                if chosen := selection.chosen(events, resume):
                    yield Piece(label, chosen)


MERGED_PIECE_EVENTS = 1000
"""Events per piece when a window's objects (one per source) are merged."""
_SEQUENCE = attrgetter("sequence")


def _partition(
    client: Any, bucket: str, windows: dict[str, list[str]], reading: Reading
) -> Iterator[list[ArchivedEvent]]:
    """One partition's events of one hour in sequence order: window after window (JetStream
    windows are ranges of sequences; Kinesis windows are arrival-time ranges, and a shard's
    sequence numbers grow with arrival), the objects of one window (one per source) merged by
    sequence. Only one window's objects are open at a time."""
    for window in sorted(windows):
        keys = windows[window]
        reading.objects += len(keys)
        objects = [_events(client, bucket, key, reading) for key in keys]
        if len(objects) == 1:
            yield from objects[0]
            continue
        merged = heapq.merge(*map(chain.from_iterable, objects), key=_SEQUENCE)
        while piece := list(islice(merged, MERGED_PIECE_EVENTS)):
            yield piece


def _keys(client: Any, archive: ArchiverConfig, prefix: str) -> Iterator[str]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=archive.bucket, Prefix=prefix, Delimiter="/"):
        yield from (item["Key"] for item in page.get("Contents", []))


def _events(client: Any, bucket: str, key: str, reading: Reading) -> Iterator[list[ArchivedEvent]]:
    """The object's events as they were on the stream, streamed in 1 MiB pieces."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    number = 0
    try:
        with gzip.GzipFile(fileobj=body, mode="rb") as stream:
            for lines in _lines(stream):
                number += len(lines)
                events = [
                    event for line in lines if line and (event := archived_event(line)) is not None
                ]
                readable = len(lines) - lines.count(b"")
                reading.lines += readable
                reading.unreadable += readable - len(events)
                if events:
                    yield events
    except botocore.exceptions.BotoCoreError:
        raise  # S3 down: fail the run (the progress file keeps what was acknowledged)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        problem = f"{key}: after line {number}: {type(error).__name__}: {error}"
        reading.corrupt = [*(reading.corrupt or []), problem]
    finally:
        body.close()


def _lines(stream: Any, read_bytes: int = 1 << 20) -> Iterator[list[bytes]]:
    """The lines (without their ``\\n``) of each large read (cheaper than a readline each)."""
    rest = b""
    while chunk := stream.read(read_bytes):
        lines = chunk.split(b"\n")
        lines[0] = rest + lines[0]
        rest = lines.pop()
        if lines:
            yield lines
    if rest:
        yield [rest]


def sorted_unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
