"""The loader against real PostgreSQL and nats-server: schema, typed rows, replay, bad rows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from services.consumers.loader.schema import MIGRATIONS, migrate
from services.consumers.loader.sink import Loader, LoaderConfig
from services.contract import read
from services.postgres.contract import PostgresAccess
from tests.servers import Postgres, ServerProcess, nats_url
from tests.services.consumers.conftest import (
    event,
    publish,
    read_dead_letters,
    run_consumer_until,
    settings,
)

pytestmark = pytest.mark.servers


def connect(env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], dbname=env["PGDATABASE"]
    )


def loader(env: dict[str, str]) -> Loader:
    return Loader(LoaderConfig.load(read(PostgresAccess, env)))


def test_schema_is_created_and_migrated_idempotently(warehouse: dict[str, str]) -> None:
    with connect(warehouse) as connection:
        assert migrate(connection) == [version for version, _, _ in MIGRATIONS]
        assert migrate(connection) == []
        columns = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'events'"
            ).fetchall()
        )
        unique = connection.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'events'::regclass AND i.indisunique"
        ).fetchall()
    assert columns["message_id"] == "text"
    assert columns["timestamp"] == columns["received_at"] == "timestamp with time zone"
    assert columns["properties"] == columns["traits"] == columns["context"] == "jsonb"
    assert columns["raw"] == "jsonb"
    assert unique == [("message_id",)]


def test_the_table_exists_once_the_loader_has_started(warehouse: dict[str, str]) -> None:
    """Before the first event: a query right after it finds the table (empty), not an error."""
    sink = loader(warehouse)
    asyncio.run(sink.start())
    try:
        with connect(warehouse) as connection:
            assert connection.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        asyncio.run(sink.close())


def test_events_load_into_typed_columns_and_replays_add_nothing(
    jetstream: tuple[str, str], warehouse: dict[str, str], dead_letter_url: str
) -> None:
    url, stream = jetstream
    sent = [event(i) for i in range(30)]
    sent.append(
        {
            "type": "identify",
            "userId": 42,
            "anonymousId": "anon-1",
            "traits": {"plan": "pro"},
            "messageId": "identify-1",
            "receivedAt": "2026-11-27T20:19:03.512Z",
            "timestamp": "2026-11-27T20:19:01.000Z",
            "sentAt": "2026-11-27T20:19:02.000Z",
            "originalTimestamp": "2026-11-27T20:19:00.000Z",
            "liftoff": {"source": "ios", "schema": 1},
        }
    )
    asyncio.run(publish(url, sent))
    run_consumer_until(
        url, loader(warehouse), settings("loader", batch_max_events=8), dead_letter_url
    )
    # A replay through another durable consumer, with other batch boundaries: nothing new.
    run_consumer_until(
        url, loader(warehouse), settings("loader-replay", batch_max_events=13), dead_letter_url
    )
    with connect(warehouse) as connection:
        count, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events"
        ).fetchone()
        identify = connection.execute(
            "SELECT type, source, user_id, anonymous_id, traits, timestamp, received_at,"
            " sent_at, original_timestamp, stream_partition, stream_sequence, raw"
            " FROM events WHERE message_id = 'identify-1'"
        ).fetchone()
        track = connection.execute(
            "SELECT event, properties->>'index', context->'library'->>'name'"
            " FROM events WHERE message_id = 'm-7'"
        ).fetchone()
        typed = connection.execute(
            "SELECT (SELECT count(*) FROM web.tracks), (SELECT count(*) FROM web.order_completed),"
            " (SELECT count(*) FROM ios.identifies), (SELECT count(*) FROM ios.users)"
        ).fetchone()
    assert (count, distinct) == (31, 31)
    assert typed == (30, 30, 1, 1)  # the typed rows too: once, the replay added none
    assert identify[:5] == ("identify", "ios", "42", "anon-1", {"plan": "pro"})
    assert identify[5] == datetime(2026, 11, 27, 20, 19, 1, tzinfo=UTC)
    assert identify[6] == datetime(2026, 11, 27, 20, 19, 3, 512000, tzinfo=UTC)
    assert identify[7] == datetime(2026, 11, 27, 20, 19, 2, tzinfo=UTC)
    assert identify[8:11] == ("2026-11-27T20:19:00.000Z", stream, Decimal(31))
    assert identify[11] == sent[-1]
    assert track == ("Order Completed", "7", "test")


def test_duplicates_on_the_stream_load_once(
    jetstream: tuple[str, str], warehouse: dict[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    # The same messageIds published again as raw bytes (no Nats-Msg-Id): the stream keeps both.
    first = [event(i) for i in range(5)]
    asyncio.run(publish(url, [*first, *(json.dumps(e).encode() for e in first)]))
    run_consumer_until(
        url, loader(warehouse), settings("loader", batch_max_events=3), dead_letter_url
    )
    with connect(warehouse) as connection:
        rows = connection.execute("SELECT message_id, stream_sequence FROM events").fetchall()
    assert sorted(rows) == [(f"m-{i}", Decimal(i + 1)) for i in range(5)]


def test_a_batch_partly_loaded_before_takes_the_staging_path_and_adds_only_new_rows(
    jetstream: tuple[str, str], warehouse: dict[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    asyncio.run(publish(url, [event(i) for i in range(10)]))
    run_consumer_until(url, loader(warehouse), settings("loader"), dead_letter_url)
    asyncio.run(publish(url, [event(i) for i in range(10, 20)]))
    # Another durable consumer: one batch of 20 whose first 10 rows are already loaded, so the
    # straight COPY hits the primary key and rolls back; the staging path loads the other 10.
    with connect(warehouse) as connection:
        before = connection.execute(
            "SELECT xmin::text::bigint FROM events WHERE message_id = 'm-0'"
        ).fetchone()
    run_consumer_until(
        url, loader(warehouse), settings("loader-2", batch_max_events=20), dead_letter_url
    )
    with connect(warehouse) as connection:
        rows = connection.execute("SELECT message_id FROM events").fetchall()
        kept = connection.execute(
            "SELECT xmin::text::bigint FROM events WHERE message_id = 'm-0'"
        ).fetchone()
        typed = connection.execute("SELECT id FROM web.order_completed").fetchall()
        tracks = connection.execute("SELECT count(*) FROM web.tracks").fetchone()
    assert sorted(r[0] for r in rows) == sorted(f"m-{i}" for i in range(20))
    assert kept == before  # the old row was not rewritten
    # The typed rows of the new ones only, in the staging path's transaction.
    assert sorted(r[0] for r in typed) == sorted(f"m-{i}" for i in range(20))
    assert tracks == (20,)


def test_bad_rows_are_parked_not_blocking(
    shared_nats: ServerProcess,
    jetstream: tuple[str, str],
    warehouse: dict[str, str],
    dead_letter_url: str,
) -> None:
    url, _ = jetstream
    consumer = f"loader-{warehouse['PGDATABASE']}"
    asyncio.run(
        publish(
            url,
            [
                event(1),
                event(2, timestamp="not a time"),
                event(3, properties={"text": "nul \u0000 byte"}),
                b"[1, 2]",
                event(4),
                # The six characters \u0000 (escaped in JSON as "\\u0000") are text jsonb
                # stores; only the NUL code point is refused, also right after a backslash.
                event(5, properties={"text": "\\u0000", "\\u0000": "key"}),
                event(6, properties={"text": "\\\u0000"}),
            ],
        )
    )
    run_consumer_until(url, loader(warehouse), settings(consumer), dead_letter_url)
    with connect(warehouse) as connection:
        loaded = [row[0] for row in connection.execute("SELECT message_id FROM events ORDER BY 1")]
        (properties,) = connection.execute(
            "SELECT properties FROM events WHERE message_id = 'm-5'"
        ).fetchone()
    assert loaded == ["m-1", "m-4", "m-5"]
    assert properties == {"text": "\\u0000", "\\u0000": "key"}
    parked = asyncio.run(read_dead_letters(nats_url(shared_nats), consumer))
    reasons = {
        headers.get("Liftoff-Message-Id", "-"): headers["Liftoff-Reason"] for headers, _ in parked
    }
    assert set(reasons) == {"m-2", "m-3", "m-6", "-"}
    assert "timestamp" in reasons["m-2"]
    assert "\\u0000" in reasons["m-3"]
    assert "not a JSON object" in reasons["-"]


def test_postgres_down_retries_the_batch_until_it_is_back(
    tmp_path: object, jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    from pathlib import Path

    from tests.servers import postgres_server

    url, _ = jetstream
    database: Postgres = postgres_server(Path(str(tmp_path)) / "pg")
    try:
        env = database.env()
        asyncio.run(publish(url, [event(i) for i in range(10)]))
        sink = loader(env)
        attempts: list[int] = []
        original = sink.handle

        async def handle_counting(batch: list) -> object:  # the sink is unchanged; this counts
            attempts.append(len(batch))
            if len(attempts) == 3:
                database.start()  # Postgres comes up after two failed attempts
            return await original(batch)

        sink.handle = handle_counting  # type: ignore[method-assign]
        run_consumer_until(url, sink, settings("loader"), dead_letter_url)
        with connect(env) as connection:
            count = connection.execute("SELECT count(*) FROM events").fetchone()[0]
        assert attempts[:3] == [10, 10, 10]
        assert count == 10
    finally:
        database.cleanup()
