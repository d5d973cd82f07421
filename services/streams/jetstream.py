"""NATS JetStream adapter: ``nats://host:port[,host:port...]/<STREAM>?subject_prefix=events``.

Query parameters: ``subject_prefix`` (default ``events``), ``publish_timeout`` seconds (default 5).
Every record is published to ``<prefix>.<source>.<type>`` with ``Nats-Msg-Id: <messageId>``;
the records of one call are published concurrently and the call returns after every PubAck.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from services.events import StreamRecord
from services.streams import InvalidStreamUrl, StreamSettings, StreamUnavailable

log = logging.getLogger("liftoff.stream.nats")

MAX_PENDING_ACKS = 50_000
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class JetStreamAddress:
    servers: list[str]
    stream: str
    subject_prefix: str
    publish_timeout: float

    @classmethod
    def parse(cls, url: str) -> JetStreamAddress:
        parts = urlsplit(url)
        if parts.scheme != "nats" or not parts.netloc:
            raise InvalidStreamUrl(f"expected nats://host:port/<STREAM>, got {url!r}")
        stream = parts.path.strip("/")
        if not _TOKEN.match(stream):
            raise InvalidStreamUrl(
                f"stream name {stream!r} in {url!r} must be letters, digits, '_' or '-'"
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        prefix = query.pop("subject_prefix", "events")
        if not _SUBJECT_PREFIX.match(prefix):
            raise InvalidStreamUrl(f"subject_prefix {prefix!r} is not a valid subject prefix")
        try:
            publish_timeout = float(query.pop("publish_timeout", "5"))
        except ValueError:
            raise InvalidStreamUrl("publish_timeout must be a number of seconds") from None
        if query:
            raise InvalidStreamUrl(f"unknown nats:// URL parameters: {sorted(query)}")
        servers = [f"nats://{server}" for server in parts.netloc.split(",")]
        return cls(servers, stream, prefix, publish_timeout)


class JetStreamStream:
    """Publishes records to one JetStream stream over a connection that reconnects forever."""

    def __init__(self, address: JetStreamAddress) -> None:
        self.address = address
        self._subject_prefix = address.subject_prefix + "."
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> JetStreamStream:
        return cls(JetStreamAddress.parse(url))

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name="nats-connect")

    async def _connect(self) -> None:
        # With max_reconnect_attempts=-1 nats-py keeps retrying the *first* connection too,
        # so a collector started before its broker becomes ready once the broker is up.
        nc = await nats.connect(
            servers=self.address.servers,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._nc = nc
        # The in-flight PubAck bound is also backpressure; nats-py's default (4000) is reached by
        # ~40 concurrent 100-event requests, and asyncio's Semaphore gets slow with many waiters.
        self._js = nc.jetstream(
            timeout=self.address.publish_timeout, publish_async_max_pending=MAX_PENDING_ACKS
        )
        log.info("connected to NATS", extra={"fields": {"stream": self.address.stream}})

    async def _on_error(self, error: Exception) -> None:
        log.debug("NATS connection error", extra={"fields": {"error": repr(error)}})

    async def _on_disconnected(self) -> None:
        log.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")

    def _connected(self) -> tuple[NatsClient, JetStreamContext]:
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            raise StreamUnavailable("not connected to NATS")
        return nc, js

    async def publish(self, records: Sequence[StreamRecord]) -> None:
        # publish_async writes every message at once and resolves one future per PubAck through
        # a single reply subscription: no task or timer per message (2x the throughput of
        # gathering js.publish calls, measured by benchmarks/collector.py).
        _, js = self._connected()
        stream = self.address.stream
        prefix = self._subject_prefix
        acks: list[asyncio.Future[Any]] = []
        try:
            for record in records:
                acks.append(
                    await js.publish_async(
                        f"{prefix}{record.source}.{record.type}",
                        record.data,
                        stream=stream,
                        headers={"Nats-Msg-Id": record.message_id},
                    )
                )
        except Exception as error:
            for ack in acks:
                ack.cancel()
            raise StreamUnavailable(f"publish failed: {error!r}") from error
        if not acks:
            return
        done, pending = await asyncio.wait(acks, timeout=self.address.publish_timeout)
        for ack in pending:
            ack.cancel()  # also forgets it in nats-py's reply table
        if pending:
            raise StreamUnavailable(
                f"{len(pending)} of {len(acks)} publishes not acknowledged within "
                f"{self.address.publish_timeout:g}s"
            )
        failures = [ack.exception() for ack in done if ack.exception() is not None]
        if failures:
            raise StreamUnavailable(
                f"{len(failures)} of {len(acks)} publishes refused: {failures[0]!r}"
            )

    async def check_ready(self) -> None:
        _, js = self._connected()
        try:
            await js.stream_info(self.address.stream)
        except nats.js.errors.NotFoundError:
            raise StreamUnavailable(f"stream {self.address.stream!r} does not exist") from None
        except (TimeoutError, nats.errors.Error) as error:
            raise StreamUnavailable(f"stream info failed: {error!r}") from error

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


async def ensure_stream(
    url: str, settings: StreamSettings, connect_deadline: float = 30.0, timeout: float = 5.0
) -> str:
    """Create the stream, or update it to ``settings``; returns "created", "updated" or
    "unchanged". Idempotent: safe to run on every deploy. Waits up to ``connect_deadline``
    seconds for the broker (a deploy Job may start before NATS is ready)."""
    address = JetStreamAddress.parse(url)
    if settings.duplicate_window_seconds > settings.retention_hours * 3600:
        raise ValueError("the duplicate window cannot be longer than the retention")
    wanted = StreamConfig(
        name=address.stream,
        subjects=[f"{address.subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=settings.retention_hours * 3600,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
    )
    nc = await asyncio.wait_for(
        nats.connect(
            servers=address.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=timeout,
            error_cb=_quiet,
        ),
        connect_deadline,
    )
    try:
        js = nc.jetstream(timeout=timeout)
        try:
            current = (await js.stream_info(address.stream)).config
        except nats.js.errors.NotFoundError:
            await js.add_stream(wanted)
            return "created"
        if _same(current, wanted):
            return "unchanged"
        await js.update_stream(wanted)
        return "updated"
    finally:
        await nc.close()


async def _quiet(error: Exception) -> None:
    log.debug("NATS connection error", extra={"fields": {"error": repr(error)}})


def _same(current: StreamConfig, wanted: StreamConfig) -> bool:
    def key(config: StreamConfig) -> tuple[Any, ...]:
        return (
            sorted(config.subjects or []),
            config.retention,
            config.discard,
            round(config.max_age or 0, 3),
            config.storage,
            config.num_replicas or 1,
            round(config.duplicate_window or 0, 3),
        )

    return key(current) == key(wanted)
