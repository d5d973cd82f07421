"""``warehouse-rebuild`` against a real PostgreSQL: a declared type changes the column and keeps
every row; events loaded while it runs survive the swap; the command's errors."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest

from services.cli import main
from services.consumers.loader.schema import migrate
from services.warehouse import command, rebuild
from services.warehouse.contract import RebuildSettings
from services.warehouse.typed import derive
from services.warehouse.writer import TypedWriter
from tests.servers import Postgres
from tests.servers import pg_connect as connect

SOURCE = "web-app"
SCHEMA = "web_app"
AT = "2026-11-27T20:19:03.512Z"


@pytest.fixture
def env(postgres: Postgres) -> dict[str, str]:
    """libpq's variables for a fresh database with the raw ``events`` table."""
    found = postgres.env(postgres.create_database(f"r_{uuid.uuid4().hex[:10]}"))
    with connect(found) as connection:
        migrate(connection)
    return found


def signed_up(number: int, seats: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Signed Up",
        "messageId": f"m-{number:07d}",
        "userId": f"u-{number % 7}",
        "anonymousId": f"a-{number % 11}",
        "timestamp": AT,
        "receivedAt": AT,
        "sentAt": AT,
        "properties": {"seats": seats, "plan": "pro"},
        "context": {"library": {"name": "analytics-python", "version": "2.3"}},
        "liftoff": {"source": SOURCE, "schema": 1},
    }


def load(
    connection: psycopg.Connection,
    events: Sequence[dict[str, Any]],
    writer: TypedWriter | None = None,
) -> None:
    """What the loader does with a batch: the raw rows and the typed rows, one transaction
    (schema changes before it, as the typed layer's writer makes them)."""
    writer = writer or TypedWriter(connection, SCHEMA)
    rows = [row for event in events for row in derive(event)]
    writer.prepare(rows)
    with connection.transaction():
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO events (message_id, type, source, event, timestamp, received_at,"
                " raw, stream_partition, stream_sequence) VALUES (%s, 'track', %s, %s, %s, %s,"
                " %s, 'p', 1)",
                [(e["messageId"], SOURCE, e["event"], AT, AT, json.dumps(e)) for e in events],
            )
        writer.write(rows)


def column_type(connection: psycopg.Connection, table: str, column: str) -> str:
    (found,) = connection.execute(
        "SELECT data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        (SCHEMA, table, column),
    ).fetchone() or (None,)
    return str(found)


def ids(connection: psycopg.Connection, table: str) -> set[str]:
    return {i for (i,) in connection.execute(f"SELECT id FROM {SCHEMA}.{table}").fetchall()}


def rebuild_settings(env: dict[str, str], columns: Any = None) -> RebuildSettings[str]:
    from services.postgres.contract import PostgresAccess

    access = PostgresAccess(
        host=env["PGHOST"], port=env["PGPORT"], database=env["PGDATABASE"], user=env["PGUSER"]
    )
    return RebuildSettings(warehouse=access, columns=columns)


def test_a_declared_type_changes_the_column_and_keeps_every_row(env: dict[str, str]) -> None:
    with connect(env) as connection:
        # The first value seen was text, so the column is text; later ones are numbers.
        load(connection, [signed_up(0, "three")])
        load(connection, [signed_up(n, n) for n in range(1, 40)])
        assert column_type(connection, "signed_up", "seats") == "text"
        before = ids(connection, "tracks")

    declared = {SOURCE: {"signed_up": {"seats": "bigint"}}}
    summary = command.rebuild_source(rebuild_settings(env, declared), SOURCE, ["signed_up"])

    with connect(env) as connection:
        assert column_type(connection, "signed_up", "seats") == "bigint"
        assert ids(connection, "signed_up") == before and len(before) == 40
        assert ids(connection, "tracks") == before, "tables not named are left as they are"
        seats = dict(connection.execute(f"SELECT id, seats FROM {SCHEMA}.signed_up").fetchall())
        assert seats["m-0000000"] is None and seats["m-0000039"] == 39
        discards = connection.execute(
            f"SELECT table_name, column_name, column_type, value, message_id FROM {SCHEMA}.discards"
        ).fetchall()
        assert discards == [("signed_up", "seats", "bigint", "three", "m-0000000")]
        shadows = connection.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'liftoff_rebuild_%'"
        ).fetchone()
        assert shadows == (0,)
    assert summary.tables == ["signed_up"] and summary.events == 40


def _keep_loading(env: dict[str, str], stop: Any, batches: Any) -> None:
    """The loader, in its own process: 20-event batches until ``stop``, counting them."""
    number = 3000
    with connect(env) as connection:
        writer = TypedWriter(connection, SCHEMA)  # one, as the loader keeps
        while not stop.is_set():
            load(connection, [signed_up(n, n) for n in range(number, number + 20)], writer)
            number += 20
            with batches.get_lock():
                batches.value += 1


