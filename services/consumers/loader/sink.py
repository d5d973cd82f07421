"""The warehouse loader: the stream into a Postgres ``events`` table, exactly once per messageId.

Per batch, one transaction: a binary ``COPY`` of the rows straight into ``events``, then the
typed rows the same events make in Segment's warehouse schema (one Postgres schema per source:
:mod:`services.consumers.loader.typed`, :mod:`services.warehouse`), committed (durably:
``synchronous_commit``); only then does the framework acknowledge the batch. The raw rows are
built from each event's typed envelope (:class:`services.consumers.runner.model.Envelope`: no
dicts, the JSON objects copied as sent). The schema changes the typed rows need (a new event's
table, a property's first non-null value) run before, in one short transaction of their own, so
a loader never waits for a table's lock while it holds rows of another (concurrent loaders do
not deadlock). A value that does not fit its typed column never fails the batch: it is stored
NULL there and kept in the source's ``discards`` table. ``message_id`` is the primary key, so a
batch holding a row that is already loaded (a replay, a redelivery after a crash between
commit and ack, a client retry the stream did not deduplicate) fails with a unique violation
and rolls back whole; the loader then takes the conflict path, in one transaction: ``COPY``
into a session-local staging table (``CREATE TEMP TABLE ... (LIKE events) ON COMMIT DELETE
ROWS``), ``INSERT INTO events SELECT ... FROM events_staging ON CONFLICT (message_id) DO
NOTHING RETURNING message_id``, and the typed rows of the ids it returns, ``COMMIT``. Either
way nothing is inserted twice. The straight path is the common one and does half the work
(``benchmarks/pipeline.py`` measures both against a plain COPY). Within a batch the first
occurrence (in stream order) of a messageId wins.

Schema: created and migrated idempotently on connect (at start when the warehouse is up, so
the table is there before the first event; else with the first batch), under a
transaction-scoped advisory lock (several loaders may start at once), with the applied
versions recorded in ``schema_migrations``. Migration 1::

    CREATE TABLE events (
        message_id         text PRIMARY KEY,
        type               text NOT NULL,          -- track, identify, page, screen, group, alias
        source             text NOT NULL,          -- liftoff.source
        event              text,                   -- track: the event name
        name               text,                   -- page/screen: the name
        user_id            text,
        anonymous_id       text,
        group_id           text,
        previous_id        text,
        "timestamp"        timestamptz NOT NULL,   -- skew-corrected event time
        received_at        timestamptz NOT NULL,   -- collector clock
        sent_at            timestamptz,            -- client's sentAt (NULL if absent/unparseable)
        original_timestamp text,                   -- the client's timestamp as sent
        properties         jsonb,
        traits             jsonb,
        context            jsonb,
        raw                jsonb NOT NULL,         -- the whole event as on the stream
        stream_partition   text NOT NULL,          -- JetStream stream / Kinesis shard
        stream_sequence    numeric NOT NULL,       -- position on it (Kinesis: > 64 bits)
        loaded_at          timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX events_received_at_idx ON events (received_at);
    CREATE INDEX events_user_id_idx ON events (user_id);

Bad events are parked (dead letter), never blocking: a ``timestamp`` that is not ISO-8601, or a
``\\u0000`` anywhere (PostgreSQL's text and jsonb cannot store NUL). Anything else PostgreSQL
rejects makes the COPY fail; the framework bisects the batch down to the event at fault and
parks it after a few attempts. A lost connection (``OperationalError``) retries the whole batch.

Connection: libpq variables (``PGHOST``, ``PGPORT``, ``PGDATABASE``, ``PGUSER``,
``PGPASSWORD``, ``PGSSLMODE``); on AWS the user and password (and, unless set, host, port and
database) come from the Secrets Manager secret ``LIFTOFF_WAREHOUSE_SECRET_ARN`` (JSON with
``username``, ``password``, ``dbname``, ``host``, ``port``), read once per cold start. Batches:
``LIFTOFF_LOADER_BATCH_MAX_EVENTS`` (default 5000), ``LIFTOFF_LOADER_BATCH_MAX_SECONDS`` (5).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format

from services.consumers.loader.contract import (
    DEFAULT_BATCH_MAX_EVENTS,
    DEFAULT_BATCH_MAX_SECONDS,
    NAME,
    LoaderFunctionSettings,
    LoaderSettings,
)
from services.consumers.loader.schema import COLUMN_LIST, COPY_TYPES, migrate
from services.consumers.loader.typed import STALE, Derived, TypedLoading
from services.consumers.runner.model import (
    DONE,
    Delivery,
    Outcome,
    Park,
    SinkUnavailable,
    parse_timestamp,
)
from services.observability import Counters
from services.postgres.contract import (
    PostgresAccess,
)
from services.postgres.database import warehouse_connection
from services.warehouse.typed import Declared

log = logging.getLogger("liftoff.loader")

COPY_OPTIONS = "FROM STDIN (FORMAT BINARY)"


class EncodedJsonbDumper(Dumper):
    """Binary jsonb from JSON text already encoded (the event's own bytes, a slice of them, or
    msgspec's encoding; a str is encoded to UTF-8): jsonb's binary format is a version byte
    (1) then the JSON text. psycopg's own jsonb dumper would encode the value again."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + (obj.encode() if isinstance(obj, str) else obj)


class EncodedJson(str):
    """Marker type the dumper is registered for; COPY picks it by the jsonb oid."""


_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class LoaderConfig:
    connection: Mapping[str, Any] = field(default_factory=dict)
    declared: Declared = field(default_factory=dict)
    """Declared column types of the typed tables: {source: {table: {column: type}}}."""

    @classmethod
    def load(cls, access: PostgresAccess[str], secret_arn: str | None = None) -> LoaderConfig:
        """The connection: libpq's variables, the password read from its file, and on AWS the
        user and password (and, unless set, host, port and database) from the secret."""
        return cls(warehouse_connection(access, secret_arn))


def _identifier(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else _encoder.encode(value).decode()


def _json(value: Any) -> bytes | None:
    return None if value is None else _encoder.encode(value)


def _text(value: msgspec.Raw) -> msgspec.Raw | None:
    """A JSON value's text, None when absent or null (as the general path's ``_json``)."""
    return None if not value or (len(value) == 4 and bytes(value) == b"null") else value


_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
"""A JSON escape of the NUL code point: ``\\u0000`` after an even number of backslashes (an
odd one makes it the six characters ``\\u0000``, text PostgreSQL stores like any other)."""


def row_of(delivery: Delivery) -> tuple[Any, ...] | str:
    """The events row for ``delivery``, or why it cannot be loaded. The jsonb columns hold
    JSON text as bytes-like objects (the binary COPY's dumper takes them as they are)."""
    if b"\\u0000" in delivery.data and _NUL_ESCAPE.search(delivery.data):
        return "contains \\u0000, which PostgreSQL text and jsonb cannot store"
    envelope = delivery.envelope
    if envelope is not None:  # the common case: the typed fields, no dicts
        timestamp = parse_timestamp(envelope.timestamp)
        if timestamp is None:
            return f"timestamp {envelope.timestamp!r} is not an ISO-8601 timestamp"
        event_type = delivery.type
        return (
            delivery.message_id,
            event_type,
            delivery.source,
            (envelope.event or None) if event_type == "track" else None,
            (envelope.name or None) if event_type in ("page", "screen") else None,
            envelope.user_id or None,
            envelope.anonymous_id or None,
            envelope.group_id or None,
            envelope.previous_id or None,
            timestamp,
            delivery.received_at,
            parse_timestamp(envelope.sent_at),
            envelope.original_timestamp,
            _text(envelope.properties),
            _text(envelope.traits),
            _text(envelope.context),
            delivery.data,
            delivery.position.partition,
            delivery.position.sequence,
        )
    event = delivery.event
    timestamp = parse_timestamp(event.get("timestamp"))
    if timestamp is None:
        return f"timestamp {event.get('timestamp')!r} is not an ISO-8601 timestamp"
    sent_at = parse_timestamp(event.get("sentAt"))
    original = event.get("originalTimestamp")
    return (
        delivery.message_id,
        delivery.type,
        delivery.source,
        _identifier(event.get("event")) if delivery.type == "track" else None,
        _identifier(event.get("name")) if delivery.type in ("page", "screen") else None,
        _identifier(event.get("userId")),
        _identifier(event.get("anonymousId")),
        _identifier(event.get("groupId")),
        _identifier(event.get("previousId")),
        timestamp,
        delivery.received_at,
        sent_at,
        original if isinstance(original, str) or original is None else _json(original),
        _json(event.get("properties")),
        _json(event.get("traits")),
        _json(event.get("context")),
        delivery.data,
        delivery.position.partition,
        delivery.position.sequence,
    )


class Loader:
    """The loader sink (see the module docstring)."""

    def __init__(self, cfg: LoaderConfig) -> None:
        self.cfg = cfg
        self._connection: psycopg.Connection | None = None
        # One thread: psycopg's blocking calls stay off the event loop, one connection in use.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="loader")
        self.counters = Counters()
        """The loader's own metrics (typed discards), on the consumer's /metrics."""
        self._typed = TypedLoading(cfg.declared, self.counters)

    async def start(self) -> None:
        # The schema now, when the warehouse is up: the events table then exists before the
        # consumer reports ready, so a query right after the first event finds the table
        # (empty until the batch lands), not an error. A warehouse that is down is no reason
        # not to start: the first batch connects (and migrates) again.
        try:
            await self.check_ready()
        except (SinkUnavailable, psycopg.Error) as error:
            log.warning(
                "warehouse not reachable at start; the schema is created on the first batch",
                extra={"fields": {"error": str(error).strip()}},
            )

    async def close(self) -> None:
        await self._run(self._disconnect)
        self._pool.shutdown(wait=False)

    async def check_ready(self) -> None:
        await self._run(lambda: self._connect().execute("SELECT 1"))

    async def _run(self, function: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function)
        except psycopg.OperationalError as error:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._disconnect)
            raise SinkUnavailable(f"warehouse: {error}".strip()) from error

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None

    def _connect(self) -> psycopg.Connection:
        if self._connection is not None and not self._connection.closed:
            if not self._connection.broken:
                return self._connection
            self._disconnect()
        # Autocommit: the straight COPY is then one statement and its own transaction (no
        # BEGIN round trip); everything that needs more than one statement opens a transaction.
        connection = psycopg.connect(
            connect_timeout=5,
            application_name="liftoff-loader",
            autocommit=True,
            **self.cfg.connection,
        )
        connection.adapters.register_dumper(EncodedJson, EncodedJsonbDumper)
        try:
            applied = migrate(connection)
            if applied:
                log.info("migrated the warehouse schema", extra={"fields": {"applied": applied}})
            connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS events_staging "
                "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            connection.commit()
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._typed.forget()
        return connection

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        outcomes: list[Outcome] = [DONE] * len(batch)
        rows: list[tuple[Any, ...]] = []
        seen: set[str] = set()
        for index, delivery in enumerate(batch):
            row = row_of(delivery)
            if isinstance(row, str):
                outcomes[index] = Park(row)
            elif delivery.message_id not in seen:  # the first occurrence wins
                seen.add(delivery.message_id)
                rows.append(row)
        await self._run(lambda: self._load(rows))
        return outcomes

    def _load(self, rows: list[tuple[Any, ...]]) -> int:
        """Load ``rows`` and their typed rows; returns the raw rows inserted."""
        if not rows:
            return 0  # nothing to load (all parked): the warehouse need not even be up
        connection = self._connect()
        derived = self._typed.derive(rows)
        try:
            try:
                inserted, discards = self._load_once(connection, rows, derived)
            except STALE as error:  # a table changed under the cached columns: once more
                log.info("typed table changed; reading its columns again", extra={"fields": {
                    "error": str(error).strip()}})  # fmt: skip
                self._typed.forget()
                inserted, discards = self._load_once(connection, rows, derived)
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            if connection.broken:
                self._disconnect()
                raise psycopg.OperationalError("the connection broke during the load") from None
            raise
        self._typed.count(discards)
        log.debug("loaded", extra={"fields": {"rows": len(rows), "inserted": inserted}})
        return inserted

    def _load_once(
        self, connection: psycopg.Connection, rows: list[tuple[Any, ...]], derived: Derived
    ) -> tuple[int, Any]:
        # Schema changes first, in a short transaction of their own (no rows held meanwhile).
        self._typed.prepare(connection, derived)
        try:
            with connection.transaction():
                inserted = self._copy_straight(connection, rows)
                return inserted, self._typed.write(connection, derived, None)
        except psycopg.errors.UniqueViolation:
            # Some of these rows are already loaded (a replay, or a redelivery after a crash
            # between commit and ack): the transaction rolled back, nothing of it was written;
            # the staging path skips the rows that exist, and their typed rows with them.
            with connection.transaction():
                fresh = self._copy_through_staging(connection, rows)
                return len(fresh), self._typed.write(connection, derived, fresh)

    @staticmethod
    def _copy_straight(connection: psycopg.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
        """The common case, no row loaded before: one COPY into ``events``, in autocommit mode
        its own transaction, committed when it returns (half the work of staging + INSERT ...
        SELECT; the primary key still rejects a repeat, which rolls the whole COPY back)."""
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY events ({COLUMN_LIST}) {COPY_OPTIONS}") as copy,
        ):
            copy.set_types(COPY_TYPES)
            count = 0
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    @staticmethod
    def _copy_through_staging(
        connection: psycopg.Connection, rows: list[tuple[Any, ...]]
    ) -> set[str]:
        """The message ids inserted now (the rest were there), in the caller's transaction."""
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY events_staging ({COLUMN_LIST}) {COPY_OPTIONS}") as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO events ({COLUMN_LIST}) SELECT {COLUMN_LIST} "
                "FROM events_staging ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
            )
            return {row[0] for row in cursor.fetchall()}


# --- the processes ---------------------------------------------------------------------------


def load(settings: LoaderSettings[str] | LoaderFunctionSettings[str]) -> LoaderConfig:
    """What the loader runs with: the warehouse's password read (nothing is connected)."""
    secret_arn = getattr(settings, "warehouse_secret_arn", None)
    loaded = LoaderConfig.load(settings.warehouse, secret_arn)
    return dataclasses.replace(loaded, declared=settings.columns or {})


def run(settings: LoaderSettings[str]) -> int:
    """``python -m services loader``."""
    from services.consumers.runner.process import run_batches

    warehouse = load(settings)
    bounds = (settings.batch_max_events, settings.batch_max_seconds)
    defaults = (DEFAULT_BATCH_MAX_EVENTS, DEFAULT_BATCH_MAX_SECONDS)
    # A batch closes as soon as the loader has caught up: under light load an event is in the
    # warehouse in well under a second instead of after the batch age (benchmarks/typed_loading.py).
    return run_batches(
        settings.runtime,
        NAME,
        bounds,
        defaults,
        lambda: Loader(warehouse),
        close_when_caught_up=True,
    )
