"""Where the typed loader's time goes (``benchmarks/typed_loading.py --phases decompose``).

The loader's sink is called directly (no runner) on the benchmark's events in batches of 5000,
into a fresh database, with a timer around each step of ``Loader._load``; the runner's own
cost is measured apart (the same stream drained by a sink that does nothing). The coercion's
share of the typed write is timed by a dry pass over the same rows (coerced, not written).
Then the floor of deriving the typed rows inside PostgreSQL instead (``INSERT … SELECT`` per
table from the batch's raw rows, as issue 19 suggested): the same batches' rows selected into
a temporary table, then per typed table one ``INSERT … SELECT`` of constants in place of the
JSON extraction — no extraction, no casts, no discards: a lower bound of that design's cost.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from services.consumers.loader.sink import Loader, LoaderConfig, row_of
from services.consumers.runner.model import Delivery, Position, decode
from services.warehouse.typed import CALL_TABLES
from services.warehouse.writer import LOCKED_TABLES, Coercion

BATCH = 5000
DRY = "of the typed write: coercion alone (dry pass, not in the total)"


def deliveries(events: Sequence[dict[str, Any]]) -> list[Delivery]:
    """The events as the runner hands them to the sink (decoded as it does)."""
    found = []
    for index, event in enumerate(events, 1):
        delivery = Delivery(
            json.dumps(event).encode(), Position("jetstream", "EVENTS", index), datetime.now(UTC)
        )
        if decode(delivery) is None:
            found.append(delivery)
    return found


class Timers(defaultdict[str, float]):
    def __init__(self) -> None:
        super().__init__(float)

    def time(self, name: str, step: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return step()
        finally:
            self[name] += time.perf_counter() - started


def sink_steps(batches: Sequence[Sequence[Delivery]], loader: Loader) -> Timers:
    """``Loader._load``'s steps, timed (the straight path: no key conflicts here)."""
    timers = Timers()
    database = loader._connect()
    for batch in batches:
        rows = timers.time("raw rows (row_of, Python)", lambda b=batch: [row_of(d) for d in b])
        derived = timers.time("typed: derive (decode + flatten, Python)",
                              lambda r=rows: loader._typed.derive(r))  # fmt: skip
        timers.time("typed: schema changes (DDL transactions)",
                    lambda d=derived: loader._typed.prepare(database, d))  # fmt: skip
        with database.transaction():
            timers.time("raw COPY into events",
                        lambda r=rows: loader._copy_straight(database, r))  # fmt: skip
            timers.time("typed: write (coerce + COPY per table + upserts)",
                        lambda d=derived: loader._typed.write(database, d, None))  # fmt: skip
            committing = time.perf_counter()
        timers["commit"] += time.perf_counter() - committing
        coerce_only(derived, loader, timers)
    return timers


def coerce_only(derived: Any, loader: Loader, timers: Timers) -> None:
    """The writer's per-value coercion over ``derived``'s rows, nothing written."""
    started = time.perf_counter()
    for source, events in derived.items():
        writer = loader._typed._writer(loader._connect(), source)
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for _, rows in events:
            for table, row in rows:
                by_table[table].append(row)
        discards: list[Any] = []
        for table, table_rows in by_table.items():
            known = writer._columns[table]
            used = set().union(*table_rows)
            coercion = Coercion(table, {c: kind for c, kind in known.items() if c in used})
            for row in table_rows:
                coercion.values(row, discards)
    timers[DRY] += time.perf_counter() - started


def print_steps(timers: Timers, events: int, runner_rate: float, copy_rate: float) -> None:
    total = sum(seconds for name, seconds in timers.items() if name != DRY)
    print(f"decomposition, {events} events in batches of {BATCH} (sink called directly):")
    print(f"  runner alone (pull, decode, ack; no-op sink): {events / runner_rate:.2f} s")
    for name, seconds in timers.items():
        if name != DRY:
            print(f"  {name}: {seconds:.2f} s ({seconds / total:.0%} of the sink)")
    print(f"  {DRY}: {timers[DRY]:.2f} s")
    print(f"  sink total: {total:.2f} s ({events / total:,.0f} events/s); plain COPY of the "
          f"same typed rows: {events / copy_rate:.2f} s ({copy_rate:,.0f} events/s)")  # fmt: skip


