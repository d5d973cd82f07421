"""Create a client's database and role on the platform's Postgres, idempotently.

The platform runs this with the admin credentials so that each client (Airflow, the warehouse
loader) gets its own login role owning its own database, and never sees the admin password:
as a Kubernetes Job (`python -m services ensure-database`) and as a Lambda inside the VPC on
AWS (`services.aws_lambda.ensure_database_handler`).

Running it again changes nothing except the role's password, which it sets to the given one
(so a rotated client secret takes effect on the next run).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from services.contract import ConfigError, level_of
from services.observability import configure_logging
from services.postgres.contract import (
    DEFAULT_ADMIN_DATABASE,
    DEFAULT_PORT,
    DEFAULT_SSLMODE,
    GRANTABLE_ROLES,
    EnsureDatabaseFunctionSettings,
    EnsureDatabaseSettings,
    PostgresAccess,
    client_password_variables,
    missing,
    parse_ensure_database_function,
    password_variables,
    require_host,
    warehouse_secret_error,
)

log = logging.getLogger("liftoff.cli")

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


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


def password_from(inline: str | None, path: str | None, file_variable: str) -> str | None:
    """A password given inline, or the content of the file at ``path`` (Kubernetes mounts
    Secrets as files, so credentials never sit in the environment)."""
    if inline:
        return inline
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as error:
        raise ConfigError(f"{file_variable}={path!r} cannot be read: {error.strerror}") from None


def warehouse_connection(access: PostgresAccess[str], secret_arn: str | None) -> dict[str, Any]:
    """libpq's parameters for a warehouse client (the loader, the rebuild): the variables, the
    password read from its file, and on AWS the user and password (and, unless set, host, port
    and database) from the warehouse's secret. Nothing is connected."""
    params: dict[str, Any] = {
        key: value
        for key, value in (
            ("host", access.host),
            ("port", access.port),
            ("dbname", access.database),
            ("user", access.user),
            ("sslmode", access.sslmode),
        )
        if value
    }
    password = password_from(access.password, access.password_file, password_variables()[1])
    if password:
        params["password"] = password
    if secret_arn:
        params.update(_warehouse_secret(secret_arn, params))
    if "host" not in params:
        require_host(access, None)
    return params


def _warehouse_secret(arn: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        document = _read_secret(arn)
        found: dict[str, Any] = {"user": document["username"], "password": document["password"]}
    except (ValueError, KeyError, TypeError):
        raise warehouse_secret_error() from None
    for key in ("host", "port", "dbname"):
        if key not in params and document.get(key):
            found[key] = str(document[key])
    return found


def _required_password(inline: str | None, path: str | None, names: tuple[str, str]) -> str:
    password = password_from(inline, path, names[1])
    if password is None:
        raise missing([f"{names[0]} (or {names[1]})"])
    return password


def admin_of(access: PostgresAccess[str]) -> AdminConnection:
    """The admin connection from libpq's variables (``check_admin`` made sure of the rest)."""
    password = _required_password(access.password, access.password_file, password_variables())
    assert access.host is not None and access.user is not None
    return AdminConnection(
        host=access.host,
        port=int(access.port or DEFAULT_PORT),
        user=access.user,
        password=password,
        database=access.database or DEFAULT_ADMIN_DATABASE,
        sslmode=access.sslmode or DEFAULT_SSLMODE,
    )


def request_of(settings: EnsureDatabaseSettings[str]) -> DatabaseRequest:
    """The client's database, role, password and predefined roles."""
    password = _required_password(
        settings.password, settings.password_file, client_password_variables()
    )
    assert settings.database is not None and settings.role is not None
    try:
        return DatabaseRequest(
            database=settings.database,
            role=settings.role,
            password=password,
            member_of=settings.member_of or (),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _read_secret(arn: str) -> dict[str, Any]:
    import json

    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    document: dict[str, Any] = json.loads(secret["SecretString"])
    return document


def admin_from_secret(settings: EnsureDatabaseFunctionSettings[str]) -> AdminConnection:
    """The admin connection from the Secrets Manager secret ``LIFTOFF_ADMIN_SECRET_ARN`` names
    (JSON: ``host``, ``port``, ``username``, ``password``, ``dbname``), as RDS-managed secrets
    hold it."""
    assert settings.admin_secret_arn is not None
    admin_secret = _read_secret(settings.admin_secret_arn)
    return AdminConnection(
        host=admin_secret["host"],
        port=int(admin_secret["port"]),
        user=admin_secret["username"],
        password=admin_secret["password"],
        database=admin_secret["dbname"],
        sslmode="require",
    )


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, bool]:
    """AWS: run inside the VPC; admin and client credentials come from Secrets Manager.

    ``event`` is ``{"clientSecretArn": ...}``; the secret holds ``dbname``, ``username``,
    ``password``. The admin secret's ARN is in the function's environment
    (:class:`~services.postgres.contract.EnsureDatabaseFunctionSettings`).
    """
    admin = admin_from_secret(parse_ensure_database_function(os.environ))
    client_secret = _read_secret(event["clientSecretArn"])
    request = DatabaseRequest(
        database=client_secret["dbname"],
        role=client_secret["username"],
        password=client_secret["password"],
    )
    return ensure_database(admin, request)


def load(settings: EnsureDatabaseSettings[str]) -> tuple[AdminConnection, DatabaseRequest]:
    """The admin connection and the client's request, passwords read (nothing connected)."""
    return admin_of(settings.admin), request_of(settings)


def run(settings: EnsureDatabaseSettings[str]) -> int:
    """``python -m services ensure-database``."""
    configure_logging(level_of(settings.log_level))
    admin, request = load(settings)
    try:
        outcome = ensure_database(admin, request)
    except Exception as error:
        log.error("could not ensure the database", extra={"fields": {"error": repr(error)}})
        return 1
    log.info("database ensured", extra={"fields": outcome})
    return 0
