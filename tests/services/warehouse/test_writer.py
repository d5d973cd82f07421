"""The typed writer against a real PostgreSQL: tables and column types, discards, users and the
identity map, the column limit, and concurrent writers changing the same tables' columns."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest

from services.warehouse.typed import derive
from services.warehouse.writer import TypedWriter, WriteCounts
from tests.servers import pg_connect as connect

pytestmark = pytest.mark.servers


def track(index: int, event: str = "Signed Up", **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "messageId": f"m-{event}-{index}",
        "userId": f"u-{index}",
        "receivedAt": "2026-11-27T20:19:03.512Z",
        "timestamp": "2026-11-27T20:19:03Z",
        "context": {"library": {"name": "test"}},
        "properties": properties,
    }


def identify(index: int, timestamp: str, user: str = "u-1", **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"i-{index}",
        "userId": user,
        "anonymousId": f"anon-{user}",
        "receivedAt": timestamp,
        "timestamp": timestamp,
        "traits": traits,
    }


def write(connection: psycopg.Connection, writer: TypedWriter, events: list[dict]) -> WriteCounts:
    rows = [row for event in events for row in derive(event)]
    writer.prepare(rows)
    with connection.transaction():
        return writer.write(rows)


def columns(connection: psycopg.Connection, table: str, schema: str = "web") -> dict[str, str]:
    return dict(
        connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchall()
    )


def test_columns_get_the_type_of_their_first_value_or_the_declared_one(
    warehouse: dict[str, str],
) -> None:
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, "web", {"Signed Up": {"coupon": "text"}})
        counts = write(
            connection,
            writer,
            [
                track(1, plan="pro", seats=3, price=9.5, trial=True, coupon=7, empty=None),
                track(2, renews_at="2027-01-01T00:00:00Z", tags=["a"], address={"city": "Bonn"}),
            ],
        )
        assert counts.rows == {"tracks": 2, "signed_up": 2} and counts.discards == {}
        found = columns(connection, "signed_up")
        assert {name: found[name] for name in ("plan", "seats", "price", "trial", "coupon")} == {
            "plan": "text",
            "seats": "bigint",
            "price": "double precision",
            "trial": "boolean",
            "coupon": "text",  # declared: 7 would have made it a bigint
        }
        assert found["renews_at"] == found["received_at"] == "timestamp with time zone"
        assert found["tags"] == found["address_city"] == found["context_library_name"] == "text"
        assert found["uuid_ts"] == "timestamp with time zone"
        assert "empty" not in found  # created by its first non-null value
        assert connection.execute(
            "SELECT event, event_text, seats, coupon, tags FROM web.signed_up ORDER BY id"
        ).fetchall() == [
            ("signed_up", "Signed Up", 3, "7", None),
            ("signed_up", "Signed Up", None, None, '["a"]'),
        ]
        assert connection.execute("SELECT count(*) FROM web.tracks").fetchone() == (2,)


def test_a_batchs_schema_changes_commit_once_whatever_the_number_of_tables(
    warehouse: dict[str, str],
) -> None:
    """Every table's new columns in one transaction (one commit per batch, not per table): the
    catalog rows of all the columns a batch adds carry the same transaction id."""
    names = [f"Event {n}" for n in range(5)]
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, "web")
        write(connection, writer, [track(n, name, plan="pro") for n, name in enumerate(names)])
        assert not writer.prepare(
            [row for n, name in enumerate(names) for row in derive(track(9 + n, name, plan="x"))]
        )  # nothing new: no transaction at all
        writer.prepare(
            [row for n, name in enumerate(names) for row in derive(track(n, name, seats=n))]
        )
        assert connection.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM pg_attribute"
            " WHERE attname = 'seats' AND attrelid::regclass::text LIKE 'web.%'"
        ).fetchone() == (len(names), 1)


def test_a_value_that_does_not_fit_is_null_and_kept_in_discards(
    warehouse: dict[str, str],
) -> None:
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, "web")
        write(connection, writer, [track(1, seats=3)])
        counts = write(connection, writer, [track(2, seats="three"), track(3, seats=4)])
        assert counts.rows["signed_up"] == 2 and counts.discards == {"signed_up": 1}
        assert connection.execute("SELECT id, seats FROM web.signed_up ORDER BY id").fetchall() == [
            ("m-Signed Up-1", 3),
            ("m-Signed Up-2", None),
            ("m-Signed Up-3", 4),
        ]
        discards = connection.execute(
            "SELECT table_name, column_name, column_type, value, message_id,"
            " received_at IS NOT NULL, uuid_ts IS NOT NULL FROM web.discards"
        ).fetchall()
        assert discards == [("signed_up", "seats", "bigint", "three", "m-Signed Up-2", True, True)]


def test_users_keep_the_latest_traits_and_anonymous_events_join_the_user(
    warehouse: dict[str, str],
) -> None:
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, "web")
        page = {
            "type": "page",
            "messageId": "p-1",
            "anonymousId": "anon-u-1",
            "name": "Pricing",
            "receivedAt": "2026-11-27T10:00:00Z",
            "timestamp": "2026-11-27T10:00:00Z",
            "properties": {"path": "/pricing"},
        }
        write(
            connection,
            writer,
            [page, identify(1, "2026-11-27T12:00:00Z", email="new@x", plan="pro")],
        )
        # An older identify, arriving late: fills what is missing, overwrites nothing.
        write(connection, writer, [identify(2, "2026-11-27T11:00:00Z", email="old@x", age=30)])
        # Two in one batch: the later one wins.
        write(
            connection,
            writer,
            [
                identify(4, "2026-11-27T14:00:00Z", plan="team"),
                identify(3, "2026-11-27T13:00:00Z", plan="enterprise", email="newer@x"),
            ],
        )
        assert connection.execute(
            "SELECT id, email, plan, age, timestamp::text FROM web.users"
        ).fetchall() == [("u-1", "newer@x", "team", 30, "2026-11-27 14:00:00+00")]
        joined = connection.execute(
            "SELECT p.name, m.user_id, u.email FROM web.pages p"
            " JOIN web.identity_map m ON m.anonymous_id = p.anonymous_id"
            " JOIN web.users u ON u.id = m.user_id"
        ).fetchall()
        assert joined == [("Pricing", "u-1", "newer@x")]


def test_rows_already_there_are_skipped_on_request(warehouse: dict[str, str]) -> None:
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, "web")
        write(connection, writer, [track(1, seats=1)])
        with pytest.raises(psycopg.errors.UniqueViolation):
            write(connection, writer, [track(1, seats=1), track(2, seats=2)])
        rows = [row for event in (track(1, seats=9), track(2, seats=2)) for row in derive(event)]
        with connection.transaction():
            writer.write(rows, skip_existing=True)
        assert connection.execute("SELECT seats FROM web.signed_up ORDER BY id").fetchall() == [
            (1,),
            (2,),
        ]


def test_a_table_at_its_column_limit_discards_new_columns(warehouse: dict[str, str]) -> None:
    with connect(warehouse) as connection:
        writer = TypedWriter(connection, "web", max_columns=10)
        counts = write(connection, writer, [track(1, a=1, b=2, c=3, d=4)])
        assert len(columns(connection, "signed_up")) == 10
        assert counts.discards == {"signed_up": 2}
        assert connection.execute(
            "SELECT column_name, column_type, value FROM web.discards ORDER BY column_name"
        ).fetchall() == [("c", "(none: column limit)", "3"), ("d", "(none: column limit)", "4")]


def test_concurrent_writers_changing_the_same_tables_do_not_deadlock(
    warehouse: dict[str, str],
) -> None:
    """Six writers (as six loader processes), each batch touching the same eight tables in its
    own order, with new columns in every batch: every DDL is taken while no rows are held."""
    writers, batches, tables = 6, 8, [f"Event {n}" for n in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def load(worker: int) -> None:
        try:
            with connect(warehouse) as connection:
                writer = TypedWriter(connection, "web")
                order = random.Random(worker)
                start.wait()
                for batch in range(batches):
                    events = [
                        track(worker * 1000 + batch * 10 + n, name, **{f"p{batch}_{n % 3}": n})
                        for n, name in enumerate(order.sample(tables, len(tables)))
                    ]
                    write(connection, writer, events)
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=load, args=(worker,)) for worker in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with connect(warehouse) as connection:
        assert connection.execute("SELECT count(*) FROM web.tracks").fetchone() == (
            writers * batches * len(tables),
        )


def test_a_column_whose_type_changed_under_the_writer_is_written_as_it_is_now(
    warehouse: dict[str, str],
) -> None:
    """A rebuild (or an operator) changed a column's type after the writer cached it: the
    next write sees the catalog as it is, under its locks, and never encodes for the old
    type (a binary bigint read as text would be garbage)."""
    with connect(warehouse) as connection, connect(warehouse) as operator:
        writer = TypedWriter(connection, "web")
        write(connection, writer, [track(1, seats=3, plan="pro")])
        operator.execute("ALTER TABLE web.signed_up ALTER COLUMN seats TYPE text")
        operator.execute(
            "ALTER TABLE web.signed_up ALTER COLUMN plan TYPE bigint USING NULL::bigint"
        )
        counts = write(connection, writer, [track(2, seats=65, plan="team"), track(3, plan=7)])
        assert connection.execute(
            "SELECT id, seats, plan FROM web.signed_up ORDER BY id"
        ).fetchall() == [
            ("m-Signed Up-1", "3", None),
            ("m-Signed Up-2", "65", None),
            ("m-Signed Up-3", None, 7),
        ]
        assert counts.discards == {"signed_up": 1}  # "team" does not fit a bigint
