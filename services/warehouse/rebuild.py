"""Rebuild a source's typed tables from the raw ``events`` table (or the archive) and swap them
in atomically, while the loader keeps loading: ``python -m services warehouse-rebuild``.

How (each step its own short transaction unless said otherwise):

1. **Build**: a shadow schema (``liftoff_rebuild_<hash of the schema>``, dropped first if a
   failed run left one) is filled by the typed layer's own writer
   (:class:`~services.warehouse.writer.TypedWriter`, with the declared column types) from every
   event of the source, read from ``events`` through a server-side cursor (or streamed from the
   archive's gzip NDJSON objects), :data:`CHUNK_EVENTS` events per transaction: memory stays
   bounded by a chunk whatever the source's size. The messageIds written are kept in a
   temporary table.
2. **Catch up** (no lock): the source's raw events loaded since (not in that table) are written
   too, round after round, until a round finds fewer than a chunk, or finds no fewer than the
   round before (the loader is as fast as the catch-up: waiting longer would not converge), or
   after :data:`CATCH_UP_ROUNDS` rounds; the swap writes what is left while loads wait.
3. **Swap**, one transaction: the typed layer's DDL advisory locks on the tables, then ``LOCK
   TABLE ... ACCESS EXCLUSIVE`` on the live ones (each with ``lock_timeout``
   :data:`LOCK_TIMEOUT`, retried :data:`SWAP_ATTEMPTS` times: a long dashboard query delays
   the swap, never the loader for long); the last raw events are written; a column the live
   table has and the shadow lacks (a property of a batch in flight) is added; the tables'
   discards are replaced; each live table is dropped and its shadow moved in with ``ALTER
   TABLE ... SET SCHEMA``; the shadow schema dropped. A loader's batch that waited on the lock
   commits after the swap into the new tables (PostgreSQL resolves a table's name again after
   waiting for its lock), and its raw rows were not visible to step 3, so none is counted twice
   or lost: the raw table, the source of truth, decides what is in the typed tables.

Readers see the old tables until the swap commits, then the new ones: no moment without a
table. A view on a rebuilt table makes the swap fail (``DROP TABLE`` refuses; nothing changes):
drop and recreate such views around a rebuild.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from services.archive.store import ArchiveLocation
from services.warehouse.names import source_schema
from services.warehouse.typed import CALL_TABLES, derive
from services.warehouse.writer import DISCARDS_DDL, TypedWriter, WriteCounts

log = logging.getLogger("liftoff.warehouse.rebuild")

CHUNK_EVENTS = 5000
"""Events per build transaction (and per fetch of the server-side cursor)."""
CATCH_UP_ROUNDS = 8
"""At most this many catch-up rounds before the swap (see the module docstring, step 2)."""
LOCK_TIMEOUT = "10s"
SWAP_ATTEMPTS = 6
SHADOW_PREFIX = "liftoff_rebuild_"
DISCARD_COLUMNS = (
    "table_name",
    "column_name",
    "column_type",
    "value",
    "message_id",
    "received_at",
    "uuid_ts",
)
# Which raw event types feed a table; any other table is a track event's own table.
_TYPES_OF: Mapping[str, tuple[str, ...]] = {
    **{table: (call,) for call, table in CALL_TABLES.items()},
    "users": ("identify",),
    "identity_map": ("alias", "identify"),
}
_decoder = msgspec.json.Decoder()

Chunk = Sequence[tuple[str, bytes]]
"""(messageId, the event's JSON) of up to :data:`CHUNK_EVENTS` events."""


class RebuildRunning(Exception):
    """Another rebuild of the same source holds its shadow schema."""


@dataclass
class Summary:
    source: str
    schema: str
    tables: list[str] = field(default_factory=list)
    events: int = 0
    """Events read in the build (from the raw table or the archive)."""
    caught_up: int = 0
    """Events loaded during the build, written before and during the swap."""
    rows: dict[str, int] = field(default_factory=dict)
    discards: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, counts: WriteCounts) -> None:
        for table, count in counts.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count
        for table, count in counts.discards.items():
            self.discards[table] = self.discards.get(table, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "schema": self.schema,
            "tables": self.tables,
            "events": self.events,
            "caughtUp": self.caught_up,
            "rows": dict(sorted(self.rows.items())),
            "discards": dict(sorted(self.discards.items())),
            "seconds": round(self.seconds, 3),
        }


