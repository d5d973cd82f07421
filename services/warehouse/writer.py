"""Typed rows (:func:`services.warehouse.typed.derive`) into one source's Postgres schema.

:meth:`TypedWriter.write` runs in the caller's transaction: one binary ``COPY`` per typed table,
``users`` and ``identity_map`` upserted (a newer identify's non-null traits win, an older one
only fills what is missing; an anonymous id maps to its latest user), the values that do not
fit their column stored NULL and kept in ``discards`` (table_name, column_name, column_type,
value, message_id, received_at, uuid_ts). It returns the rows and discards per table.

Schema changes (:meth:`TypedWriter.prepare`: ``CREATE SCHEMA``/``CREATE TABLE``/``ALTER TABLE
... ADD COLUMN IF NOT EXISTS``) take a transaction-level advisory lock on each table's name, in
name order and, on a connection outside a transaction (the loader's), run in one short
transaction per batch, before the data transaction: a loader never holds one table's rows
while it waits to change another's columns, so concurrent loaders cannot deadlock on DDL (and
a batch that adds a column to 20 tables commits once, not 20 times). The column types are
read back from the catalog after each change (another loader may have created the column
first, with the type of its own first value); they are cached, and checked in every write:
it locks the tables it writes (``ROW EXCLUSIVE``, in name order) and compares one md5 of the
schema's columns and types with the cached one, reading the catalog again when it changed (a
rebuild swapped a table in). A rebuild swapping tables takes their ``ACCESS EXCLUSIVE`` locks
in name order too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg import sql

from services.warehouse.names import segment_name
from services.warehouse.typed import (
    CATALOG_TYPES,
    COPY_TYPES,
    KEYS,
    MISFIT,
    SQL_TYPES,
    TableRows,
    as_text,
    column_type,
    converter,
    parse_timestamp,
)

log = logging.getLogger("liftoff.warehouse")

MAX_COLUMNS: Final = 1000
"""Columns per typed table (PostgreSQL allows 1600): a value for a column beyond it is
discarded, so a producer that invents a property per event cannot break the table."""
LOCKED_TABLES: Final = ("users", "identity_map")
"""Tables upserted by key rather than appended to."""

DISCARDS_DDL: Final = """
CREATE TABLE IF NOT EXISTS {schema}.discards (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    column_type text NOT NULL,
    value       text,
    message_id  text,
    received_at timestamptz,
    uuid_ts     timestamptz NOT NULL DEFAULT now()
)"""


FINGERPRINT: Final = (
    "SELECT md5(coalesce(string_agg(a.attrelid::text || ' ' || a.attname || ' '"
    " || a.atttypid::text, ',' ORDER BY a.attrelid, a.attnum), ''))"
    " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
    " AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped"
)
"""The schema's tables, columns and types, in one value."""


@dataclass
class WriteCounts:
    """What one :meth:`TypedWriter.write` wrote: rows and discarded values per table."""

    rows: dict[str, int] = field(default_factory=dict)
    discards: dict[str, int] = field(default_factory=dict)


Discard = tuple[str, str, str, str, Any, Any]


