"""A PostgreSQL server for the warehouse tests (one per session, a database per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.servers import Postgres, postgres_server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def warehouse(postgres: Postgres) -> dict[str, str]:
    """libpq environment of a fresh database on the test server."""
    return postgres.env(postgres.create_database(f"w_{uuid.uuid4().hex[:10]}"))


def connect(env: dict[str, str], autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(
        host=env["PGHOST"],
        port=env["PGPORT"],
        user=env["PGUSER"],
        dbname=env["PGDATABASE"],
        autocommit=autocommit,
    )
