"""Create a client's database and role on the platform's Postgres, idempotently.

The platform runs this with the admin credentials so that each client (Airflow, the warehouse
loader) gets its own login role owning its own database, and never sees the admin password:
as a Kubernetes Job (`python -m services ensure-database`) and as a Lambda inside the VPC on
AWS (`services.aws_lambda.database_setup_handler`).

Running it again changes nothing except the role's password, which it sets to the given one
(so a rotated client secret takes effect on the next run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from services import env as runtime_env

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Predefined roles a client may be made a member of (read-only monitoring, nothing that writes).
GRANTABLE_ROLES = ("pg_monitor",)


@dataclass(frozen=True)
class AdminConnection:
    host: str
    port: int
    user: str
    password: str
    database: str
    sslmode: str = "prefer"

    def connect(self, database: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            sslmode=self.sslmode,
            connect_timeout=10,
            autocommit=True,
        )


@dataclass(frozen=True)
class DatabaseRequest:
    database: str
    role: str
    password: str
    member_of: tuple[str, ...] = ()
    """Predefined roles to grant the client (GRANTABLE_ROLES), e.g. pg_monitor for an exporter."""

    def __post_init__(self) -> None:
        for granted in self.member_of:
            if granted not in GRANTABLE_ROLES:
                raise ValueError(
                    f"member_of {granted!r} is not allowed: use {', '.join(GRANTABLE_ROLES)}"
                )
        for field_name in ("database", "role"):
            value = getattr(self, field_name)
            if not _IDENTIFIER.fullmatch(value):
                raise ValueError(
                    f"{field_name} {value!r} is not allowed: use lowercase letters, digits "
                    "and '_', starting with a letter or '_', at most 63 characters"
                )
        if not self.password:
            raise ValueError("password must not be empty")


def ensure_database(admin: AdminConnection, request: DatabaseRequest) -> dict[str, bool]:
    """Make sure `request.role` can log in with `request.password` and owns `request.database`.

    Returns what was created, e.g. `{"role_created": False, "database_created": True}`.
    """
    role = sql.Identifier(request.role)
    database = sql.Identifier(request.database)
    with admin.connect() as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (request.role,)
        ).fetchone()
        # Passwords cannot be bound as parameters in DDL; sql.Literal quotes them safely.
        if exists:
            connection.execute(
                sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    role, sql.Literal(request.password)
                )
            )
        else:
            connection.execute(
                sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                    role, sql.Literal(request.password)
                )
            )
        for granted in request.member_of:
            connection.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), role))
        # On RDS the admin is not a superuser: it must be a member of the role to hand it a
        # database. Granting membership to oneself is harmless where it is not needed.
        connection.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
        has_database = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (request.database,)
        ).fetchone()
        if not has_database:
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, role))
        else:
            connection.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
        # Only the owner (and the admin) may connect to the client's database.
        connection.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
    # PostgreSQL 15+ no longer lets every role create in `public`; make the owner own it.
    with admin.connect(request.database) as connection:
        connection.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(role))
    return {"role_created": not exists, "database_created": not has_database}


def secret_from_environment(env: Mapping[str, str], name: str) -> str | None:
    """`name` from the environment, or the content of the file named by `<name>_FILE`.

    Kubernetes mounts Secrets as files, so credentials never sit in the environment.
    """
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as error:
        raise ValueError(f"{name}_FILE={path!r} cannot be read: {error.strerror}") from None


def admin_from_environment(environ: Mapping[str, str] | None = None) -> AdminConnection:
    """Admin connection from libpq-style variables (PGHOST, PGPORT, PGUSER, PGPASSWORD or
    PGPASSWORD_FILE, PGDATABASE, PGSSLMODE)."""
    env = os.environ if environ is None else environ
    password = secret_from_environment(env, "PGPASSWORD")
    missing = [name for name in ("PGHOST", "PGUSER") if not env.get(name)]
    if password is None:
        missing.append("PGPASSWORD (or PGPASSWORD_FILE)")
    if missing:
        raise ValueError(f"missing environment variable(s): {', '.join(missing)}")
    return AdminConnection(
        host=env["PGHOST"],
        port=int(env.get("PGPORT", "5432")),
        user=env["PGUSER"],
        password=password,
        database=env.get("PGDATABASE", "postgres"),
        sslmode=env.get("PGSSLMODE", "prefer"),
    )


def request_from_environment(environ: Mapping[str, str] | None = None) -> DatabaseRequest:
    """The client's database, role and password from LIFTOFF_DATABASE_NAME, _ROLE and
    _PASSWORD (or _PASSWORD_FILE); LIFTOFF_DATABASE_MEMBER_OF: comma-separated roles to grant."""
    env = os.environ if environ is None else environ
    password = secret_from_environment(env, runtime_env.DATABASE_PASSWORD)
    missing = [
        name for name in (runtime_env.DATABASE_NAME, runtime_env.DATABASE_ROLE) if not env.get(name)
    ]
    if password is None:
        missing.append(f"{runtime_env.DATABASE_PASSWORD} (or {runtime_env.DATABASE_PASSWORD_FILE})")
    if missing:
        raise ValueError(f"missing environment variable(s): {', '.join(missing)}")
    return DatabaseRequest(
        database=env[runtime_env.DATABASE_NAME],
        role=env[runtime_env.DATABASE_ROLE],
        password=password,
        member_of=tuple(
            name for name in env.get(runtime_env.DATABASE_MEMBER_OF, "").split(",") if name.strip()
        ),
    )


def _read_secret(arn: str) -> dict:
    import json

    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    return json.loads(secret["SecretString"])


def admin_from_secret(env: Mapping[str, str]) -> AdminConnection:
    """The admin connection from the Secrets Manager secret named by `LIFTOFF_ADMIN_SECRET_ARN`
    (JSON: `host`, `port`, `username`, `password`, `dbname`), as RDS-managed secrets hold it."""
    arn = env.get(runtime_env.ADMIN_SECRET_ARN, "").strip()
    if not arn:
        raise ValueError(f"missing environment variable(s): {runtime_env.ADMIN_SECRET_ARN}")
    admin_secret = _read_secret(arn)
    return AdminConnection(
        host=admin_secret["host"],
        port=int(admin_secret["port"]),
        user=admin_secret["username"],
        password=admin_secret["password"],
        database=admin_secret["dbname"],
        sslmode="require",
    )


def lambda_handler(event: dict, context: object) -> dict:
    """AWS: run inside the VPC; admin and client credentials come from Secrets Manager.

    `event` is `{"clientSecretArn": ...}`; the secret holds `dbname`, `username`, `password`.
    The admin secret's ARN is in `LIFTOFF_ADMIN_SECRET_ARN`.
    """
    admin = admin_from_secret(os.environ)
    client_secret = _read_secret(event["clientSecretArn"])
    request = DatabaseRequest(
        database=client_secret["dbname"],
        role=client_secret["username"],
        password=client_secret["password"],
    )
    return ensure_database(admin, request)
