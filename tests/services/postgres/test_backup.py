"""Postgres backups: real pg_dump → `backup-upload` to moto S3 → pg_restore, and pruning."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest

from services.consumers.archiver.sink import ArchiverConfig
from services.postgres.backup import BackupConfig, prune, upload_dumps
from tests.servers import AWS_TEST_ENV, POSTGRES_BIN, REPO_ROOT, Postgres, postgres_server

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def bucket(aws_env: str) -> str:
    name = f"archive-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def pg_tool(postgres: Postgres, tool: str, *arguments: str) -> None:
    """Run a PostgreSQL client tool as the `postgres` OS user would in the backup pod."""
    subprocess.run(
        [
            str(POSTGRES_BIN / tool),
            "-h",
            "127.0.0.1",
            "-p",
            str(postgres.port),
            "-U",
            "postgres",
            *arguments,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_dump_upload_and_restore_round_trip(
    postgres: Postgres, bucket: str, aws_env: str, tmp_path
):
    source = postgres.create_database(f"src_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(postgres.dsn(source), autocommit=True) as connection:
        connection.execute("CREATE TABLE events (message_id text PRIMARY KEY, n int)")
        connection.execute(
            "INSERT INTO events SELECT 'm' || i, i FROM generate_series(1, 500) AS i"
        )
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    pg_tool(
        postgres, "pg_dump", "--format=custom", "-d", source, "-f", str(dumps / f"{source}.dump")
    )

    env = {
        **AWS_TEST_ENV,
        "PATH": os.environ["PATH"],
        "AWS_ENDPOINT_URL": aws_env,
        "LIFTOFF_ARCHIVE_BUCKET": bucket,
        "LIFTOFF_BACKUP_RETENTION_DAYS": "7",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services", "backup-upload", "--dir", str(dumps)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    (item,) = listing
    assert item["Key"].startswith(f"backups/postgres/{source}/{source}-")

    restored_file = tmp_path / "restored.dump"
    boto3.client("s3").download_file(bucket, item["Key"], str(restored_file))
    target = postgres.create_database(f"dst_{uuid.uuid4().hex[:8]}")
    pg_tool(postgres, "pg_restore", "--no-owner", "-d", target, str(restored_file))
    with psycopg.connect(postgres.dsn(target)) as connection:
        assert connection.execute("SELECT count(*), sum(n) FROM events").fetchone() == (500, 125250)


def test_pruning_deletes_only_dumps_past_the_retention(bucket: str, aws_env: str, tmp_path):
    cfg = BackupConfig(ArchiverConfig(bucket=bucket, endpoint_url=aws_env), retention_days=7)
    now = datetime(2026, 11, 27, 3, 17, tzinfo=UTC)
    client = boto3.client("s3")
    for days in (1, 6, 8, 30):
        client.put_object(
            Bucket=bucket, Key=cfg.key("warehouse", now - timedelta(days=days)), Body=b"x"
        )
    client.put_object(Bucket=bucket, Key="backups/postgres/notes.txt", Body=b"kept")
    (tmp_path / "warehouse.dump").write_bytes(b"today")
    written = upload_dumps(cfg, tmp_path, now)
    deleted = prune(cfg, now, keep=set(written))
    assert sorted(deleted) == sorted(cfg.key("warehouse", now - timedelta(days=d)) for d in (8, 30))
    remaining = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert remaining == {
        *written,
        cfg.key("warehouse", now - timedelta(days=1)),
        cfg.key("warehouse", now - timedelta(days=6)),
        "backups/postgres/notes.txt",
    }


def test_an_empty_dump_directory_is_an_error(tmp_path: Path, aws_env: str):
    cfg = BackupConfig(ArchiverConfig(bucket="unused", endpoint_url=aws_env), retention_days=7)
    with pytest.raises(Exception, match=r"no \.dump files"):
        upload_dumps(cfg, tmp_path, datetime.now(UTC))