class TypedWriter:
    """Writes typed rows into ``schema`` (see the module docstring)."""

    def __init__(
        self,
        connection: psycopg.Connection,
        schema: str,
        declared: Mapping[str, Mapping[str, str]] | None = None,
        *,
        max_columns: int = MAX_COLUMNS,
    ) -> None:
        self.connection = connection
        self.schema = schema
        self.declared = {
            segment_name(table): {segment_name(c): kind for c, kind in columns.items()}
            for table, columns in (declared or {}).items()
        }
        self.max_columns = max_columns
        self._columns: dict[str, dict[str, str]] = {}
        self._schema_ready = False
        self._fingerprint: str | None = None
        """The schema's columns and types when ``_columns`` was last known to be right."""

    def forget(self) -> None:
        """Read the tables' columns from the catalog again (after a rebuild swapped them)."""
        self._columns.clear()
        self._schema_ready = False
        self._fingerprint = None

    def _name(self, table: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table))

    # --- schema ---------------------------------------------------------------------------

    def prepare(self, rows: TableRows) -> bool:
        """Create the schema, tables and columns ``rows`` need (see the module docstring);
        whether anything had to be created."""
        if not self._schema_ready:
            self._ddl(f"liftoff.warehouse {self.schema}", self._create_schema)
            self._schema_ready = True
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for table, row in rows:
            by_table[table].append(row)
        wanted: dict[str, dict[str, str]] = {}
        for table, table_rows in by_table.items():
            fresh = set().union(*table_rows).difference(self._columns.get(table, ()))
            new = wanted[table] = {}
            declared = self.declared.get(table, {})
            for row in table_rows if fresh else ():  # each new column's first value, in order
                for column in [c for c in row if c in fresh and row[c] is not None]:
                    new[column] = column_type(table, column, row[column], declared)
                    fresh.discard(column)
                if not fresh:
                    break
        self._columns.update(self._catalogs([t for t in wanted if t not in self._columns]))
        changes: dict[str, dict[str, str]] = {}
        for table, new in wanted.items():
            missing = {c: t for c, t in new.items() if c not in self._columns[table]}
            if missing or not self._columns[table]:
                changes[table] = missing
        if changes:
            self._change_tables(changes)
            self._fingerprint = None
        return bool(changes)

    def _change_tables(self, changes: Mapping[str, Mapping[str, str]]) -> None:
        """Every table's changes in one transaction, under the tables' advisory locks taken in
        name order (as every writer and a rebuild's swap take them: no deadlock), before any
        of their rows are held: one commit and a few round trips per batch, not per table."""
        tables = sorted(changes)
        with self.connection.transaction():
            self.connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext(lock)) FROM unnest(%s::text[])"
                " WITH ORDINALITY AS locks(lock, position) ORDER BY position",
                ([f"liftoff.warehouse {self.schema}.{table}" for table in tables],),
            )
            present = self._catalogs(tables)  # under the locks: what others added is here
            statements = [
                statement
                for table in tables
                for statement in self._alterations(table, changes[table], present[table])
            ]
            if statements:  # one round trip: no parameters, never prepared (one simple query)
                self.connection.execute(sql.SQL("; ").join(statements), prepare=False)
            self._columns.update(self._catalogs(tables))

    def _ddl(self, lock: str, change: Any) -> None:
        with self.connection.transaction():
            self.connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            change()

    def _create_schema(self) -> None:
        schema = sql.Identifier(self.schema)
        self.connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        self.connection.execute(sql.SQL(DISCARDS_DDL).format(schema=schema))

    def _catalogs(self, tables: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each table's columns and their types, in one query ({} for a table not there)."""
        found: dict[str, dict[str, str]] = {table: {} for table in tables}
        if not tables:
            return found
        rows = self.connection.execute(
            "SELECT t.name, a.attname, format_type(a.atttypid, a.atttypmod)"
            " FROM unnest(%s::text[], %s::text[]) AS t(name, qualified)"
            " JOIN pg_attribute a ON a.attrelid = to_regclass(t.qualified)"
            " WHERE a.attnum > 0 AND NOT a.attisdropped ORDER BY t.name, a.attnum",
            (list(tables), [self._name(t).as_string(self.connection) for t in tables]),
        ).fetchall()
        for table, name, kind in rows:
            found[table][name] = CATALOG_TYPES.get(kind, kind)
        return found

    def _alterations(
        self, table: str, missing: Mapping[str, str], present: Mapping[str, str]
    ) -> list[sql.Composed]:
        """The statements that make ``table`` (as ``present``) and add its ``missing`` columns
        the column limit leaves room for (a new table has its key and ``uuid_ts``)."""
        name = self._name(table)
        statements = []
        if not present:
            statements.append(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ({} text PRIMARY KEY,"
                    " uuid_ts timestamptz NOT NULL DEFAULT now())"
                ).format(name, sql.Identifier(KEYS.get(table, "id")))
            )
        room = self.max_columns - (len(present) or 2)
        additions = [(c, t) for c, t in missing.items() if c not in present][: max(room, 0)]
        if additions:
            statements.append(
                sql.SQL("ALTER TABLE {} ").format(name)
                + sql.SQL(", ").join(
                    sql.SQL("ADD COLUMN IF NOT EXISTS {} {}").format(
                        sql.Identifier(column), sql.SQL(SQL_TYPES[kind])
                    )
                    for column, kind in additions
                )
            )
        return statements

    # --- rows ----------------------------------------------------------------------------

    def write(self, rows: TableRows, *, skip_existing: bool = False) -> WriteCounts:
        """Write ``rows`` in the caller's transaction (schema changes first: :meth:`prepare`).
        A row whose key is already in its table fails the COPY (unique violation), unless
        ``skip_existing``: then every table goes through a staging table and such rows are
        left as they are (slower; for a retry after that violation)."""
        self.prepare(rows)
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for table, row in rows:
            by_table[table].append(row)
        if by_table:
            self._lock_and_check(rows, sorted(by_table))
        counts = WriteCounts()
        discards: list[Discard] = []
        for table, table_rows in by_table.items():
            if table in LOCKED_TABLES:
                table_rows = _merged(table, table_rows)
            found = len(discards)
            self._copy(table, table_rows, discards, skip_existing)
            counts.rows[table] = len(table_rows)
            if len(discards) > found:
                counts.discards[table] = len(discards) - found
        if discards:
            self._copy_discards(discards)
        return counts

    def _lock_and_check(self, rows: TableRows, tables: Sequence[str]) -> None:
        """Lock the tables about to be written (in name order), then check the schema's
        columns are still the cached ones: a column whose type changed since (a rebuild) would
        otherwise get values encoded for its old type, which binary COPY may take as garbage.
        Under these locks no one can change them until the commit."""
        self.connection.execute(
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                sql.SQL(", ").join(self._name(t) for t in sorted({*tables, "discards"}))
            )
        )
        fingerprint = self._current_fingerprint()
        if fingerprint == self._fingerprint:
            return
        log.info("typed tables changed; reading their columns again", extra={"fields": {
            "schema": self.schema}})  # fmt: skip
        self._columns = self._catalogs(tables)
        if self.prepare(rows):  # a column gone (a rebuild dropped it): made again, locked
            fingerprint = self._current_fingerprint()
        self._fingerprint = fingerprint

    def _current_fingerprint(self) -> str:
        found = self.connection.execute(FINGERPRINT, (self.schema,)).fetchone()
        return str(found[0]) if found else ""

    def _copy(
        self,
        table: str,
        rows: Sequence[dict[str, Any]],
        discards: list[Discard],
        skip_existing: bool = False,
    ) -> None:
        known = self._columns[table]
        used = set().union(*rows)
        columns = [c for c in known if c in used]  # the catalog's order
        coercion = Coercion(table, {column: known[column] for column in columns})
        upsert = table in LOCKED_TABLES or skip_existing
        target = _STAGING if upsert else self._name(table)
        if upsert:
            self._staging(table, columns)
        with self.connection.cursor() as cursor:
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                target, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with cursor.copy(statement) as copy:
                copy.set_types([COPY_TYPES.get(known[column], "text") for column in columns])
                for row in rows:
                    copy.write_row(coercion.values(row, discards))
        extra = used.difference(known)  # all null, or beyond the column limit
        if extra:
            _beyond(table, rows, extra, discards)
        if upsert:
            self.connection.execute(self._upsert(table, columns))

    def _staging(self, table: str, columns: Sequence[str]) -> None:
        staging = _STAGING
        self.connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
        self.connection.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(
                staging, sql.SQL(", ").join(map(sql.Identifier, columns)), self._name(table)
            )
        )

    def _upsert(self, table: str, columns: Sequence[str]) -> sql.Composed:
        """users: a newer row's non-null values win, an older one fills only what is NULL;
        identity_map: the latest mapping wins."""
        key = KEYS.get(table, "id")
        name, staging = self._name(table), _STAGING
        newer = sql.SQL("EXCLUDED.timestamp >= {}.timestamp").format(sql.Identifier(table))
        updates = []
        for column in columns:
            if column == key:
                continue
            c, old = (
                sql.Identifier(column),
                sql.SQL("{}.{}").format(sql.Identifier(table), sql.Identifier(column)),
            )
            if table not in LOCKED_TABLES:
                continue  # appended tables: a row already there stays as it is
            if table == "users" and column != "timestamp":
                value = sql.SQL(
                    "CASE WHEN {newer} THEN COALESCE(EXCLUDED.{c}, {old}) "
                    "ELSE COALESCE({old}, EXCLUDED.{c}) END"
                ).format(newer=newer, c=c, old=old)
            elif column == "timestamp":
                value = sql.SQL("GREATEST(EXCLUDED.{c}, {old})").format(c=c, old=old)
            else:
                value = sql.SQL("CASE WHEN {newer} THEN EXCLUDED.{c} ELSE {old} END").format(
                    newer=newer, c=c, old=old
                )
            updates.append(sql.SQL("{} = {}").format(c, value))
        listed = sql.SQL(", ").join(map(sql.Identifier, columns))
        if not updates:
            return sql.SQL(
                "INSERT INTO {name} ({listed}) SELECT {listed} FROM {staging} "
                "ON CONFLICT ({key}) DO NOTHING"
            ).format(name=name, listed=listed, staging=staging, key=sql.Identifier(key))
        return sql.SQL(
            "INSERT INTO {name} ({listed}) SELECT {listed} FROM {staging} "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}"
        ).format(
            name=name,
            listed=listed,
            staging=staging,
            key=sql.Identifier(key),
            updates=sql.SQL(", ").join(updates),
        )

    def _copy_discards(self, discards: Iterable[Discard]) -> None:
        statement = sql.SQL(
            "COPY {} (table_name, column_name, column_type, value, message_id, received_at)"
            " FROM STDIN (FORMAT BINARY)"
        ).format(self._name("discards"))
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["text", "text", "text", "text", "text", "timestamptz"])
            for table, column, kind, value, message_id, received_at in discards:
                message = message_id if isinstance(message_id, str) else None
                copy.write_row((table, column, kind, value, message, parse_timestamp(received_at)))


