"""Warehouse reconciliation: load the events of one archived hour that the warehouse lacks.

The archive (:mod:`services.consumers.archiver.sink`) and the warehouse
(:mod:`services.consumers.loader.sink`) are fed by two independent consumers of the same stream.
Anything that made one of them miss an event (a dead-lettered batch replayed by hand, a loader
outage longer than the stream's retention, a dropped table) leaves a gap in the warehouse that the
archive can fill. For one UTC hour:

1. list every archive object of that hour, for every source: the archiver's keys are
   ``<prefix>source=<source>/year=/month=/day=/hour=/<partition>-<window>.json.gz`` and the
   hour is the event's ``receivedAt``, so the warehouse rows of that hour have the same
   ``received_at`` hour;
2. stream each object (gzip NDJSON) line by line, decoding only ``messageId`` and the stream
   position at first; lines are gathered in chunks of ``chunk_events``;
3. per chunk, ask the warehouse which of those messageIds it already has (primary-key lookup,
   ``message_id = ANY(...)``, anywhere in the table: the messageId is the dedupe key end to
   end, whatever hour a duplicate was received in);
4. fully decode only the missing ones, check them against the stream contract
   (:func:`services.consumers.runner.model.decode`), map them with the loader's own :func:`row_of`
   and load them through the loader's own COPY to staging + ``INSERT ... ON CONFLICT (message_id) DO
   NOTHING`` (:class:`services.consumers.loader.sink.Loader`), one transaction per chunk.

Guarantees: idempotent (a second run finds nothing missing and loads nothing; a row the
streaming loader inserts concurrently is skipped by ``ON CONFLICT``), never a second copy of a
messageId (primary key), the first occurrence in archive order wins (objects in key order,
lines in stream order — as the loader's "first in stream order"), memory bounded by one chunk
plus one gzip stream. The ``raw`` column gets the event as it was on the stream (the archive
line without the ``liftoff.position`` the archiver added), so a restored row equals the row the
streaming loader would have written, ``loaded_at`` aside.

Events the loader itself would refuse (``timestamp`` not ISO-8601, ``\\u0000``, a row
PostgreSQL rejects — the streaming loader parks those in the dead letter) are counted as
``unloadable`` with their reasons and do not fail the run: they can never be loaded. An object
that cannot be read (not gzip, truncated, a line that is not a contract event) is listed in
``corrupt``; the rest of the hour is still repaired, and the run then fails (CLI exit 1, the
Lambda raises) so that someone looks at it. S3 and PostgreSQL errors fail the run at once (the
DAG retries it; nothing is half-done that a retry would not redo).

Configuration (:mod:`services.consumers.reconcile.contract`): the warehouse as for the loader
(:meth:`services.consumers.loader.sink.LoaderConfig.load`: ``PGHOST`` ... ``PGPASSWORD`` or
``PGPASSWORD_FILE``, or ``LIFTOFF_WAREHOUSE_SECRET_ARN``), the archive as for the archiver
(:meth:`services.consumers.archiver.sink.ArchiverConfig.load`: ``LIFTOFF_ARCHIVE_BUCKET``,
optional ``LIFTOFF_ARCHIVE_PREFIX``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION``;
credentials by boto3's own chain, e.g. ``AWS_SHARED_CREDENTIALS_FILE``).
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.config
import botocore.exceptions
import msgspec
import psycopg

from services.archive.store import s3_client
from services.consumers.archiver.contract import Archiving
from services.consumers.archiver.sink import ArchiverConfig, object_key
from services.consumers.loader.sink import Loader, LoaderConfig, row_of
from services.consumers.reconcile.contract import ReconcileSettings
from services.consumers.runner.model import Delivery, Position, decode
from services.contract import ConfigError, level_of
from services.observability import configure_logging

log = logging.getLogger("liftoff.reconcile")

CHUNK_EVENTS = 5000
MAX_REPORTED = 20
"""At most this many corrupt objects / unloadable reasons are listed (all are counted)."""


class ReconcileIncomplete(Exception):
    """Some archive objects could not be read; the summary (``.summary``) lists them."""

    def __init__(self, summary: Summary) -> None:
        super().__init__(
            f"{summary.hour}: {summary.corrupt_objects} archive object(s) could not be read: "
            + "; ".join(f"{item['key']}: {item['error']}" for item in summary.corrupt)
        )
        self.summary = summary


@dataclass
class Summary:
    hour: str
    objects: int = 0
    """Archive objects of the hour."""
    archived: int = 0
    """Events read from them (lines)."""
    in_warehouse: int = 0
    """Of those, already in the warehouse when checked."""
    missing: int = 0
    """Not in the warehouse when checked (one per messageId)."""
    loaded: int = 0
    """Rows this run inserted (≤ missing: a concurrent loader may insert some first)."""
    duplicates: int = 0
    """Lines repeating a messageId seen earlier in the same chunk (the first one is used)."""
    unloadable: int = 0
    """Missing events the loader refuses (its dead-letter cases); see ``unloadable_reasons``."""
    unloadable_reasons: list[dict[str, str]] = field(default_factory=list)
    corrupt_objects: int = 0
    corrupt: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.corrupt_objects == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- the hour -----------------------------------------------------------------------------------


def iso_moment(text: str) -> datetime | None:
    """``text`` as an ISO-8601 time (a trailing ``Z`` is UTC); None when it is not one."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_hour(text: str) -> datetime:
    """``2026-11-27T10`` (also ``...T10:00``, ``...T10:00:00Z``) → that hour, UTC."""
    moment = iso_moment(text)
    if moment is None:
        raise ConfigError(f"hour {text!r} is not an ISO-8601 UTC hour such as 2026-11-27T10")
    if moment.tzinfo is not None:
        if moment.utcoffset() != timedelta(0):
            raise ConfigError(f"hour {text!r} must be in UTC")
        moment = moment.replace(tzinfo=None)
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0) or "T" not in text:
        raise ConfigError(f"hour {text!r} must name a whole hour, such as 2026-11-27T10")
    return moment.replace(tzinfo=UTC)


