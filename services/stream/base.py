"""Stream adapters: one async interface, chosen by the stream URL's scheme.

- ``nats://host:port[,host:port...]/<STREAM>?subject_prefix=events&publish_timeout=5``
  → NATS JetStream (:mod:`services.stream.jetstream`)
- ``kinesis://<stream-name>?region=...&max_attempts=6`` → Kinesis Data Streams
  (:mod:`services.stream.kinesis`); the endpoint comes from ``AWS_ENDPOINT_URL`` when set.

``publish`` returns only after the stream acknowledged every record; otherwise it raises
:class:`StreamUnavailable`. It never buffers in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from services.events.model import StreamRecord
from services.stream.address import InvalidStreamUrl


class StreamUnavailable(Exception):
    """The stream did not acknowledge every record (down, timed out, or kept failing)."""


@dataclass(frozen=True)
class StreamSettings:
    """What ``ensure-stream`` provisions (JetStream; Kinesis streams are declared by Pulumi)."""

    retention_hours: float = 168.0
    replicas: int = 1
    duplicate_window_seconds: float = 120.0
    max_bytes: int = -1
    """Per stream (per partition); -1 = unlimited. When full, new events are refused."""
    discard_oldest: bool = False
    """At ``max_bytes``, drop the oldest messages to make room instead of refusing new ones:
    for the dead-letter stream, whose writers (the collector's quarantine, consumers parking
    an event) would otherwise stall; never for the event stream, whose messages were
    acknowledged to clients."""
    consumers: tuple[str, ...] | None = None
    """The durable consumers the stack declares (None: not managed); liftoff's others are
    deleted (:mod:`services.stream.durables`)."""


class EventStream(Protocol):
    async def start(self) -> None:
        """Begin connecting; must not fail when the stream is down (readiness reports it)."""

    async def publish(self, records: Sequence[StreamRecord]) -> None:
        """Return once every record is acknowledged; raise StreamUnavailable otherwise."""

    async def check_ready(self) -> None:
        """Raise StreamUnavailable unless connected and the stream exists."""

    async def close(self) -> None: ...


def open_stream(url: str) -> EventStream:
    """Build (but do not connect) the adapter for ``url``."""
    scheme = urlsplit(url).scheme
    if scheme == "nats":
        from services.stream.jetstream import JetStreamStream

        return JetStreamStream.from_url(url)
    if scheme == "kinesis":
        from services.stream.kinesis import KinesisStream

        return KinesisStream.from_url(url)
    raise InvalidStreamUrl(f"unsupported stream URL scheme {scheme!r}: use nats:// or kinesis://")
