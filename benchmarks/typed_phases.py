"""Where the typed loader's time goes (``benchmarks/typed_loading.py --phases decompose``).

The loader's sink is called directly (no runner) on the benchmark's events in batches of 5000,
into a fresh database, with a timer around each step of ``Loader._load``; run as a process of
its own (``python typed_phases.py DSN EVENTS_JSON``), so an earlier commit's tree (``--before``)
is timed the same way. The runner's own cost is measured apart (the same stream drained by a
sink that does nothing); the coercion's share of the typed write by a dry pass over the same
rows (coerced, not written). Then the floor of deriving the typed rows inside PostgreSQL
instead (``INSERT … SELECT`` per table from the batch's raw rows, as issue 19 suggested): the
batch's rows selected into a temporary table, then per typed table one ``INSERT … SELECT``
whose values are constants, or the workload's JSON read and cast — no misfit checks, no
column decisions, no discards: lower bounds of that design's cost."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg import sql

from services.consumers.loader.sink import Loader, LoaderConfig, row_of
from services.consumers.runner.model import Delivery, Position, decode
from services.consumers.runner.process import tune_gc
from services.warehouse.typed import CALL_TABLES
from services.warehouse.writer import LOCKED_TABLES

try:
    from services.warehouse.writer import Coercion
except ImportError:  # an earlier commit's writer (--before): no dry pass
    Coercion = None  # type: ignore[assignment,misc]

BATCH = 5000
WRITE = "typed: write (coerce + COPY per table + upserts)"
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
    """Seconds per step, in the order the steps first ran."""

    def __init__(self, found: dict[str, float] | None = None) -> None:
        super().__init__(float, found or {})

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
            timers.time(WRITE,
                        lambda d=derived: loader._typed.write(database, d, None))  # fmt: skip
            committing = time.perf_counter()
        timers["commit"] += time.perf_counter() - committing
        if Coercion is not None:
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


RUNNER = "runner alone (pull, decode, ack; no-op sink)"
COPY = "plain COPY of the same typed rows (the baseline)"
FLOOR_SELECT = "in PostgreSQL instead, floor: the batch's raw rows into a temporary table"
FLOOR_INSERT = "in PostgreSQL instead, floor: INSERT ... SELECT per table (constants)"
FLOOR_JSON = "in PostgreSQL instead, floor: INSERT ... SELECT per table (JSON read, cast)"
APART = (DRY, RUNNER, COPY, FLOOR_SELECT, FLOOR_INSERT, FLOOR_JSON)
"""Measured beside the sink's steps, not part of its total."""
RAW_LAYER = ("raw rows (row_of, Python)", "raw COPY into events", "commit")


def _median(rounds: Sequence[Timers], name: str) -> float:
    return statistics.median(r.get(name, 0.0) for r in rounds)


def print_steps(
    rounds: Sequence[Timers], events: int, before: tuple[str, Sequence[Timers]] | None = None
) -> None:
    """Each step's median over the rounds (and its range; with ``before``, that commit's
    median beside it), its share of the sink's median total, the floors of deriving in
    PostgreSQL, and the budget a ratio of 0.5 leaves against the raw layer's own cost."""

    def median(name: str) -> float:
        return _median(rounds, name)

    def spread(name: str) -> str:
        low, high = min(r[name] for r in rounds), max(r[name] for r in rounds)
        return f"{median(name):.2f} s ({low:.2f}-{high:.2f})"

    def total(timers: Timers) -> float:
        return sum(s for n, s in timers.items() if n not in APART)

    totals = [total(r) for r in rounds]
    print(f"decomposition, {events} events in batches of {BATCH}, the sink called directly "
          f"(a process of its own); medians of {len(rounds)} rounds (range):")  # fmt: skip
    for name in rounds[0]:
        share = "" if name in APART else f", {median(name) / statistics.median(totals):.0%}"
        if before and name not in APART:
            share += f"; at {before[0]}: {_median(before[1], name):.2f} s"
        print(f"  {name}: {spread(name)}{share}")
    sink = statistics.median(totals)
    earlier = ""
    if before:
        then = statistics.median(total(r) for r in before[1])
        earlier = f"; at {before[0]}: {then:.2f} s, {events / then:,.0f} events/s"
    print(f"  sink total: {sink:.2f} s ({min(totals):.2f}-{max(totals):.2f}), "
          f"{events / sink:,.0f} events/s{earlier}")  # fmt: skip
    python = median("typed: derive (decode + flatten, Python)") + median(WRITE)
    floors = [median(FLOOR_SELECT) + median(name) for name in (FLOOR_INSERT, FLOOR_JSON)]
    print(f"  the typed rows by Python (derive + write): {python:.2f} s; in PostgreSQL at least "
          f"{floors[0]:.2f} s ({floors[0] / python:.0%}) with constants, {floors[1]:.2f} s "
          f"({floors[1] / python:.0%}) reading the JSON, before any misfit check, column "
          f"decision or discard")  # fmt: skip
    budget = 2 * median(COPY)
    raw = median(RUNNER) + sum(median(name) for name in RAW_LAYER)
    print(f"  budget at 0.5 x plain COPY: {budget:.2f} s; the runner and the raw layer alone "
          f"(row_of, raw COPY, commit): {raw:.2f} s = {raw / budget:.1f} x the budget")  # fmt: skip


