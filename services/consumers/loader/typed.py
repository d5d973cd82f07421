"""The loader's typed half: every raw row it loads also written to Segment's warehouse schema
(:mod:`services.warehouse`), one Postgres schema per source (``source_schema(source)``), in the
transaction that loads the raw rows (see :mod:`services.consumers.loader.sink`).

Derived from the raw row itself (its ``raw`` column is the event as on the stream), so every
path that loads raw rows (the stream, reconciliation) loads the typed ones the same way."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import msgspec
import psycopg

from services.consumers.loader.contract import DISCARDS_LOG_MESSAGE, DISCARDS_LOG_TOTAL
from services.observability import Counters
from services.warehouse.names import source_schema
from services.warehouse.typed import Declared, TableRows, derive
from services.warehouse.writer import TypedWriter

log = logging.getLogger("liftoff.loader")

DISCARDS_METRIC = "liftoff_warehouse_discards_total"

# Positions in a raw row (services.consumers.loader.schema.COLUMNS).
_MESSAGE_ID, _SOURCE, _RAW = 0, 2, 16

_decoder = msgspec.json.Decoder()

Derived = dict[str, list[tuple[str, TableRows]]]
"""Per source: (message_id, its typed rows), in stream order."""

STALE = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InvalidBinaryRepresentation,
    psycopg.errors.DatatypeMismatch,
)
"""What a write finds when a table changed under the writers' cached columns (a rebuild
swapped it in): the writers read the catalog again and the batch is loaded again, once."""


class TypedLoading:
    """The typed writers of one loader connection, per source."""

    def __init__(self, declared: Declared, counters: Counters) -> None:
        self.declared = declared
        self.counters = counters
        self._writers: dict[str, TypedWriter] = {}
        self._connection: psycopg.Connection | None = None
        counters.describe(
            DISCARDS_METRIC,
            "Values that did not fit their typed warehouse column (stored NULL there, kept in "
            "the source schema's discards table), by source and table.",
        )

    def forget(self) -> None:
        """Drop the writers (a new connection, or a table changed under them)."""
        self._writers.clear()

    def _writer(self, connection: psycopg.Connection, source: str) -> TypedWriter:
        if connection is not self._connection:
            self._writers.clear()
            self._connection = connection
        writer = self._writers.get(source)
        if writer is None:
            declared = self.declared.get(source, {})
            writer = TypedWriter(connection, source_schema(source), declared)
            self._writers[source] = writer
        return writer

    @staticmethod
    def derive(rows: Sequence[tuple[Any, ...]]) -> Derived:
        derived: Derived = {}
        for row in rows:
            event = _decoder.decode(row[_RAW])
            derived.setdefault(row[_SOURCE], []).append((row[_MESSAGE_ID], derive(event)))
        return derived

    def prepare(self, connection: psycopg.Connection, derived: Derived) -> None:
        """The schema changes the batch needs, in a short transaction per source: before the
        data transaction, so no loader waits for a lock while holding rows (no deadlock)."""
        for source, events in derived.items():
            self._writer(connection, source).prepare([r for _, rows in events for r in rows])

    def write(
        self, connection: psycopg.Connection, derived: Derived, only: Collection[str] | None
    ) -> Mapping[tuple[str, str], int]:
        """The typed rows (of the message ids in ``only``, when given) in the caller's
        transaction; returns the discards per (source, table)."""
        discards: dict[tuple[str, str], int] = {}
        for source, events in derived.items():
            rows = [r for mid, rows in events if only is None or mid in only for r in rows]
            if rows:
                writer = self._writer(connection, source)
                try:
                    with connection.transaction():  # a savepoint
                        counts = writer.write(rows)
                except psycopg.errors.UniqueViolation:
                    # Typed rows whose raw row was deleted and is loaded again (a reconcile
                    # after a manual delete, a rebuild's rows): those stay as they are.
                    counts = writer.write(rows, skip_existing=True)
                for table, count in counts.discards.items():
                    discards[source, table] = count
        return discards

    def count(self, discards: Mapping[tuple[str, str], int]) -> None:
        """After the commit: the discards into the metric and the log (on AWS the log line is
        what tells: a Lambda serves no /metrics)."""
        for (source, table), count in discards.items():
            self.counters.add(DISCARDS_METRIC, count, source=source, table=table)
        if discards:
            by_table = {f"{s}.{t}": n for (s, t), n in discards.items()}
            total = sum(discards.values())
            log.warning(
                DISCARDS_LOG_MESSAGE,
                extra={"fields": {DISCARDS_LOG_TOTAL: total, "discards": by_table}},
            )