class Coercion:
    """How ``table``'s rows become the values of its ``columns`` ({column: type}, in COPY
    order): each value by :func:`~services.warehouse.typed.coerce`, a misfit NULL and kept
    in the discards. Text columns (most of them) are only checked for a non-string value."""

    def __init__(self, table: str, columns: Mapping[str, str]) -> None:
        self.table = table
        self.columns = list(columns)
        self.checked = [
            (index, column, kind, converter(kind))
            for index, (column, kind) in enumerate(columns.items())
            if kind != "text"
        ]
        self.texts = [index for index, kind in enumerate(columns.values()) if kind == "text"]

    def values(self, row: Mapping[str, Any], discards: list[Discard]) -> list[Any]:
        values = list(map(row.get, self.columns))
        for index, column, kind, convert in self.checked:
            value = values[index]
            if value is not None:
                fitted = convert(value)
                if fitted is MISFIT:
                    discards.append((self.table, column, kind, as_text(value), row.get("id"),
                                     row.get("received_at")))  # fmt: skip
                    fitted = None
                values[index] = fitted
        for index in self.texts:  # anything fits text, as its JSON text
            value = values[index]
            if type(value) is not str and value is not None:
                values[index] = as_text(value)
        return values


def _beyond(
    table: str, rows: Sequence[Mapping[str, Any]], extra: set[str], discards: list[Discard]
) -> None:
    """Values for columns the table does not have (its column limit reached): discarded."""
    for row in rows:
        for column in extra:
            if (value := row.get(column)) is not None:
                discards.append(
                    (table, column, "(none: column limit)", as_text(value), row.get("id"),
                     row.get("received_at"))
                )  # fmt: skip


def _merged(table: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key (an upsert may not touch a row twice), in timestamp order: the later
    row's non-null values win (users), the latest row wins (identity_map)."""
    key = KEYS.get(table, "id")
    merged: dict[Any, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: parse_timestamp(r.get("timestamp")) or _EPOCH):
        if table == "users" and row[key] in merged:
            merged[row[key]].update({c: v for c, v in row.items() if v is not None})
        else:
            merged[row[key]] = dict(row)
    return list(merged.values())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STAGING = sql.Identifier("liftoff_typed_staging")
"""The session's staging table for an upsert (one table at a time; dropped at commit)."""
