"""Client databases on a real PostgreSQL with password authentication."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from services.contract import ConfigError
from services.postgres.contract import parse_ensure_database
from services.postgres.database import (
    AdminConnection,
    DatabaseRequest,
    ensure_database,
    load,
)
from tests.servers import LOOPBACK, REPO_ROOT, Postgres, postgres_server

ADMIN_PASSWORD = "admin-secret-7f3a"
pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with postgres_server(tmp_path_factory.mktemp("pg-auth"), password=ADMIN_PASSWORD) as postgres:
        yield postgres


def admin(server: Postgres) -> AdminConnection:
    return AdminConnection(
        host=LOOPBACK,
        port=server.port,
        user="postgres",
        password=ADMIN_PASSWORD,
        database="postgres",
        sslmode="disable",
    )


def login(server: Postgres, user: str, password: str, database: str) -> psycopg.Connection:
    return psycopg.connect(
        host=LOOPBACK,
        port=server.port,
        user=user,
        password=password,
        dbname=database,
        sslmode="disable",
        autocommit=True,
    )


def test_client_gets_a_role_and_a_database_it_owns(server: Postgres):
    result = ensure_database(admin(server), DatabaseRequest("warehouse", "warehouse", "pw-1"))
    assert result == {"role_created": True, "database_created": True}
    with login(server, "warehouse", "pw-1", "warehouse") as connection:
        connection.execute("CREATE TABLE events (id int)")
        owner = connection.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'warehouse'"
        ).fetchone()
        assert owner == ("warehouse",)
    with pytest.raises(psycopg.OperationalError):
        login(server, "warehouse", "wrong", "warehouse")


def test_running_again_changes_nothing_but_the_password(server: Postgres):
    ensure_database(admin(server), DatabaseRequest("airflow", "airflow", "first"))
    with login(server, "airflow", "first", "airflow") as connection:
        connection.execute("CREATE TABLE kept (id int)")
    again = ensure_database(admin(server), DatabaseRequest("airflow", "airflow", "rotated"))
    assert again == {"role_created": False, "database_created": False}
    with login(server, "airflow", "rotated", "airflow") as connection:
        assert connection.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    with pytest.raises(psycopg.OperationalError):
        login(server, "airflow", "first", "airflow")


def test_a_client_cannot_connect_to_another_clients_database(server: Postgres):
    ensure_database(admin(server), DatabaseRequest("alpha", "alpha", "a"))
    ensure_database(admin(server), DatabaseRequest("beta", "beta", "b"))
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        login(server, "alpha", "a", "beta")


def test_a_monitoring_client_reads_statistics_and_nothing_else(server: Postgres):
    """The exporter's role: pg_monitor (server statistics, settings), no other data."""
    ensure_database(admin(server), DatabaseRequest("alpha2", "alpha2", "a"))
    request = DatabaseRequest("monitoring", "monitoring", "m", member_of=("pg_monitor",))
    ensure_database(admin(server), request)
    with login(server, "monitoring", "m", "monitoring") as connection:
        (backends,) = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename IS NOT NULL"
        ).fetchone()
        assert backends >= 1
        assert connection.execute(
            "SELECT pg_has_role('monitoring', 'pg_monitor', 'member')"
        ).fetchone() == (True,)
        superuser = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'monitoring'")
        assert superuser.fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        login(server, "monitoring", "m", "alpha2")
    with pytest.raises(ValueError, match="member_of 'pg_write_all_data' is not allowed"):
        DatabaseRequest("m", "m", "m", member_of=("pg_write_all_data",))


def test_identifiers_are_checked_before_any_sql():
    with pytest.raises(ValueError, match="database 'x; DROP' is not allowed"):
        DatabaseRequest("x; DROP", "role", "pw")


def test_passwords_are_read_from_mounted_files(tmp_path):
    (tmp_path / "admin").write_text("from-file\n")
    (tmp_path / "client").write_text("client-file")
    env = {
        "PGHOST": "db",
        "PGUSER": "liftoff",
        "PGPASSWORD_FILE": str(tmp_path / "admin"),
        "LIFTOFF_DATABASE_NAME": "warehouse",
        "LIFTOFF_DATABASE_ROLE": "warehouse",
        "LIFTOFF_DATABASE_PASSWORD_FILE": str(tmp_path / "client"),
    }
    admin, request = load(parse_ensure_database(env))
    assert (admin.password, request.password) == ("from-file", "client-file")
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        parse_ensure_database({**env, "PGPASSWORD_FILE": ""})
    with pytest.raises(ConfigError, match="cannot be read"):
        load(parse_ensure_database({**env, "PGPASSWORD_FILE": str(tmp_path / "missing")}))


def test_cli_command_end_to_end(server: Postgres, tmp_path):
    (tmp_path / "admin").write_text(ADMIN_PASSWORD)
    (tmp_path / "client").write_text("cli-pw")
    env = {
        "PATH": "/usr/bin:/bin",
        "PGHOST": LOOPBACK,
        "PGPORT": str(server.port),
        "PGUSER": "postgres",
        "PGDATABASE": "postgres",
        "PGSSLMODE": "disable",
        "PGPASSWORD_FILE": str(tmp_path / "admin"),
        "LIFTOFF_DATABASE_NAME": "from_cli",
        "LIFTOFF_DATABASE_ROLE": "from_cli",
        "LIFTOFF_DATABASE_PASSWORD_FILE": str(tmp_path / "client"),
    }
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "services", "ensure-database"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    with login(server, "from_cli", "cli-pw", "from_cli") as connection:
        assert connection.execute("SELECT current_user").fetchone() == ("from_cli",)
