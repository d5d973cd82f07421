"""NATS JetStream adapter: ``nats://host:port[,host:port...]/<STREAM>?subject_prefix=events``.

Query parameters: ``subject_prefix`` (default ``events``), ``publish_timeout`` seconds (default
5), ``partitions`` (default 1, at most :data:`MAX_PARTITIONS`).

With one partition the stream is ``<STREAM>`` and every record is published to
``<prefix>.<source>.<type>``. With ``N`` > 1 partitions there are ``N`` streams,
``<STREAM>-0`` ... ``<STREAM>-<N-1>``, each with its own subjects ``<prefix>.<i>.>``: JetStream
fsyncs each stream's file store on its own, so ``N`` streams take ``N`` parallel writers where
one stream has a single one (``benchmarks/collector.py`` measures the curve). A record goes to
partition :func:`partition_of` its partition key (the event's ``userId``, else its
``anonymousId``): one user's events stay in one stream, in order, and a retried event lands in
the same stream, where ``Nats-Msg-Id: <messageId>`` deduplicates it.

The records of one call are published concurrently and the call returns after every PubAck.

Credentials: ``LIFTOFF_STREAM_CREDENTIALS_FILE`` names a JSON file ``{"user": …, "password": …}``
(built by :func:`stream_credentials_document`, read by :func:`stream_credentials`, which every
NATS connection of the platform's processes passes to ``nats.connect``); unset, none are sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from services.contract import ConfigError
from services.events.model import StreamRecord
from services.stream.address import JetStreamAddress
from services.stream.base import StreamSettings, StreamUnavailable
from services.stream.contract import StreamAccess, credentials_file_of, credentials_problem
from services.stream.durables import (
    DECLARED_KEY,
    create_missing,
    declared_metadata,
    remove_undeclared,
)

log = logging.getLogger("liftoff.stream.nats")

MAX_PENDING_ACKS = 50_000


def partition_of(key: str, partitions: int) -> int:
    """The partition of a partition key: MD5 of its UTF-8 bytes read as a 128-bit big-endian
    integer, scaled onto ``partitions`` equal ranges — the hash Kinesis uses to place a
    partition key on evenly split shards. Stable across processes, versions and machines
    (unlike Python's ``hash``)."""
    if partitions == 1:
        return 0
    digest = int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest(), "big")
    return (digest * partitions) >> 128


class InvalidStreamCredentials(ValueError):
    """The credentials file cannot be read or is not {"user", "password"}; never echoes it."""


def stream_credentials_document(user: str, password: str) -> str:
    """The content of the ``LIFTOFF_STREAM_CREDENTIALS_FILE`` file (for whoever writes it)."""
    return json.dumps({"user": user, "password": password})