def _keep_loading_with_the_loader(env: dict[str, str], stop: Any, batches: Any) -> None:
    """The real loader (``services.consumers.loader.sink.Loader``, its own typed writer and
    cache), handed 20-event batches as the runner hands them, until ``stop``."""
    import asyncio
    from datetime import UTC, datetime

    from services.consumers.loader.sink import Loader, LoaderConfig
    from services.consumers.runner.model import DONE, Delivery, Position, decode
    from services.contract import read
    from services.postgres.contract import PostgresAccess

    async def run() -> None:
        loader = Loader(LoaderConfig.load(read(PostgresAccess, env)))
        await loader.start()
        number = 3000
        while not stop.is_set():
            batch = []
            for n in range(number, number + 20):
                data = json.dumps(signed_up(n, n)).encode()
                delivery = Delivery(data, Position("jetstream", "EVENTS", n), datetime.now(UTC))
                assert decode(delivery) is None
                batch.append(delivery)
            assert list(await loader.handle(batch)) == [DONE] * 20
            number += 20
            with batches.get_lock():
                batches.value += 1
        await loader.close()

    asyncio.run(run())


def _wait_for(batches: Any, count: int, loading: Any) -> None:
    deadline = time.monotonic() + 30
    while batches.value < count:
        assert loading.is_alive(), f"the loader stopped: exit status {loading.exitcode}"
        assert time.monotonic() < deadline, "the loader made no progress"
        time.sleep(0.01)


@pytest.mark.parametrize("loader", [_keep_loading, _keep_loading_with_the_loader])
def test_events_loaded_during_a_rebuild_survive_the_swap(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, loader: Any
) -> None:
    monkeypatch.setattr(rebuild, "CHUNK_EVENTS", 100)
    with connect(env) as connection:
        for start in range(0, 3000, 500):
            load(connection, [signed_up(n, n) for n in range(start, start + 500)])
    context = multiprocessing.get_context("fork")
    stop, batches = context.Event(), context.Value("i", 0)
    loading = context.Process(target=loader, args=(env, stop, batches))
    loading.start()
    try:
        _wait_for(batches, 1, loading)  # loading before the rebuild starts...
        declared = {SOURCE: {"signed_up": {"seats": "double precision"}}}
        summary = command.rebuild_source(rebuild_settings(env, declared), SOURCE)
        _wait_for(batches, batches.value + 3, loading)  # ...and after the swap
    finally:
        stop.set()
        loading.join(30)
    assert loading.exitcode == 0
    with connect(env) as connection:
        raw = {i for (i,) in connection.execute("SELECT message_id FROM events").fetchall()}
        assert ids(connection, "tracks") == raw
        assert ids(connection, "signed_up") == raw
        assert column_type(connection, "signed_up", "seats") == "double precision"
        seats = connection.execute(f"SELECT id, seats FROM {SCHEMA}.signed_up").fetchall()
        wrong = [(i, value) for i, value in seats if value != int(i[2:])]
        assert not wrong, f"{len(wrong)} values differ, e.g. {wrong[:3]}"
    assert summary.caught_up > 0, "some events were loaded during the build"
    assert set(summary.tables) == {"signed_up", "tracks"}