def shadow_schema(schema: str) -> str:
    """The shadow schema of ``schema``: a fixed short name (a suffix could pass 63 bytes)."""
    return SHADOW_PREFIX + hashlib.sha256(schema.encode()).hexdigest()[:16]


def event_types(tables: Iterable[str] | None) -> tuple[str, ...] | None:
    """The raw event types that feed ``tables`` (None: every type)."""
    if tables is None:
        return None
    return tuple(sorted({kind for table in tables for kind in _TYPES_OF.get(table, ("track",))}))


def ddl_lock(schema: str, table: str) -> str:
    """The advisory lock name :class:`TypedWriter` changes ``schema.table``'s columns under."""
    return f"liftoff.warehouse {schema}.{table}"


def _source_filter(source: str, types: Sequence[str] | None) -> tuple[sql.Composable, list[Any]]:
    condition: sql.Composable = sql.SQL("e.source = %s")
    params: list[Any] = [source]
    if types is not None:
        condition = sql.SQL("{} AND e.type = ANY(%s)").format(condition)
        params.append(list(types))
    return condition, params


def raw_chunks(
    connection: psycopg.Connection, source: str, types: Sequence[str] | None
) -> Iterator[Chunk]:
    """The source's events in the raw table, streamed through a server-side cursor."""
    condition, params = _source_filter(source, types)
    query = sql.SQL("SELECT e.message_id, e.raw::text FROM events e WHERE {}").format(condition)
    with connection.transaction(), connection.cursor(name="liftoff_rebuild_raw") as cursor:
        cursor.itersize = CHUNK_EVENTS
        cursor.execute(query, params)
        while chunk := cursor.fetchmany(CHUNK_EVENTS):
            yield [(message_id, raw.encode()) for message_id, raw in chunk]


