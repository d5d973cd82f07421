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

import gzip
import heapq
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import botocore.exceptions
import msgspec

from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.reconcile.repair import format_hour, hour_prefix, list_sources
from services.consumers.runner.model import Delivery, Position, decode
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
        groups: dict[str, dict[str, list[str]]] = {}
        for source in sources:
            for key in _keys(client, archive, hour_prefix(archive, source, hour)):
                partition, _, window = key.rpartition("/")[2].partition(".")[0].rpartition("-")
                groups.setdefault(partition, {}).setdefault(window, []).append(key)
        for partition in sorted(groups):
            if after is not None and (label, partition) < after[:2]:
                continue
            for delivery in _partition(client, archive.bucket, groups[partition], reading):
                cursor = Cursor(label, partition, delivery.position.sequence)
                if (after is None or cursor > after) and selection.selects(delivery):
                    yield cursor, delivery


def _partition(
    client: Any, bucket: str, windows: dict[str, list[str]], reading: Reading
) -> Iterator[Delivery]:
    """One partition's events of one hour in sequence order: window after window (JetStream
    windows are ranges of sequences; Kinesis windows are arrival-time ranges, and a shard's
    sequence numbers grow with arrival), the objects of one window (one per source) merged by
    sequence. Only one window's objects are open at a time."""
    for window in sorted(windows):
        keys = windows[window]
        reading.objects += len(keys)
        streams = [_deliveries(client, bucket, key, reading) for key in keys]
        if len(streams) == 1:
            yield from streams[0]
        else:
            yield from heapq.merge(*streams, key=lambda d: d.position.sequence)


def _keys(client: Any, archive: ArchiverConfig, prefix: str) -> Iterator[str]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=archive.bucket, Prefix=prefix, Delimiter="/"):
        yield from (item["Key"] for item in page.get("Contents", []))


def _deliveries(client: Any, bucket: str, key: str, reading: Reading) -> Iterator[Delivery]:
    """The object's events as they were on the stream, streamed in 1 MiB pieces."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    number = 0
    try:
        with gzip.GzipFile(fileobj=body, mode="rb") as stream:
            for line in _lines(stream):
                number += 1
                if not line:
                    continue
                reading.lines += 1
                delivery = stream_delivery(line)
                if delivery is None:
                    reading.unreadable += 1
                else:
                    yield delivery
    except botocore.exceptions.BotoCoreError:
        raise  # S3 down: fail the run (the progress file keeps what was acknowledged)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        problem = f"{key}: after line {number}: {type(error).__name__}: {error}"
        reading.corrupt = [*(reading.corrupt or []), problem]
    finally:
        body.close()


def _lines(stream: Any, piece: int = 1 << 20) -> Iterator[bytes]:
    """Lines without their ``\\n``, split from large reads (cheaper than a readline each)."""
    rest = b""
    while chunk := stream.read(piece):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_object = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
_NO_ARRIVAL = datetime.min.replace(tzinfo=UTC)
_MARK = b',"position":'
"""How the archiver's ``archive_line`` appends the position: the last member of ``liftoff``.
The bytes ``,"position":`` followed by ``{`` can only be JSON structure (inside a string the
quotes are escaped), so when the line holds them once, they are the archiver's."""


class _Position(msgspec.Struct):
    partition: str
    sequence: str


_position = msgspec.json.Decoder(_Position)


def stream_delivery(line: bytes) -> Delivery | None:
    """An archived line as the stream carried it (without the ``liftoff.position`` the archiver
    added, the only change it makes), contract-checked; None when it is not an event.

    The position is cut out of the bytes when it is unambiguous (the line holds the archiver's
    ``,"position":{`` once): the event is then decoded once, by the contract check, and the
    replay costs about what reading the archive costs. Otherwise the line's top level is
    decoded and encoded again without it."""
    stripped = _cut_position(line)
    if stripped is not None:
        data, position = stripped
        delivery = _checked(data, position.partition, position.sequence)
        if delivery is not None:
            return delivery
    try:
        fields = _fields.decode(line)
        liftoff = _object.decode(fields["liftoff"])
        position = liftoff.pop("position")
        partition, sequence = str(position["partition"]), str(position["sequence"])
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return None
    fields["liftoff"] = msgspec.Raw(_encoder.encode(liftoff))
    return _checked(_encoder.encode(fields), partition, sequence)


def _cut_position(line: bytes) -> tuple[bytes, _Position] | None:
    if line.count(_MARK + b"{") != 1:
        return None
    start = line.find(_MARK + b"{")
    end = line.find(b"}", start) + 1
    try:
        position = _position.decode(line[start + len(_MARK) : end])
    except msgspec.DecodeError:
        return None  # a "}" inside the partition name: the slow path decodes it
    if line[end : end + 1] != b"}":
        return None  # not the last member of its object: not the archiver's
    return line[:start] + line[end:], position


def _checked(data: bytes, partition: str, sequence: str) -> Delivery | None:
    try:
        number = int(sequence)
    except ValueError:
        return None
    kind = "kinesis" if partition.startswith("shardId-") else "jetstream"
    delivery = Delivery(data=data, position=Position(kind, partition, number), arrival=_NO_ARRIVAL)
    if decode(delivery) is not None:
        return None
    delivery.arrival = delivery.received_at
    return delivery


def sorted_unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