def test_a_loader_as_fast_as_the_catch_up_does_not_hold_the_rebuild_forever(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each catch-up round finds a full chunk newly loaded (a loader exactly as fast as the
    catch-up): the rounds stop, the swap writes the rest under its lock, nothing is lost."""
    monkeypatch.setattr(rebuild, "CHUNK_EVENTS", 50)
    with connect(env) as connection:
        load(connection, [signed_up(n, n) for n in range(200)])
    loader = connect(env)
    missing, swap = rebuild.Rebuild._missing, rebuild.Rebuild._swap
    rounds: list[int] = []
    swapping: list[bool] = []

    def swap_marked(job: rebuild.Rebuild) -> None:
        swapping.append(True)
        swap(job)

    def missing_while_loading(job: rebuild.Rebuild) -> Iterator[rebuild.Chunk]:
        if not swapping:  # a catch-up round (the swap holds the raw table's lock: no load then)
            rounds.append(len(rounds))
            assert len(rounds) < 100, "the catch-up never stops while the loader keeps up"
            start = 1000 + 50 * len(rounds)
            load(loader, [signed_up(n, n) for n in range(start, start + 50)])
        return missing(job)

    monkeypatch.setattr(rebuild.Rebuild, "_missing", missing_while_loading)
    monkeypatch.setattr(rebuild.Rebuild, "_swap", swap_marked)
    with connect(env) as connection, connect(env) as reader:
        summary = rebuild.rebuild(connection, SOURCE, reader=reader)
    loader.close()
    assert len(rounds) <= rebuild.CATCH_UP_ROUNDS + 1
    with connect(env) as connection:
        raw = {i for (i,) in connection.execute("SELECT message_id FROM events").fetchall()}
        assert ids(connection, "signed_up") == raw and len(raw) == 200 + 50 * len(rounds)
    assert summary.caught_up == 50 * len(rounds)


def test_a_rebuild_from_the_archive(env: dict[str, str], aws_env: str) -> None:
    import boto3

    client = boto3.client("s3")
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    events = [signed_up(n, n) for n in range(12)]
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in [*events, events[3]])
    client.put_object(
        Bucket=bucket, Key=f"source={SOURCE}/dt=2026-11-27/hour=20/a.ndjson.gz",
        Body=gzip.compress(lines),
    )  # fmt: skip
    with connect(env) as connection:
        load(connection, events[:5])
    settings = rebuild_settings(env)
    from services.archive.contract import ArchiveAccess

    settings = RebuildSettings(warehouse=settings.warehouse, archive=ArchiveAccess(bucket=bucket))
    summary = command.rebuild_source(settings, SOURCE, origin="archive")
    with connect(env) as connection:
        assert ids(connection, "signed_up") == {e["messageId"] for e in events}
    assert summary.events == 13


def test_the_command_checks_its_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warehouse-rebuild", "--source", SOURCE], env={}) == 2
    assert "PGHOST is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["warehouse-rebuild", "--source", SOURCE, "--from", "s3"], env={})
    with pytest.raises(command.ConfigError, match=r"rebuild\.source"):
        command.handle({"tables": ["tracks"]}, RebuildSettings())
    # Names are checked before anything is connected (no Postgres here).
    with pytest.raises(command.ConfigError, match=r"--source 'Web App': a source of"):
        command.handle({"source": "Web App"}, RebuildSettings())
    with pytest.raises(command.ConfigError, match=r"--table 'x;drop': a typed table"):
        command.handle({"source": "web", "tables": ["x;drop"]}, RebuildSettings())


def test_the_declarable_types_and_fixed_columns_are_the_typed_layers() -> None:
    from services.warehouse import columns, typed

    assert set(columns.COLUMN_TYPES) == set(typed.COLUMN_TYPES)
    fixed = {column for table in typed.FIXED.values() for column in table}
    assert {*fixed, "uuid_ts"} == columns.FIXED_COLUMNS


def test_the_reconcile_function_runs_a_rebuild_payload(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On AWS the rebuild DAG invokes the reconcile function with ``{"rebuild": {...}}``."""
    from services.aws_lambda import reconcile_handler

    with connect(env) as connection:
        load(connection, [signed_up(n, n) for n in range(5)])
    for name, value in {**env, "LIFTOFF_ARCHIVE_BUCKET": "unused"}.items():
        monkeypatch.setenv(name, value)
    columns = {SOURCE: {"signed_up": {"seats": "text"}}}
    monkeypatch.setenv("LIFTOFF_WAREHOUSE_COLUMNS", json.dumps(columns))
    summary = reconcile_handler({"rebuild": {"source": SOURCE, "tables": ["signed_up"]}})
    assert summary["tables"] == ["signed_up"] and summary["events"] == 5
    with connect(env) as connection:
        assert column_type(connection, "signed_up", "seats") == "text"


def test_the_loader_and_the_reconciliation_write_with_the_declared_types() -> None:
    """LIFTOFF_WAREHOUSE_COLUMNS reaches the typed writer of every process that loads."""
    from services.consumers.loader import contract as loader_contract
    from services.consumers.loader import sink
    from services.consumers.reconcile import contract as reconcile_contract
    from services.consumers.reconcile import repair

    columns = {SOURCE: {"signed_up": {"seats": "bigint"}}}
    env = {
        "PGHOST": "db",
        "LIFTOFF_STREAM_URL": "nats://nats:4222/EVENTS",
        "LIFTOFF_ARCHIVE_BUCKET": "b",
        "LIFTOFF_WAREHOUSE_COLUMNS": json.dumps(columns),
    }
    assert sink.load(loader_contract.parse(env)).declared == columns
    _, warehouse = repair.load(reconcile_contract.parse(env))
    assert warehouse.declared == columns


def test_one_rebuild_per_source_at_a_time(env: dict[str, str]) -> None:
    with connect(env) as connection:
        load(connection, [signed_up(n, n) for n in range(3)])
        connection.execute("SELECT pg_advisory_lock(hashtext('liftoff.rebuild web_app'))")
        with pytest.raises(rebuild.RebuildRunning, match="another rebuild of source 'web-app'"):
            command.rebuild_source(rebuild_settings(env), SOURCE)
        assert command.run(rebuild_settings(env), SOURCE) == 1
    assert command.rebuild_source(rebuild_settings(env), SOURCE).events == 3  # lock gone


def test_the_rebuild_writes_the_schema_the_loader_writes(env: dict[str, str]) -> None:
    """A source named like a reserved schema: the loader writes `_public`, so does the rebuild
    (never `public`, where the raw table lives)."""
    from services.warehouse.names import source_schema

    with connect(env) as connection:
        for source in ("public", "pg_web", "iOS App", SOURCE):
            assert rebuild.Rebuild(connection, source).schema == source_schema(source)
        assert rebuild.Rebuild(connection, "public").schema == "_public"