class Rebuild:
    """One rebuild of ``source``'s typed tables in ``schema`` (see the module docstring) on
    ``connection`` (autocommit; the temporary table of messageIds lives in its session)."""

    def __init__(
        self,
        connection: psycopg.Connection,
        source: str,
        *,
        tables: Sequence[str] | None = None,
        declared: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.connection = connection
        self.source = source
        self.schema = source_schema(source)
        self.shadow = shadow_schema(self.schema)
        self.tables = tuple(sorted(set(tables))) if tables else None
        self.types = event_types(self.tables)
        self.writer = TypedWriter(connection, self.shadow, declared)
        self.summary = Summary(source, self.schema)

    def start(self) -> None:
        """A fresh shadow schema and an empty table of the messageIds written, once no other
        rebuild of the source runs (a session lock, released when the connection closes)."""
        shadow = sql.Identifier(self.shadow)
        (alone,) = self.connection.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (f"liftoff.rebuild {self.schema}",)
        ).fetchone() or (False,)
        if not alone:
            raise RebuildRunning(f"another rebuild of source {self.source!r} is running")
        with self.connection.transaction():
            self.connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(shadow))
            self.connection.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS liftoff_rebuilt (message_id text PRIMARY KEY)"
            )
            self.connection.execute("TRUNCATE liftoff_rebuilt")
        self.writer.forget()

    def write(self, chunk: Chunk) -> None:
        """``chunk``'s typed rows into the shadow tables (in the caller's transaction, if any)."""
        rows = []
        for _, data in chunk:
            event = _decoder.decode(data)
            rows += [row for row in derive(event) if self._selected(row[0])]
        if rows:
            self.summary.add(self.writer.write(rows))
        with (
            self.connection.cursor() as cursor,
            cursor.copy("COPY liftoff_rebuilt (message_id) FROM STDIN") as copy,
        ):
            for message_id, _ in chunk:
                copy.write_row((message_id,))

    def _selected(self, table: str) -> bool:
        return self.tables is None or table in self.tables

    def build(self, chunks: Iterable[Chunk], *, repeated: bool = False) -> None:
        """Step 1: every chunk, one transaction each. ``repeated``: a messageId may come again
        (the archive holds redeliveries); only its first event is written."""
        for chunk in chunks:
            with self.connection.transaction():
                self.write(self._first_seen(chunk) if repeated else chunk)
            self.summary.events += len(chunk)
        self.connection.execute("ANALYZE liftoff_rebuilt")

    def _first_seen(self, chunk: Chunk) -> Chunk:
        fresh = dict(reversed(chunk))  # the first event of each messageId in the chunk
        seen = self.connection.execute(
            "SELECT message_id FROM liftoff_rebuilt WHERE message_id = ANY(%s)", (list(fresh),)
        ).fetchall()
        for (message_id,) in seen:
            del fresh[message_id]
        return list(fresh.items())

    def _missing(self) -> Iterator[Chunk]:
        """The source's raw events not written yet (a server-side cursor, in the current
        transaction)."""
        condition, params = _source_filter(self.source, self.types)
        query = sql.SQL(
            "SELECT e.message_id, e.raw::text FROM events e WHERE {} AND NOT EXISTS"
            " (SELECT 1 FROM liftoff_rebuilt r WHERE r.message_id = e.message_id)"
        ).format(condition)
        with self.connection.cursor(name="liftoff_rebuild_missing") as cursor:
            cursor.execute(query, params)
            while chunk := cursor.fetchmany(CHUNK_EVENTS):
                yield [(message_id, raw.encode()) for message_id, raw in chunk]

    def catch_up(self) -> None:
        """Step 2: what was loaded meanwhile, round after round while that converges (a loader
        as fast as the catch-up would otherwise keep it going forever)."""
        before = None
        for _ in range(CATCH_UP_ROUNDS):
            written = 0
            with self.connection.transaction():
                for chunk in self._missing():
                    self.write(chunk)
                    written += len(chunk)
            self.summary.caught_up += written
            if written < CHUNK_EVENTS or (before is not None and written >= before):
                return
            before = written

    def swap(self) -> None:
        """Step 3, retried while a lock is not granted within :data:`LOCK_TIMEOUT`."""
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            try:
                with self.connection.transaction():
                    self._swap()
                return
            except psycopg.errors.LockNotAvailable:
                if attempt == SWAP_ATTEMPTS:
                    raise
                log.warning(
                    "rebuild swap waited too long for a lock; retrying",
                    extra={"fields": {"source": self.source, "attempt": attempt}},
                )
                time.sleep(min(2**attempt, 30))
                self.catch_up()

    def _swap(self) -> None:
        connection = self.connection
        connection.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        # Loads stop here: a load writes the raw table first, so this waits for those in
        # flight and holds back the next ones before they touch a typed table (no deadlock on
        # the typed tables), and no raw event commits between the last delta and the swap.
        connection.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        candidates = self.tables or self._shadow_tables()
        for table in candidates:
            connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (ddl_lock(self.schema, table),)
            )
        live = [t for t in candidates if self._columns(self.schema, t)]
        if live:
            names = sql.SQL(", ").join(self._name(self.schema, t) for t in live)
            connection.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names))
        written = 0
        for chunk in self._missing():
            self.write(chunk)
            written += len(chunk)
        self.summary.caught_up += written
        built = self._shadow_tables()
        swapped = [t for t in candidates if t in built]
        self._ensure_live_schema()
        for table in swapped:
            self._carry_columns(table)
            connection.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(self._name(self.schema, table))
            )
            connection.execute(
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    self._name(self.shadow, table), sql.Identifier(self.schema)
                )
            )
        self._replace_discards(candidates)
        connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.shadow)))
        self.summary.tables = swapped

    def _name(self, schema: str, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))

    def _shadow_tables(self) -> list[str]:
        found = self.connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> 'discards'"
            " ORDER BY tablename",
            (self.shadow,),
        ).fetchall()
        return [name for (name,) in found]

    def _columns(self, schema: str, table: str) -> dict[str, str]:
        """``schema.table``'s columns and their SQL types ({} when there is no such table)."""
        found = self.connection.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            (self._name(schema, table).as_string(self.connection),),
        ).fetchall()
        return dict(found)

    def _ensure_live_schema(self) -> None:
        schema = sql.Identifier(self.schema)
        self.connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        self.connection.execute(sql.SQL(DISCARDS_DDL).format(schema=schema))

    def _carry_columns(self, table: str) -> None:
        """A column of the live table the shadow lacks (created for a batch the loader had in
        flight) is added to the shadow, with the live type, so that batch's rows fit."""
        shadow = self._columns(self.shadow, table)
        missing = {
            c: kind for c, kind in self._columns(self.schema, table).items() if c not in shadow
        }
        for column, kind in missing.items():
            self.connection.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    self._name(self.shadow, table), sql.Identifier(column), sql.SQL(kind)
                )
            )

    def _replace_discards(self, tables: Sequence[str]) -> None:
        """The rebuilt tables' discards: the shadow's replace the live ones."""
        columns = sql.SQL(", ").join(map(sql.Identifier, DISCARD_COLUMNS))
        live = self._name(self.schema, "discards")
        self.connection.execute(
            sql.SQL("DELETE FROM {} WHERE table_name = ANY(%s)").format(live), (list(tables),)
        )
        self.connection.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE table_name = ANY(%s)").format(
                live, columns, columns, self._name(self.shadow, "discards")
            ),
            (list(tables),),
        )