def hours_ago(count: int, now: datetime | None = None) -> datetime:
    """The UTC hour ``count`` hours before the current one (0 = the current hour)."""
    if count < 0:
        raise ConfigError(f"hours ago must be 0 or more, got {count}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=count)


_hours_ago = hours_ago  # for run(), whose option of that name shadows it


def format_hour(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H")


# --- the archive --------------------------------------------------------------------------------


def hour_prefix(cfg: ArchiverConfig, source: str, hour: datetime) -> str:
    """The key prefix of every object the archiver writes for ``source`` and ``hour``: derived
    from :func:`services.consumers.archiver.sink.object_key` itself, so the two can never
    disagree."""
    probe = Delivery(
        data=b"",
        position=Position("jetstream", "p", 0),
        arrival=hour,
        source=source,
        received_at=hour,
    )
    return object_key(cfg, probe).rpartition("/")[0] + "/"


def list_sources(client: Any, cfg: ArchiverConfig) -> list[str]:
    """The sources that have a ``source=<name>/`` prefix in the archive, sorted."""
    sources = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=cfg.bucket, Prefix=f"{cfg.prefix}source=", Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(cfg.prefix) + len("source=") :].rstrip("/")
            if name:
                sources.append(name)
    return sorted(sources)


def list_hour_objects(client: Any, cfg: ArchiverConfig, hour: datetime) -> list[str]:
    """Every archive object key of ``hour``, all sources, in key order."""
    keys = []
    paginator = client.get_paginator("list_objects_v2")
    for source in list_sources(client, cfg):
        prefix = hour_prefix(cfg, source, hour)
        for page in paginator.paginate(Bucket=cfg.bucket, Prefix=prefix, Delimiter="/"):
            keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


class _Position(msgspec.Struct):
    partition: str
    sequence: str


class _Liftoff(msgspec.Struct):
    position: _Position


class _Head(msgspec.Struct):
    """What the comparison needs from an archived line (the rest is decoded only if missing)."""

    messageId: str
    liftoff: _Liftoff


_head_decoder = msgspec.json.Decoder(_Head)
_event_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class CorruptObject(Exception):
    pass


def archive_lines(client: Any, bucket: str, key: str) -> Iterator[tuple[str, bytes]]:
    """(messageId, line) of each line of one archive object, streamed (never whole in memory).

    Raises :class:`CorruptObject` on a body that is not gzip NDJSON of archived events."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    number = 0
    try:
        with gzip.GzipFile(fileobj=body, mode="rb") as stream:
            for number, line in enumerate(stream, start=1):
                line = line.rstrip(b"\n")
                if not line:
                    continue
                try:
                    head = _head_decoder.decode(line)
                except msgspec.DecodeError as error:
                    raise CorruptObject(f"line {number}: {error}") from None
                if not head.messageId:
                    raise CorruptObject(f"line {number}: empty messageId")
                yield head.messageId, line
        if number == 0:
            raise CorruptObject("no events in the object")
    except botocore.exceptions.BotoCoreError:
        raise  # S3 down or slow (some of these are OSErrors): fail the run, not the object
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise CorruptObject(f"after line {number}: {type(error).__name__}: {error}") from None
    finally:
        body.close()


def delivery_of(line: bytes) -> Delivery | str:
    """The archived line as the loader received it from the stream, or why it is not an event."""
    try:
        event = _event_decoder.decode(line)
        position = event["liftoff"].pop("position")
        partition, sequence = str(position["partition"]), int(position["sequence"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        return f"not an archived event: {error}"
    delivery = Delivery(
        data=_encoder.encode(event),  # the event as it was on the stream (jsonb: same value)
        position=Position(
            "kinesis" if partition.startswith("shardId-") else "jetstream", partition, sequence
        ),
        arrival=datetime.min.replace(tzinfo=UTC),
    )
    problem = decode(delivery)
    if problem is not None:
        return problem
    delivery.arrival = delivery.received_at
    return delivery


# --- the comparison and the load ----------------------------------------------------------------


class Reconciler:
    """Reconciles hours of one archive into one warehouse. Use as a context manager."""

    def __init__(
        self,
        archive: ArchiverConfig,
        warehouse: LoaderConfig,
        *,
        client: Any = None,
        chunk_events: int = CHUNK_EVENTS,
    ) -> None:
        self.archive = archive
        self.client = client if client is not None else s3_client(archive)
        # The loader itself: its connection (schema migrated, staging table) and its COPY path.
        self.loader = Loader(warehouse)
        self.chunk_events = chunk_events

    @classmethod
    def load(cls, settings: ReconcileSettings[str], **options: Any) -> Reconciler:
        """The archive and the warehouse the settings name (the warehouse's password read from
        its file or secret)."""
        return cls(
            ArchiverConfig.load(Archiving(archive=settings.archive)),
            _warehouse(settings),
            **options,
        )

    def close(self) -> None:
        self.loader._disconnect()
        self.loader._pool.shutdown(wait=False)

    def __enter__(self) -> Reconciler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reconcile(self, hour: datetime) -> Summary:
        summary = Summary(hour=format_hour(hour))
        keys = list_hour_objects(self.client, self.archive, hour)
        summary.objects = len(keys)
        chunk: list[tuple[str, bytes]] = []
        for key in keys:
            try:
                for message_id, line in archive_lines(self.client, self.archive.bucket, key):
                    chunk.append((message_id, line))
                    if len(chunk) >= self.chunk_events:
                        self._repair(chunk, summary)
                        chunk = []
            except CorruptObject as error:
                # The lines read before the damage are good events: they are repaired too.
                summary.corrupt_objects += 1
                if len(summary.corrupt) < MAX_REPORTED:
                    summary.corrupt.append({"key": key, "error": str(error)})
                log.error(
                    "corrupt archive object", extra={"fields": {"key": key, "error": str(error)}}
                )
        if chunk:
            self._repair(chunk, summary)
        log.info("reconciled", extra={"fields": summary.as_dict()})
        return summary

    def _present(self, message_ids: list[str]) -> set[str]:
        connection = self.loader._connect()
        rows = connection.execute(
            "SELECT message_id FROM events WHERE message_id = ANY(%s)", (message_ids,)
        ).fetchall()
        # End the read transaction: the load opens its own (and nothing idles in transaction).
        connection.commit()
        return {row[0] for row in rows}

    def _repair(self, chunk: list[tuple[str, bytes]], summary: Summary) -> None:
        summary.archived += len(chunk)
        first: dict[str, bytes] = {}
        for message_id, line in chunk:
            if message_id in first:
                summary.duplicates += 1
            else:
                first[message_id] = line
        present = self._present(list(first))
        summary.in_warehouse += len(present)
        rows = []
        for message_id, line in first.items():
            if message_id in present:
                continue
            summary.missing += 1
            delivery = delivery_of(line)
            row = row_of(delivery) if isinstance(delivery, Delivery) else delivery
            if isinstance(row, str):
                self._unloadable(summary, message_id, row)
            else:
                rows.append(row)
        if rows:
            summary.loaded += self._load(rows, summary)

    def _load(self, rows: list[tuple[Any, ...]], summary: Summary) -> int:
        """The loader's COPY + INSERT ON CONFLICT; a row PostgreSQL rejects is isolated by
        bisection (as the consumer framework does) and counted unloadable."""
        try:
            return self.loader._load(rows)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as error:
            if len(rows) == 1:
                self._unloadable(summary, rows[0][0], f"PostgreSQL: {error}".strip())
                return 0
        middle = len(rows) // 2
        return self._load(rows[:middle], summary) + self._load(rows[middle:], summary)

    @staticmethod
    def _unloadable(summary: Summary, message_id: str, reason: str) -> None:
        summary.unloadable += 1
        if len(summary.unloadable_reasons) < MAX_REPORTED:
            summary.unloadable_reasons.append({"messageId": message_id, "reason": reason})


def reconcile_hour(settings: ReconcileSettings[str], hour: datetime) -> Summary:
    """Reconcile ``hour`` with the archive and warehouse the settings name."""
    with Reconciler.load(settings) as reconciler:
        return reconciler.reconcile(hour)


def _warehouse(settings: ReconcileSettings[str]) -> LoaderConfig:
    """The loader's configuration: the connection, and the declared column types."""
    loaded = LoaderConfig.load(settings.warehouse, settings.warehouse_secret_arn)
    return dataclasses.replace(loaded, declared=settings.columns or {})


# --- the processes ---------------------------------------------------------------------------


def load(settings: ReconcileSettings[str]) -> tuple[ArchiverConfig, LoaderConfig]:
    """What a run reads from: the archive and the warehouse (password read; nothing connected)."""
    return (
        ArchiverConfig.load(Archiving(archive=settings.archive)),
        _warehouse(settings),
    )


def run(
    settings: ReconcileSettings[str], hour: str | None = None, hours_ago: int | None = None
) -> int:
    """``python -m services reconcile``: repair one UTC hour; prints the summary as one JSON
    line. Exit 0 when complete, 1 when an archive object is corrupt or the run failed."""
    import json

    configure_logging(level_of(settings.log_level))
    at = parse_hour(hour) if hour is not None else _hours_ago(hours_ago or 0)
    try:
        summary = reconcile_hour(settings, at)
    except ConfigError:
        raise
    except Exception as error:
        log.error("reconciliation failed", extra={"fields": {"error": repr(error)}})
        return 1
    print(json.dumps(summary.as_dict(), sort_keys=True), flush=True)
    return 0 if summary.ok else 1


def handle(event: dict[str, Any] | None, settings: ReconcileSettings[str]) -> dict[str, Any]:
    """The Lambda function (invoked by the DAG on MWAA): ``{"hour": "2026-11-27T10"}`` or
    ``{"hoursAgo": 1}``. Returns the summary; raises when the hour could not be fully
    reconciled, so the invocation (and the Airflow task waiting on it) fails."""
    configure_logging(level_of(settings.log_level))
    event = event or {}
    if event.get("hour") is not None:
        at = parse_hour(str(event["hour"]))
    elif event.get("hoursAgo") is not None:
        try:
            count = int(event["hoursAgo"])
        except (TypeError, ValueError):
            raise ConfigError(f"hoursAgo {event['hoursAgo']!r} is not an integer") from None
        at = _hours_ago(count)
    else:
        raise ConfigError('the event needs "hour" (e.g. "2026-11-27T10") or "hoursAgo"')
    summary = reconcile_hour(settings, at)
    if not summary.ok:
        raise ReconcileIncomplete(summary)
    return summary.as_dict()
