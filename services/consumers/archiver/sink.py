"""The archiver: the stream, microbatched into gzip NDJSON objects on S3 (or S3-compatible).

Layout (Hive-style partitions, readable by Athena/Spark/DuckDB as they are)::

    <prefix>source=<source>/year=YYYY/month=MM/day=DD/hour=HH/<partition>-<window>.json.gz

- ``source`` is the event's ``liftoff.source``; the hour is the event's ``receivedAt`` (UTC).
  Both are part of the message, so they are the same on every delivery.
- ``<partition>`` is where the message sits on the stream: the JetStream stream name, or the
  Kinesis shard id. ``<window>`` (20 digits) is a fixed window of *immutable* stream positions:
  on JetStream the first stream sequence of the window, ``sequence // W * W`` with
  ``W = LIFTOFF_ARCHIVE_WINDOW_EVENTS`` (default 10000); on Kinesis (sequence numbers are not
  dense) the start, in epoch seconds, of the ``LIFTOFF_ARCHIVE_WINDOW_SECONDS`` window (default
  60) containing the record's ``approximateArrivalTimestamp``. W must not change once data has
  been archived (a different W maps the same positions to different keys).

Why a replay never adds a copy: batch boundaries differ between runs (a crash, a restart,
different batch limits), so a key made of "first-last sequence of this batch" would not be
stable. Here the key depends only on per-message stream attributes, never on the batch. A flush
groups the batch by key and does a read-modify-write of each object: read the existing object
(if any), merge its lines with the new events by stream position (a position already present is
kept as it is), sort by position, and PUT the result only if it changed. Replaying any part of
the stream therefore rewrites nothing (every position is already there) and can never create a
second object holding an event. Within an object, a messageId that occurs at two positions
(a client retry the stream did not deduplicate) is kept once, at its first position; across
objects the archive is exactly-once per stream position (JetStream's duplicate window makes
that exactly-once per messageId for retries within the window; the warehouse deduplicates on
messageId in any case).

Each PUT is conditional (``If-Match: <etag read>`` / ``If-None-Match: *`` for a new object), so
two writers racing on one window (two archiver replicas, Lambda parallelization factor > 1)
cannot lose each other's lines: the loser re-reads and merges again. Endpoints that do not
implement conditional writes (``NotImplemented``) fall back to plain PUTs; then run one archiver
per stream partition.

Each line is the event exactly as on the stream with ``liftoff.position`` added:
``{"partition": "EVENTS", "sequence": "42"}`` (sequence as a decimal string: Kinesis sequence
numbers exceed 64 bits). Objects are gzip with a zero mtime, so the same lines give the same
bytes. The batch is acknowledged (checkpointed) only after every object it touched was written;
any S3 error makes the whole batch retry (``SinkUnavailable``), which is safe because writes are
idempotent.

Batches are bounded by ``LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS`` (default 10000) and
``LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS`` (default 60). Bucket: ``LIFTOFF_ARCHIVE_BUCKET``;
optional key prefix ``LIFTOFF_ARCHIVE_PREFIX``. S3 client: boto3's standard environment
(``AWS_REGION``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, credentials); with a custom
endpoint, path-style addressing is used (MinIO, Ceph, moto).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import msgspec

from services.archive.store import ArchiveLocation
from services.consumers.archiver.contract import (
    DEFAULT_BATCH_MAX_EVENTS,
    DEFAULT_BATCH_MAX_SECONDS,
    DEFAULT_WINDOW_EVENTS,
    DEFAULT_WINDOW_SECONDS,
    NAME,
    ArchiverFunctionSettings,
    ArchiverSettings,
    Archiving,
)
from services.consumers.runner.model import DONE, Delivery, Outcome, SinkUnavailable
from services.contract import or_default

log = logging.getLogger("liftoff.archiver")

MAX_CONFLICT_RETRIES = 8


@dataclass(frozen=True)
class ArchiverConfig(ArchiveLocation):
    """Where the archive is, and how events are grouped into objects (see the module
    docstring)."""

    window_events: int = DEFAULT_WINDOW_EVENTS
    window_seconds: int = DEFAULT_WINDOW_SECONDS

    @classmethod
    def load(cls, archiving: Archiving[str]) -> ArchiverConfig:
        location = ArchiveLocation.of(archiving.archive)
        return cls(
            **vars(location),
            window_events=or_default(archiving.window_events, DEFAULT_WINDOW_EVENTS),
            window_seconds=or_default(archiving.window_seconds, DEFAULT_WINDOW_SECONDS),
        )


class _Position(msgspec.Struct):
    sequence: str


class _Liftoff(msgspec.Struct):
    position: _Position


class _Line(msgspec.Struct):
    """The two things the merge needs from an archived line (the rest is not decoded)."""

    messageId: str
    liftoff: _Liftoff


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_Line)


def object_key(cfg: ArchiverConfig, delivery: Delivery) -> str:
    position = delivery.position
    if position.stream == "jetstream":
        window = position.sequence // cfg.window_events * cfg.window_events
    else:
        seconds = int(delivery.arrival.timestamp())
        window = seconds // cfg.window_seconds * cfg.window_seconds
    at = delivery.received_at
    return (
        f"{cfg.prefix}source={delivery.source}/year={at.year:04d}/month={at.month:02d}/"
        f"day={at.day:02d}/hour={at.hour:02d}/{position.partition}-{window:020d}.json.gz"
    )


def archive_line(delivery: Delivery) -> bytes:
    event = delivery.event
    liftoff = dict(event["liftoff"])
    liftoff["position"] = {
        "partition": delivery.position.partition,
        "sequence": str(delivery.position.sequence),
    }
    return _encoder.encode({**event, "liftoff": liftoff})


def merge_lines(existing: Sequence[bytes], new: Sequence[tuple[int, str, bytes]]) -> list[bytes]:
    """Existing archived lines + (sequence, messageId, line) of new events → the object's lines:
    one per position (existing wins), sorted by position, first position per messageId."""
    by_position: dict[int, tuple[str, bytes]] = {}
    for line in existing:
        parsed = _line_decoder.decode(line)
        by_position.setdefault(int(parsed.liftoff.position.sequence), (parsed.messageId, line))
    for sequence, message_id, line in new:
        by_position.setdefault(sequence, (message_id, line))
    seen: set[str] = set()
    merged = []
    for sequence in sorted(by_position):
        message_id, line = by_position[sequence]
        if message_id not in seen:
            seen.add(message_id)
            merged.append(line)
    return merged


def encode_object(lines: Sequence[bytes]) -> bytes:
    return gzip.compress(b"".join(line + b"\n" for line in lines), compresslevel=6, mtime=0)


def decode_object(body: bytes) -> list[bytes]:
    return [line for line in gzip.decompress(body).split(b"\n") if line]


class Archiver:
    """The archiver sink (see the module docstring)."""

    def __init__(self, cfg: ArchiverConfig, client: Any = None, concurrency: int = 8) -> None:
        self.cfg = cfg
        self._client = client
        self._concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._conditional = True

    def _ensure_client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.cfg.endpoint_url,
                region_name=self.cfg.region,
                config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=3,
                    read_timeout=20,
                    max_pool_connections=self._concurrency * 2,
                    s3={"addressing_style": "path"} if self.cfg.endpoint_url else None,
                ),
            )
        return self._client

    async def start(self) -> None:
        self._ensure_client()
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="archiver")

    async def check_ready(self) -> None:
        try:
            await self._run(lambda: self._ensure_client().head_bucket(Bucket=self.cfg.bucket))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise SinkUnavailable(f"bucket {self.cfg.bucket!r}: {error}") from error

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def _run(self, function: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function)

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        groups: dict[str, list[tuple[int, str, bytes]]] = defaultdict(list)
        for delivery in batch:
            groups[object_key(self.cfg, delivery)].append(
                (delivery.position.sequence, delivery.message_id, archive_line(delivery))
            )
        results = await asyncio.gather(
            *(
                self._run(lambda key=key, new=new: self._merge_write(key, new))
                for key, new in groups.items()
            ),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            if isinstance(
                failure, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError
            ):
                raise SinkUnavailable(f"S3: {failure}") from failure
        if failures:
            raise failures[0]
        written = sum(1 for result in results if result)
        log.debug(
            "archived batch",
            extra={"fields": {"events": len(batch), "objects": len(groups), "written": written}},
        )
        return [DONE] * len(batch)

    def _read(self, key: str) -> tuple[list[bytes], str | None]:
        try:
            response = self._client.get_object(Bucket=self.cfg.bucket, Key=key)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return [], None
            raise
        return decode_object(response["Body"].read()), response["ETag"]

    def _merge_write(self, key: str, new: list[tuple[int, str, bytes]]) -> bool:
        """Read-modify-write of one window object; True when it wrote."""
        for _ in range(MAX_CONFLICT_RETRIES):
            existing, etag = self._read(key)
            merged = merge_lines(existing, new)
            if etag is not None and merged == existing:
                return False  # a replay: every position is already archived
            condition: dict[str, str] = {}
            if self._conditional:
                condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            try:
                self._client.put_object(
                    Bucket=self.cfg.bucket,
                    Key=key,
                    Body=encode_object(merged),
                    ContentType="application/gzip",
                    **condition,
                )
                return True
            except botocore.exceptions.ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    continue  # another writer got there first: merge with what it wrote
                if code == "NotImplemented" and self._conditional:
                    log.warning("S3 endpoint has no conditional writes; using plain PUTs")
                    self._conditional = False
                    continue
                raise
        raise SinkUnavailable(f"{key}: still conflicting after {MAX_CONFLICT_RETRIES} attempts")


# --- the processes ---------------------------------------------------------------------------


def load(settings: ArchiverSettings[str] | ArchiverFunctionSettings[str]) -> ArchiverConfig:
    """What the archiver runs with (nothing is connected)."""
    return ArchiverConfig.load(settings.archiving)


def run(settings: ArchiverSettings[str]) -> int:
    """``python -m services archiver``."""
    from services.consumers.runner.process import run_batches

    archive = load(settings)
    bounds = (settings.batch_max_events, settings.batch_max_seconds)
    defaults = (DEFAULT_BATCH_MAX_EVENTS, DEFAULT_BATCH_MAX_SECONDS)
    return run_batches(settings.runtime, NAME, bounds, defaults, lambda: Archiver(archive))
