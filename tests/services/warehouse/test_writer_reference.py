"""The writer against the rules it implements, on a real PostgreSQL, over generated batches: the
tables, their columns and types, every typed row, ``users``, ``identity_map`` and the discards
are what a plain reading of the rules gives (:func:`reference`), value by value.

The reference is written without the writer's shortcuts (no grouping by shape, no batched
schema changes, no coercion fast path): a column's type is the one of its first non-null
value in the batch; each value is :func:`~services.warehouse.typed.coerce`'d, a misfit NULL and
kept in the discards; ``users`` and ``identity_map`` hold one row per key, the rows merged in
timestamp order (later non-null values win for users, the latest row for the map).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from services.warehouse.typed import (
    MISFIT,
    as_text,
    coerce,
    column_type,
    derive,
    parse_timestamp,
)
from services.warehouse.writer import KEYS, LOCKED_TABLES, TypedWriter
from tests.servers import pg_connect as connect

pytestmark = pytest.mark.servers

TIMES = st.sampled_from(
    ["2026-11-27T20:19:03Z", "2026-11-28T08:00:00+02:00", "2026-11-26", "2026-11-27T20:19:03.5Z"]
)
TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=5)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    TIMES,
    st.just("42"),
)
NAMES = st.sampled_from(["plan", "Plan", "seats", "price", "id", "tags", "renewsAt", "a b"])
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(NAMES, inner, max_size=2),
    max_leaves=4,
)
OBJECTS = st.dictionaries(NAMES, VALUES, max_size=4)
USERS = st.sampled_from(["u-1", "u-2", "u-3"])


def _track(event: str, properties: dict[str, Any], user: str, at: str) -> dict[str, Any]:
    return {"type": "track", "event": event, "properties": properties, "userId": user,
            "context": {"library": {"name": "test"}}, **_times(at)}  # fmt: skip


def _identify(user: str, anonymous: str | None, traits: dict[str, Any], at: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "anonymousId": anonymous, "traits": traits,
            **_times(at)}  # fmt: skip


def _alias(user: str, previous: str, at: str) -> dict[str, Any]:
    return {"type": "alias", "userId": user, "previousId": previous, **_times(at)}


def _times(at: str) -> dict[str, Any]:
    return {"receivedAt": at, "timestamp": at, "sentAt": at}


EVENTS = st.one_of(
    st.builds(_track, st.sampled_from(["Signed Up", "signed_up", "Tracks", "Order Completed"]),
              OBJECTS, USERS, TIMES),
    st.builds(_identify, USERS, st.sampled_from(["a-1", "a-2", None]), OBJECTS, TIMES),
    st.builds(_alias, USERS, st.sampled_from(["a-1", "a-3"]), TIMES),
)  # fmt: skip
BATCHES = st.lists(EVENTS, max_size=12).map(
    lambda events: [{**event, "messageId": f"m-{n}"} for n, event in enumerate(events)]
)

Tables = dict[str, tuple[dict[str, str], Counter[tuple[Any, ...]]]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _merged(table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key, merged = KEYS.get(table, "id"), {}
    by_time = sorted(rows, key=lambda row: parse_timestamp(row.get("timestamp")) or _EPOCH)
    for row in by_time:
        if table == "users" and row[key] in merged:
            merged[row[key]] = {**merged[row[key]], **row}  # rows hold no nulls
        else:
            merged[row[key]] = row
    return list(merged.values())


def reference(events: list[dict[str, Any]]) -> tuple[Tables, Counter[tuple[Any, ...]]]:
    """Each table's {column: type} and rows, and the discards, by the rules alone."""
    derived = [found for event in events for found in derive(event)]
    tables: Tables = {}
    discards: Counter[tuple[Any, ...]] = Counter()
    for table in dict.fromkeys(table for table, _ in derived):
        rows = [row for name, row in derived if name == table]
        types: dict[str, str] = {}
        for row in rows:
            for column, value in row.items():
                types.setdefault(column, column_type(table, column, value, {}))
        if table in LOCKED_TABLES:
            rows = _merged(table, rows)
        found: Counter[tuple[Any, ...]] = Counter()
        for row in rows:
            values = []
            for column, kind in sorted(types.items()):
                value = row.get(column)
                fitted = None if value is None else coerce(value, kind)
                if fitted is MISFIT:
                    discards[(table, column, kind, as_text(value), row.get("id"),
                              parse_timestamp(row.get("received_at")))] += 1  # fmt: skip
                    fitted = None
                values.append(fitted)
            found[tuple(values)] += 1
        tables[table] = (types, found)
    return tables, discards


def written(connection: psycopg.Connection, schema: str, tables: Tables) -> Tables:
    """What the schema holds, read as the reference describes it."""
    found: Tables = {}
    for table in tables:
        types = dict(
            connection.execute(
                "SELECT column_name, CASE data_type WHEN 'timestamp with time zone'"
                " THEN 'timestamp' ELSE data_type END FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s AND column_name <> 'uuid_ts'",
                (schema, table),
            ).fetchall()
        )
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(map(sql.Identifier, sorted(types))),
            sql.Identifier(schema),
            sql.Identifier(table),
        )
        found[table] = (types, Counter(connection.execute(query).fetchall()))
    return found


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(BATCHES)
def test_the_writer_writes_what_the_rules_say(
    warehouse: dict[str, str], events: list[dict[str, Any]]
) -> None:
    schema = f"s_{uuid.uuid4().hex[:10]}"
    tables, discards = reference(events)
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, schema)
        rows = [row for event in events for row in derive(event)]
        writer.prepare(rows)
        with connection.transaction():
            writer.write(rows)
        assert written(connection, schema, tables) == tables
        found = connection.execute(
            sql.SQL(
                "SELECT table_name, column_name, column_type, value, message_id, received_at"
                " FROM {}.discards"
            ).format(sql.Identifier(schema))
        ).fetchall()
        assert Counter(found) == discards