def rebuild(
    connection: psycopg.Connection,
    source: str,
    chunks: Iterable[Chunk] | None = None,
    *,
    tables: Sequence[str] | None = None,
    declared: Mapping[str, Mapping[str, str]] | None = None,
    reader: psycopg.Connection | None = None,
) -> Summary:
    """Rebuild ``source``'s typed tables (``tables``; default every one) from ``chunks`` (the
    archive's events, a messageId possibly repeated; default: the raw table, read on
    ``reader``, a second connection) and swap them in."""
    started = time.monotonic()
    job = Rebuild(connection, source, tables=tables, declared=declared)
    job.start()
    if chunks is not None:
        job.build(chunks, repeated=True)
    elif reader is None:
        raise ValueError("a rebuild from the raw table reads on a second connection")
    else:
        job.build(raw_chunks(reader, source, job.types))
    job.catch_up()
    job.swap()
    job.summary.seconds = time.monotonic() - started
    log.info("rebuilt", extra={"fields": job.summary.as_dict()})
    return job.summary


# --- the archive -------------------------------------------------------------------------------


class _Head(msgspec.Struct):
    messageId: str


_head_decoder = msgspec.json.Decoder(_Head)


def archive_chunks(client: Any, location: ArchiveLocation, source: str) -> Iterator[Chunk]:
    """The source's archived events (every gzip NDJSON object under ``source=<source>/``, in
    key order, streamed), :data:`CHUNK_EVENTS` at a time; a messageId may repeat."""
    prefix = f"{location.prefix}source={source}/"
    chunk: list[tuple[str, bytes]] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=prefix
    ):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=location.bucket, Key=item["Key"])["Body"]
            with body, gzip.GzipFile(fileobj=body, mode="rb") as lines:
                for line in lines:
                    line = line.rstrip(b"\n")
                    if not line:
                        continue
                    try:
                        chunk.append((_head_decoder.decode(line).messageId, line))
                    except msgspec.DecodeError as error:
                        raise ValueError(f"{item['Key']}: not an archived event: {error}") from None
                    if len(chunk) == CHUNK_EVENTS:
                        yield chunk
                        chunk = []
    if chunk:
        yield chunk