def in_database_floor(dsn: str, batches: Sequence[Sequence[Delivery]]) -> tuple[float, float]:
    """Seconds to select each batch's raw rows into a temporary table, and to insert one row
    of constants per typed row with one ``INSERT … SELECT`` per table (tables made by the
    Python writer beforehand, not timed): the lower bound of deriving in the database."""
    loader = Loader(LoaderConfig(_libpq(dsn)))
    connection = loader._connect()
    for batch in batches:  # the raw rows and the typed tables with their columns, not timed
        loader._load([row for d in batch if not isinstance(row := row_of(d), str)])
    with connection.transaction():
        for table in LOCKED_TABLES:
            connection.execute(sql.SQL("TRUNCATE web.{}").format(sql.Identifier(table)))
    tables = _typed_tables(connection)
    for table in tables:
        connection.execute(sql.SQL("TRUNCATE web.{}").format(sql.Identifier(table)))
    selecting = inserting = 0.0
    for batch in batches:
        ids = [d.message_id for d in batch]
        started = time.perf_counter()
        with connection.transaction():
            connection.execute(
                "CREATE TEMP TABLE batch ON COMMIT DROP AS"
                " SELECT * FROM events WHERE message_id = ANY(%s)",
                (ids,),
            )
            selected = time.perf_counter()
            for table, (event, columns) in tables.items():
                connection.execute(_floor_insert(table, event, columns))
        inserting += time.perf_counter() - selected
        selecting += selected - started
    return selecting, inserting


def _libpq(dsn: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in dsn.split())


def _typed_tables(connection: psycopg.Connection) -> dict[str, tuple[str | None, dict[str, str]]]:
    """Each typed table of ``web`` → the event whose rows it holds (None: a call table) and
    its columns with their types."""
    found: dict[str, tuple[str | None, dict[str, str]]] = {}
    for table, columns in connection.execute(
        "SELECT c.relname, json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod))"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = 'web'::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
        " AND NOT a.attisdropped AND a.attname <> 'uuid_ts' AND c.relname <> 'discards'"
        " GROUP BY c.relname ORDER BY 1"
    ):
        event = None
        if table not in (*LOCKED_TABLES, *CALL_TABLES.values()):
            first = connection.execute(
                sql.SQL("SELECT event_text FROM web.{} LIMIT 1").format(sql.Identifier(table))
            ).fetchone()
            event = first[0] if first else None
        found[table] = (event, columns)
    return found


CONSTANTS = {
    "text": "message_id",
    "timestamp with time zone": "received_at",
    "bigint": "7",
    "double precision": "1.5",
    "boolean": "true",
}
"""What each column gets in the floor: a value of its type, no JSON read."""


def _floor_insert(table: str, event: str | None, columns: dict[str, str]) -> sql.Composed:
    """One row per typed row the batch makes in ``table``, every column set (no extraction)."""
    kind = {"users": "identify", "identity_map": "identify"}.get(table, "track")
    kind = next((k for k, t in CALL_TABLES.items() if t == table), kind)
    where = sql.SQL("type = {}").format(sql.Literal(kind))
    if event is not None:
        where += sql.SQL(" AND event = {}").format(sql.Literal(event))
    return sql.SQL(
        "INSERT INTO web.{table} ({columns}) SELECT {values} FROM batch WHERE {where}{conflict}"
    ).format(
        conflict=sql.SQL(" ON CONFLICT DO NOTHING" if table in LOCKED_TABLES else ""),
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.SQL(CONSTANTS[kind]) for kind in columns.values()),
        where=where,
    )
