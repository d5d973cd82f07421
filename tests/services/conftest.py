"""Real servers for the services tests: nats-server -js, moto and PostgreSQL, on free loopback
ports."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from services.stream.base import StreamSettings
from services.stream.jetstream import ensure_stream
from tests.servers import (
    AWS_TEST_ENV,
    Postgres,
    ServerProcess,
    moto_endpoint,
    moto_server,
    nats_server,
    nats_url,
    postgres_server,
)
from tests.services.stream.under_test import delete_jetstream


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One PostgreSQL server for the session (each test its own database: :func:`warehouse`)."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def warehouse(postgres: Postgres) -> dict[str, str]:
    """libpq's variables for a fresh database on the session's server."""
    return postgres.env(postgres.create_database(f"w_{uuid.uuid4().hex[:10]}"))


@pytest.fixture(scope="session")
def shared_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One JetStream server for tests that do not stop it; each test gets its own stream."""
    with nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[ServerProcess]:
    """A JetStream server of this test alone, free to stop, kill and restart."""
    with nats_server(tmp_path / "nats") as server:
        yield server


def unique_stream_url(server: ServerProcess, publish_timeout: float = 2.0) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:10]
    stream = f"T{suffix}"
    url = f"{nats_url(server)}/{stream}?subject_prefix=t{suffix}&publish_timeout={publish_timeout}"
    asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1, duplicate_window_seconds=60)))
    return url, stream


@pytest.fixture
def jetstream(shared_nats: ServerProcess) -> Iterator[tuple[str, str]]:
    """(stream URL, stream name) of a fresh stream with its own subject prefix."""
    url, stream = unique_stream_url(shared_nats)
    yield url, stream
    asyncio.run(delete_jetstream(nats_url(shared_nats), stream))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def aws_env(moto: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (in this process) at the moto server; returns the endpoint URL."""
    endpoint = moto_endpoint(moto)
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


@pytest.fixture
def kinesis(aws_env: str) -> tuple[Any, str]:
    """(boto3 Kinesis client, name of a fresh 2-shard stream on moto)."""
    client = boto3.client("kinesis")
    name = f"events-{uuid.uuid4().hex[:10]}"
    client.create_stream(StreamName=name, ShardCount=2)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    return client, name
