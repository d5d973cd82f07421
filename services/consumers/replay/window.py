"""What a replay reads: the archived events of a time window, in stream order per partition.

The archiver's keys (:mod:`services.consumers.archiver.sink`) put each event under its
source and the UTC hour of its ``receivedAt``, in objects named ``<partition>-<window>``; each
object holds its lines sorted by stream position. So, hour after hour, the objects of one
partition (every selected source, every window) are merged by stream sequence: the events of
one user (routed to one partition by a stable hash of the user) come out in the order the
stream stored them. Partitions follow each other in name order within an hour.

Each event is yielded with its :class:`Cursor` (hour, partition, sequence): the order of the
walk, so a resumed replay skips every event at or before the last acknowledged cursor.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.reconcile.repair import (
    CorruptObject,
    archive_lines,
    delivery_of,
    format_hour,
    hour_prefix,
    list_sources,
)
from services.consumers.runner.model import Delivery
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

    def selects(self, delivery: Delivery) -> bool:
        if not self.start <= delivery.received_at < self.end:
            return False
        if self.types and delivery.type not in self.types:
            return False
        return not self.events or (
            delivery.type == "track" and delivery.event.get("event") in self.events
        )

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
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not an ISO-8601 time such as 2026-11-27T10:00Z"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass
class Reading:
    """What the walk met besides events: counts for the summary."""

    objects: int = 0
    lines: int = 0
    unreadable: int = 0
    """Lines that are not contract events (the loader and broadcaster would refuse them)."""
    corrupt: list[str] | None = None


def walk(
    client: Any,
    archive: ArchiverConfig,
    selection: Selection,
    reading: Reading,
    after: Cursor | None = None,
) -> Iterator[tuple[Cursor, Delivery]]:
    """The selected events after ``after``, in the walk's order (see the module docstring)."""
    sources = selection.sources or tuple(list_sources(client, archive))
    for hour in selection.hours():
        label = format_hour(hour)
        if after is not None and label < after.hour:
            continue
        by_partition: dict[str, list[str]] = {}
        for source in sources:
            for key in _keys(client, archive, hour_prefix(archive, source, hour)):
                partition = key.rpartition("/")[2].rpartition("-")[0]
                by_partition.setdefault(partition, []).append(key)
        for partition in sorted(by_partition):
            if after is not None and (label, partition) < after[:2]:
                continue
            keys = by_partition[partition]
            reading.objects += len(keys)
            streams = [_deliveries(client, archive.bucket, key, reading) for key in keys]
            for delivery in heapq.merge(*streams, key=lambda d: d.position.sequence):
                cursor = Cursor(label, partition, delivery.position.sequence)
                if (after is None or cursor > after) and selection.selects(delivery):
                    yield cursor, delivery


def _keys(client: Any, archive: ArchiverConfig, prefix: str) -> Iterator[str]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=archive.bucket, Prefix=prefix, Delimiter="/"):
        yield from (item["Key"] for item in page.get("Contents", []))


def _deliveries(client: Any, bucket: str, key: str, reading: Reading) -> Iterator[Delivery]:
    try:
        for _, line in archive_lines(client, bucket, key):
            reading.lines += 1
            delivery = delivery_of(line)
            if isinstance(delivery, Delivery):
                yield delivery
            else:
                reading.unreadable += 1
    except CorruptObject as error:
        reading.corrupt = [*(reading.corrupt or []), f"{key}: {error}"]


def sorted_unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