def stream_credentials(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``nats.connect`` keyword arguments from ``LIFTOFF_STREAM_CREDENTIALS_FILE`` (default:
    this process's environment): ``{"user", "password"}``, or none when it is unset."""
    return credentials_in(credentials_file_of(os.environ if env is None else env))


def credentials_in(path: str | None) -> dict[str, str]:
    """``{"user", "password"}`` from the credentials file at ``path`` (none when None)."""
    if path is None:
        return {}
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidStreamCredentials(
            credentials_problem(path, f"cannot be read: {error.strerror}")
        ) from None
    except ValueError:
        document = None
    if (
        not isinstance(document, dict)
        or set(document) != {"user", "password"}
        or not all(isinstance(v, str) and v for v in document.values())
    ):
        raise InvalidStreamCredentials(
            credentials_problem(
                path,
                'must hold a JSON object with two non-empty strings, {"user": "...", '
                '"password": "..."}',
            )
        )
    return {"user": document["user"], "password": document["password"]}


def check_credentials(access: StreamAccess[str]) -> None:
    """A configuration error unless the stream's credentials file (if any) is usable."""
    try:
        credentials_in(access.credentials_file)
    except InvalidStreamCredentials as error:
        raise ConfigError(str(error)) from None


class PartitionCountChanged(Exception):
    """The stream exists with another partition count; ensure-stream refuses to change it."""


class JetStreamStream:
    """Publishes records to one JetStream stream over a connection that reconnects forever."""

    def __init__(self, address: JetStreamAddress) -> None:
        self.address = address
        # (stream, subject prefix + ".") of each partition, indexed by partition_of
        self._targets = [
            (part.stream, part.subject_prefix + ".") for part in address.partition_addresses()
        ]
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False

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
            **stream_credentials(),
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
        # Our own close() disconnects too: that is not worth a warning after a clean command.
        if self._closing:
            log.debug("closed the NATS connection")
        else:
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
        targets = self._targets
        partitions = len(targets)
        acks: list[asyncio.Future[Any]] = []
        try:
            for record in records:
                stream, prefix = targets[partition_of(record.partition_key, partitions)]
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
        for stream, _prefix in self._targets:
            try:
                await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                raise StreamUnavailable(f"stream {stream!r} does not exist") from None
            except (TimeoutError, nats.errors.Error) as error:
                raise StreamUnavailable(f"stream info failed: {error!r}") from error

    async def close(self) -> None:
        self._closing = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


async def ensure_stream(
    url: str, settings: StreamSettings, connect_deadline: float = 30.0, timeout: float = 5.0
) -> str:
    """Create the stream (every partition's stream), or update it to ``settings``; returns
    "created", "updated" or "unchanged" (the strongest over the partitions). Idempotent: safe
    to run on every deploy. Waits up to ``connect_deadline`` seconds for the broker (a deploy
    Job may start before NATS is ready).

    Refuses (:class:`PartitionCountChanged`) when the stream exists with another partition
    count: moving users to other partitions while events are in flight would reorder a user's
    events across streams. See the README ("Changing stream.partitions") for the procedure."""
    address = JetStreamAddress.parse(url)
    if settings.duplicate_window_seconds > settings.retention_hours * 3600:
        raise ValueError("the duplicate window cannot be longer than the retention")
    nc = await asyncio.wait_for(
        nats.connect(
            servers=address.servers,
            **stream_credentials(),
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=timeout,
            error_cb=_quiet,
        ),
        connect_deadline,
    )
    try:
        js = nc.jetstream(timeout=timeout)
        await _refuse_partition_change(js, address)
        outcomes = [
            await _ensure_one(js, _wanted_config(part, settings), settings.consumers)
            for part in address.partition_addresses()
        ]
    finally:
        await nc.close()
    for outcome in ("created", "updated"):
        if outcome in outcomes:
            return outcome
    return "unchanged"


def _wanted_config(address: JetStreamAddress, settings: StreamSettings) -> StreamConfig:
    return StreamConfig(
        name=address.stream,
        subjects=[f"{address.subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        # When max_bytes is reached, refuse new messages (the collector answers 503 and the
        # client retries) rather than drop the oldest: those were acknowledged and may not
        # have been consumed yet. max_age still expires old messages. (The dead-letter stream
        # asks for the opposite: settings.discard_oldest.)
        discard=DiscardPolicy.OLD if settings.discard_oldest else DiscardPolicy.NEW,
        max_bytes=settings.max_bytes,
        max_age=settings.retention_hours * 3600,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_seconds,
    )


async def _ensure_one(
    js: JetStreamContext, wanted: StreamConfig, consumers: Sequence[str] | None = None
) -> str:
    """Create or update one stream; with ``consumers``, also record them in its metadata and
    delete liftoff's durables they do not name (``services.stream.durables``)."""
    name = wanted.name or ""
    try:
        current: StreamConfig | None = (await js.stream_info(name)).config
    except nats.js.errors.NotFoundError:
        current = None
    recorded = current.metadata if current is not None else None
    wanted = replace(wanted, metadata=declared_metadata(recorded, consumers))
    if current is None:
        await js.add_stream(wanted)
        outcome = "created"
    elif not _same(current, wanted):
        await js.update_stream(wanted)
        outcome = "updated"
    else:
        outcome = "unchanged"
    if consumers is not None:
        # After the metadata: a consumer process of a removed destination, finding its
        # durable gone, reads there that it is no longer declared and does not re-create it.
        for removed in await remove_undeclared(js, name, consumers):
            log.info(
                "deleted a durable consumer the stack no longer declares",
                extra={"fields": {"stream": name, "consumer": removed}},
            )
        subjects = (wanted.subjects or [">"])[0]
        for created in await create_missing(js, name, subjects, consumers):
            log.info(
                "created a declared durable consumer",
                extra={"fields": {"stream": name, "consumer": created}},
            )
    return outcome


async def _refuse_partition_change(js: JetStreamContext, address: JetStreamAddress) -> None:
    base = re.escape(address.stream)
    ours = re.compile(rf"^{base}(-[0-9]+)?$")
    names: list[str] = []
    while True:  # the server answers in pages (256 streams each)
        page = await js.streams_info(offset=len(names))
        names += [info.config.name or "" for info in page]
        if not page:
            break
    existing = sorted(name for name in names if ours.match(name))
    wanted = sorted(part.stream for part in address.partition_addresses())
    if existing and existing != wanted:
        raise PartitionCountChanged(
            f"stream {address.stream!r} exists as {existing} ({len(existing)} partition(s)); "
            f"asked for {address.partitions} ({wanted}). Changing the partition count of a "
            "live stream would reorder users' events; follow 'Changing stream.partitions' in "
            "the README (drain the consumers, then recreate the streams)"
        )


async def _quiet(error: Exception) -> None:
    log.debug("NATS connection error", extra={"fields": {"error": repr(error)}})


def _same(current: StreamConfig, wanted: StreamConfig) -> bool:
    def key(config: StreamConfig) -> tuple[Any, ...]:
        return (
            sorted(config.subjects or []),
            config.retention,
            config.discard,
            config.max_bytes if config.max_bytes not in (None, 0) else -1,
            round(config.max_age or 0, 3),
            config.storage,
            config.num_replicas or 1,
            round(config.duplicate_window or 0, 3),
            (config.metadata or {}).get(DECLARED_KEY),
        )

    return key(current) == key(wanted)