def in_database_floor(
    dsn: str, batches: Sequence[Sequence[Delivery]], read_json: bool = False
) -> tuple[float, float]:
    """Seconds to select each batch's raw rows into a temporary table, and to insert one row
    per typed row with one ``INSERT … SELECT`` per table (tables made by the Python writer
    beforehand, not timed), its values constants or (``read_json``) read from the raw row's
    JSON and cast, without the checks that keep a misfit out: lower bounds of deriving in
    the database."""
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
                connection.execute(_floor_insert(table, event, columns, read_json))
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


def _floor_insert(
    table: str, event: str | None, columns: dict[str, str], read_json: bool
) -> sql.Composed:
    """One row per typed row the batch makes in ``table``, every column set."""
    kind = {"users": "identify", "identity_map": "identify"}.get(table, "track")
    kind = next((k for k, t in CALL_TABLES.items() if t == table), kind)
    where = sql.SQL("type = {}").format(sql.Literal(kind))
    if event is not None:
        where += sql.SQL(" AND event = {}").format(sql.Literal(event))
    values = [
        _read(table, column, kind) if read_json else CONSTANTS[kind]
        for column, kind in columns.items()
    ]
    return sql.SQL(
        "INSERT INTO web.{table} ({columns}) SELECT {values} FROM batch WHERE {where}{conflict}"
    ).format(
        conflict=sql.SQL(" ON CONFLICT DO NOTHING" if table in LOCKED_TABLES else ""),
        table=sql.Identifier(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(map(sql.SQL, values)),
        where=where,
    )


EVENT_KEYS = {
    "id": "messageId",
    "received_at": "receivedAt",
    "sent_at": "sentAt",
    "timestamp": "timestamp",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "event": "event",
    "event_text": "event",
}


def _read(table: str, column: str, kind: str) -> str:
    """The benchmark workload's value of ``column`` read from the raw row's JSON, cast."""
    if table == "users" and column == "id":
        found = "raw->>'userId'"
    elif column in EVENT_KEYS:
        found = f"raw->>'{EVENT_KEYS[column]}'"
    elif column.startswith("context_"):
        found = "context#>>'{" + ",".join(column.removeprefix("context_").split("_")) + "}'"
    else:
        source = "traits" if table in ("identifies", "users") else "properties"
        path = column.replace("shipping_", "shipping,")
        found = f"{source}#>>'{{{path}}}'"
    return found if kind == "text" else f"({found})::{kind}"


def main() -> None:
    """``python typed_phases.py DSN EVENTS_JSON``: the sink's steps (of the tree this file is
    in) over the events in the file, into the database; prints the timers as JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dsn", help="libpq key=value string of an empty database")
    parser.add_argument("events", help="a JSON file: a list of events")
    args = parser.parse_args()
    decoded = deliveries(json.loads(Path(args.events).read_bytes()))
    batches = [decoded[start : start + BATCH] for start in range(0, len(decoded), BATCH)]
    tune_gc()  # as the loader process does
    print(json.dumps(sink_steps(batches, Loader(LoaderConfig(_libpq(args.dsn))))))


if __name__ == "__main__":
    main()
