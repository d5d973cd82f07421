"""Warehouse reconciliation against a real PostgreSQL and S3 on moto.

The archive is written by the archiver's own sink and the warehouse by the loader's own sink,
from the same deliveries, exactly as the streaming path does; then rows are deleted and the
reconciliation must bring back exactly those, once, and change nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from services import aws_lambda
from services.consumers.archiver.sink import Archiver, ArchiverConfig, encode_object
from services.consumers.loader.sink import Loader, LoaderConfig
from services.consumers.reconcile.repair import (
    ReconcileIncomplete,
    Reconciler,
    hours_ago,
    list_hour_objects,
    parse_hour,
)
from services.consumers.runner.model import Delivery, Position, decode
from services.contract import ConfigError, read
from services.postgres.contract import PostgresAccess
from tests.servers import AWS_TEST_ENV, REPO_ROOT, Postgres, free_port
from tests.services.consumers.conftest import event

pytestmark = pytest.mark.servers

HOUR = parse_hour("2026-11-27T10")
KINESIS_SEQUENCE = 49590338271490256608559692538361571095921575989136588898  # > 64 bits


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def archive(aws_env: str) -> ArchiverConfig:
    """A fresh bucket on moto, as the archiver is configured for it."""
    name = f"archive-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return ArchiverConfig(bucket=name, window_events=10, endpoint_url=aws_env)


# --- the streaming path, in this process ---------------------------------------------------------


def deliveries(events: Sequence[dict[str, Any]], *, kinesis_from: int | None = None) -> list:
    """Contract-checked deliveries in stream order: JetStream sequences 1, 2, ...; from index
    ``kinesis_from`` on, Kinesis records of one shard (sparse sequence numbers > 64 bits)."""
    result = []
    for index, document in enumerate(events):
        if kinesis_from is not None and index >= kinesis_from:
            position = Position("kinesis", "shardId-000000000000", KINESIS_SEQUENCE + 7 * index)
        else:
            position = Position("jetstream", "EVENTS", index + 1)
        delivery = Delivery(
            data=json.dumps(document).encode(),
            position=position,
            arrival=datetime(2026, 11, 27, 12, tzinfo=UTC) + timedelta(seconds=index),
        )
        assert decode(delivery) is None
        result.append(delivery)
    return result


def write_archive(cfg: ArchiverConfig, batch: list[Delivery]) -> None:
    async def run() -> None:
        archiver = Archiver(cfg)
        await archiver.start()
        try:
            await archiver.handle(batch)
        finally:
            await archiver.close()

    asyncio.run(run())


def load_warehouse(env: dict[str, str], batch: list[Delivery]) -> None:
    async def run() -> None:
        loader = Loader(LoaderConfig.load(read(PostgresAccess, env)))
        try:
            await loader.handle(batch)
        finally:
            await loader.close()

    asyncio.run(run())


def stream_events() -> list[dict[str, Any]]:
    """40 events of 10:00-10:59 (web, ios, an identify) and 20 of 11:00-11:59."""
    events = []
    for i in range(60):
        hour = "10" if i < 40 else "11"
        at = f"2026-11-27T{hour}:{i % 60:02d}:{i % 7:02d}.{i:03d}Z"
        events.append(event(i, source="web" if i % 3 else "ios", received_at=at))
    events[5] = {
        "type": "identify",
        "userId": 42,
        "anonymousId": "anon-5",
        "traits": {"plan": "pro", "seats": 3},
        "messageId": "m-5",
        "receivedAt": "2026-11-27T10:05:00.000Z",
        "timestamp": "2026-11-27T10:04:59.000Z",
        "sentAt": "2026-11-27T10:04:59.500Z",
        "originalTimestamp": "2026-11-27T10:04:58.000Z",
        "liftoff": {"source": "ios", "schema": 1},
    }
    return events


def rows(env: dict[str, str]) -> dict[str, tuple[Any, ...]]:
    """Every events row by messageId (every column; loaded_at last)."""
    with connect(env) as connection:
        found = connection.execute("SELECT * FROM events ORDER BY message_id").fetchall()
    return {row[0]: row for row in found}


def connect(env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], dbname=env["PGDATABASE"]
    )


def delete(env: dict[str, str], message_ids: Sequence[str]) -> None:
    with connect(env) as connection:
        connection.execute("DELETE FROM events WHERE message_id = ANY(%s)", (list(message_ids),))


def reconciler(cfg: ArchiverConfig, env: dict[str, str], chunk_events: int = 8) -> Reconciler:
    return Reconciler(cfg, LoaderConfig.load(read(PostgresAccess, env)), chunk_events=chunk_events)


def put(cfg: ArchiverConfig, key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=cfg.bucket, Key=key, Body=body)


HOUR_10 = "source=web/year=2026/month=11/day=27/hour=10"


# --- the reconciliation --------------------------------------------------------------------------


def test_deleted_rows_come_back_exactly_once_and_nothing_else_changes(
    archive: ArchiverConfig, warehouse: dict[str, str]
) -> None:
    batch = deliveries(stream_events(), kinesis_from=30)
    write_archive(archive, batch)
    load_warehouse(warehouse, batch)
    before = rows(warehouse)
    assert len(before) == 60

    # Gone from hour 10: JetStream and Kinesis rows, both sources, the identify; and from 11.
    lost_10 = ["m-0", "m-1", "m-5", "m-12", "m-29", "m-30", "m-39"]
    lost_11 = ["m-40", "m-59"]
    delete(warehouse, [*lost_10, *lost_11])

    with reconciler(archive, warehouse) as repair:
        objects = list_hour_objects(repair.client, archive, HOUR)
        summary = repair.reconcile(HOUR)
    assert all("/hour=10/" in key for key in objects)
    assert {key.split("/")[0] for key in objects} == {"source=ios", "source=web"}
    assert summary.as_dict() == {
        "hour": "2026-11-27T10",
        "objects": len(objects),
        "archived": 40,
        "in_warehouse": 33,
        "missing": 7,
        "loaded": 7,
        "duplicates": 0,
        "unloadable": 0,
        "unloadable_reasons": [],
        "corrupt_objects": 0,
        "corrupt": [],
        "ok": True,
    }

    after = rows(warehouse)
    assert sorted(after) == sorted(set(before) - set(lost_11))
    for message_id, row in after.items():
        if message_id in lost_10:
            assert row[:-1] == before[message_id][:-1], message_id  # identical but loaded_at
        else:
            assert row == before[message_id], message_id  # untouched, loaded_at included
    with connect(warehouse) as connection:
        count, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events"
        ).fetchone()
    assert count == distinct == 58

    # Idempotent: a second run finds nothing missing and changes nothing.
    with reconciler(archive, warehouse, chunk_events=1000) as repair:
        again = repair.reconcile(HOUR)
    assert (again.archived, again.in_warehouse, again.missing, again.loaded) == (40, 40, 0, 0)
    assert rows(warehouse) == after


def test_an_empty_warehouse_gets_the_rows_the_loader_would_have_written(
    archive: ArchiverConfig, warehouse: dict[str, str], postgres: Postgres
) -> None:
    """The loader never ran (no table yet): the reconciliation migrates and loads the hour;
    the rows equal those of a warehouse the loader filled (loaded_at aside)."""
    batch = deliveries(stream_events(), kinesis_from=50)
    write_archive(archive, batch)
    reference = postgres.env(postgres.create_database(f"r_{uuid.uuid4().hex[:10]}"))
    load_warehouse(reference, batch)

    with reconciler(archive, warehouse, chunk_events=5000) as repair:
        summary = repair.reconcile(parse_hour("2026-11-27T11"))
    assert (summary.archived, summary.missing, summary.loaded) == (20, 20, 20)
    hour_11 = {f"m-{i}" for i in range(40, 60)}
    expected = {key: row[:-1] for key, row in rows(reference).items() if key in hour_11}
    assert {key: row[:-1] for key, row in rows(warehouse).items()} == expected


def test_an_empty_hour_changes_nothing(archive: ArchiverConfig, warehouse: dict[str, str]) -> None:
    batch = deliveries(stream_events())
    write_archive(archive, batch)
    load_warehouse(warehouse, batch)
    before = rows(warehouse)
    with reconciler(archive, warehouse) as repair:
        summary = repair.reconcile(parse_hour("2026-11-27T09"))
    assert summary.as_dict()["objects"] == summary.archived == summary.loaded == 0
    assert summary.ok
    assert rows(warehouse) == before


def test_a_messageid_archived_twice_is_loaded_once(
    archive: ArchiverConfig, warehouse: dict[str, str]
) -> None:
    """A client retry the stream did not deduplicate, archived under two sources/windows."""
    events = stream_events()[:20]
    retry = {**events[3], "liftoff": {"source": "android", "schema": 1}}
    batch = deliveries([*events, retry])
    write_archive(archive, batch)
    with reconciler(archive, warehouse, chunk_events=4) as repair:
        summary = repair.reconcile(HOUR)
    assert (summary.archived, summary.loaded) == (21, 20)
    # Keys in order: source=android comes first, so its copy is the one kept.
    assert summary.in_warehouse + summary.duplicates == 1
    with connect(warehouse) as connection:
        source = connection.execute("SELECT source FROM events WHERE message_id = 'm-3'").fetchone()
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (20,)
    assert source == ("android",)


def test_corrupt_objects_are_reported_and_the_rest_is_repaired(
    archive: ArchiverConfig, warehouse: dict[str, str]
) -> None:
    batch = deliveries(stream_events())
    write_archive(archive, batch)
    load_warehouse(warehouse, batch)
    delete(warehouse, ["m-1", "m-2", "m-3"])
    # Three damaged objects in hour 10, next to the archiver's good ones.
    good_lines = [json.dumps({**event(100 + i), "liftoff": {
        "source": "web", "schema": 1, "position": {"partition": "EVENTS", "sequence": str(900 + i)}
    }}).encode() for i in range(3)]  # fmt: skip
    put(archive, f"{HOUR_10}/EVENTS-not-gzip.json.gz", b"this is not gzip")
    put(archive, f"{HOUR_10}/EVENTS-truncated.json.gz", encode_object(good_lines)[:-12])
    put(archive, f"{HOUR_10}/EVENTS-not-json.json.gz", encode_object([good_lines[0], b"{oops"]))

    with reconciler(archive, warehouse) as repair:
        summary = repair.reconcile(HOUR)

    assert not summary.ok
    assert summary.corrupt_objects == 3
    errors = {item["key"].rsplit("/", 1)[1]: item["error"] for item in summary.corrupt}
    assert set(errors) == {
        "EVENTS-not-gzip.json.gz",
        "EVENTS-truncated.json.gz",
        "EVENTS-not-json.json.gz",
    }
    assert "BadGzipFile" in errors["EVENTS-not-gzip.json.gz"]
    assert "EOFError" in errors["EVENTS-truncated.json.gz"]
    assert errors["EVENTS-not-json.json.gz"].startswith("line 2:")
    present = set(rows(warehouse))
    assert {"m-1", "m-2", "m-3"} <= present  # the good objects were repaired regardless
    # Lines read before the damage are good events and are loaded too (m-100 is in two).
    salvaged = {"m-100", "m-101", "m-102"} & present
    assert "m-100" in salvaged
    assert summary.loaded == 3 + len(salvaged)

    with pytest.raises(ReconcileIncomplete, match="3 archive object"):
        raise ReconcileIncomplete(summary)


def test_events_the_loader_refuses_are_reported_not_loaded(
    archive: ArchiverConfig, warehouse: dict[str, str]
) -> None:
    """The streaming loader parks these (dead letter); they can never be loaded, so they are
    counted with a reason on every run but do not fail it."""
    events = [
        event(1, received_at="2026-11-27T10:01:00Z"),
        event(2, received_at="2026-11-27T10:02:00Z", timestamp="not a time"),
        event(3, received_at="2026-11-27T10:03:00Z", properties={"text": "nul \u0000 byte"}),
        event(4, received_at="2026-11-27T10:04:00Z"),
    ]
    write_archive(archive, deliveries(events))
    for _ in range(2):
        with reconciler(archive, warehouse) as repair:
            summary = repair.reconcile(HOUR)
        assert summary.ok
        assert summary.unloadable == 2
        reasons = {item["messageId"]: item["reason"] for item in summary.unloadable_reasons}
        assert "timestamp" in reasons["m-2"]
        assert "\\u0000" in reasons["m-3"]
    assert sorted(rows(warehouse)) == ["m-1", "m-4"]


def test_postgres_down_fails_the_run(archive: ArchiverConfig) -> None:
    write_archive(archive, deliveries(stream_events()[:5]))
    down = {"PGHOST": "127.0.0.1", "PGPORT": str(free_port()), "PGUSER": "postgres"}
    with pytest.raises(psycopg.OperationalError), reconciler(archive, down) as repair:
        repair.reconcile(HOUR)


def test_hours() -> None:
    now = datetime(2026, 11, 27, 10, 59, 59, tzinfo=UTC)
    assert hours_ago(0, now) == HOUR
    assert hours_ago(3, now) == parse_hour("2026-11-27T07")
    assert parse_hour("2026-11-27T10:00:00Z") == parse_hour("2026-11-27T10:00+00:00") == HOUR
    for bad in ("2026-11-27", "2026-11-27T10:30", "yesterday", "2026-11-27T10+01:00"):
        with pytest.raises(ConfigError):
            parse_hour(bad)
    with pytest.raises(ConfigError):
        hours_ago(-1)


# --- the command (a subprocess, configured as on Kubernetes) ------------------------------------


def cli_env(tmp_path: Path, archive: ArchiverConfig, warehouse: dict[str, str]) -> dict[str, str]:
    """The reconcile pod's environment: password and S3 credentials as mounted files."""
    password = tmp_path / "password"
    password.write_text("unused-with-trust-auth\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = reconcile\naws_secret_access_key = x\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "PG", "LIFTOFF_"))
    }
    assert archive.endpoint_url is not None
    return {
        **env,
        **{key: warehouse[key] for key in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER")},
        "PGPASSWORD_FILE": str(password),
        "LIFTOFF_ARCHIVE_BUCKET": archive.bucket,
        "AWS_ENDPOINT_URL_S3": archive.endpoint_url,
        "AWS_REGION": AWS_TEST_ENV["AWS_REGION"],
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
    }


def run_cli(env: dict[str, str], *arguments: str) -> tuple[int, dict[str, Any] | None, str]:
    """(exit code, the summary line, all output) of ``python -m services reconcile ...``."""
    done = subprocess.run(
        [sys.executable, "-m", "services", "reconcile", *arguments],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summaries = []
    for line in done.stdout.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "level" not in document:
            summaries.append(document)
    assert len(summaries) <= 1, done.stdout
    return done.returncode, summaries[0] if summaries else None, done.stdout + done.stderr


def test_cli_end_to_end(tmp_path: Path, archive: ArchiverConfig, warehouse: dict[str, str]) -> None:
    batch = deliveries(stream_events())
    write_archive(archive, batch)
    load_warehouse(warehouse, batch)
    delete(warehouse, ["m-7", "m-8", "m-45"])
    env = cli_env(tmp_path, archive, warehouse)

    code, summary, output = run_cli(env, "--hour", "2026-11-27T10")
    assert code == 0, output
    assert summary is not None
    assert (summary["hour"], summary["archived"], summary["loaded"], summary["ok"]) == (
        "2026-11-27T10",
        40,
        2,
        True,
    )
    assert "m-45" not in rows(warehouse)  # hour 11 was not asked for

    code, summary, output = run_cli(env, "--hour", "2026-11-27T10")
    assert (code, summary and summary["loaded"]) == (0, 0), output

    expected = hours_ago(2)
    code, summary, output = run_cli(env, "--hours-ago", "2")
    assert code == 0, output
    # The clock may pass an hour boundary meanwhile: either hour is right.
    assert summary is not None and parse_hour(summary["hour"]) in {expected, hours_ago(2)}
    assert summary["objects"] == 0

    put(archive, f"{HOUR_10}/EVENTS-broken.json.gz", b"broken")
    code, summary, output = run_cli(env, "--hour", "2026-11-27T10")
    assert code == 1, output
    assert summary is not None and summary["ok"] is False
    assert summary["corrupt"][0]["key"].endswith("EVENTS-broken.json.gz")

    code, summary, output = run_cli({**env, "PGPORT": str(free_port())}, "--hour", "2026-11-27T11")
    assert (code, summary) == (1, None), output
    assert "reconciliation failed" in output

    code, _, output = run_cli({**env, "LIFTOFF_ARCHIVE_BUCKET": ""}, "--hour", "2026-11-27T10")
    assert code == 2 and "LIFTOFF_ARCHIVE_BUCKET is not set" in output
    code, _, output = run_cli(env, "--hour", "2026-11-27T10:30")
    assert code == 2 and "whole hour" in output


# --- the Lambda function (warehouse credentials from Secrets Manager) ----------------------------


@pytest.fixture
def lambda_env(
    archive: ArchiverConfig, warehouse: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The reconcile function's environment: the warehouse secret's ARN, PGHOST/PGPORT/
    PGDATABASE, PGSSLMODE (``require`` on AWS; the test server has no TLS) and the bucket."""
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"warehouse-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps(
            {"username": "postgres", "password": "from-the-secret", "dbname": "ignored"}
        ),
    )
    for name in ("PGUSER", "PGPASSWORD", "PGPASSWORD_FILE", "LIFTOFF_ARCHIVE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIFTOFF_WAREHOUSE_SECRET_ARN", secret["ARN"])
    for name in ("PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.setenv(name, warehouse[name])
    monkeypatch.setenv("PGSSLMODE", "disable")
    monkeypatch.setenv("LIFTOFF_ARCHIVE_BUCKET", archive.bucket)
    return warehouse


def test_lambda_handler(archive: ArchiverConfig, lambda_env: dict[str, str]) -> None:
    batch = deliveries(stream_events())
    write_archive(archive, batch)
    load_warehouse(lambda_env, batch)
    delete(lambda_env, ["m-10", "m-11"])

    summary = aws_lambda.reconcile_handler({"hour": "2026-11-27T10"}, None)
    assert (summary["archived"], summary["missing"], summary["loaded"]) == (40, 2, 2)
    assert summary["ok"] is True
    json.dumps(summary)  # the invocation's response payload
    assert aws_lambda.reconcile_handler({"hour": "2026-11-27T10"}, None)["loaded"] == 0

    empty = aws_lambda.reconcile_handler({"hoursAgo": 3}, None)
    assert (empty["objects"], empty["ok"]) == (0, True)

    put(archive, f"{HOUR_10}/EVENTS-broken.json.gz", b"broken")
    with pytest.raises(ReconcileIncomplete, match="EVENTS-broken"):
        aws_lambda.reconcile_handler({"hour": "2026-11-27T10"}, None)
    for bad in ({}, {"hoursAgo": "one"}, {"hour": "noon"}):
        with pytest.raises(ConfigError):
            aws_lambda.reconcile_handler(bad, None)


def test_lambda_handler_rejects_a_malformed_secret(
    archive: ArchiverConfig, lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"bad-{uuid.uuid4().hex[:8]}", SecretString="not json"
    )
    monkeypatch.setenv("LIFTOFF_WAREHOUSE_SECRET_ARN", secret["ARN"])
    with pytest.raises(ConfigError, match="must be JSON"):
        aws_lambda.reconcile_handler({"hour": "2026-11-27T10"}, None)
