"""The runtime contracts of the platform's Postgres and of every client of it.

- :class:`PostgresAccess` — libpq's variables (``PGHOST``, ``PGPORT``, ``PGDATABASE``,
  ``PGUSER``, ``PGPASSWORD`` or ``PGPASSWORD_FILE``, ``PGSSLMODE``): how the loader, the
  reconciliation, ``ensure-database`` and the backups' ``pg_dump`` reach a database.
- :func:`warehouse_secret_arn_variable` — ``LIFTOFF_WAREHOUSE_SECRET_ARN`` (AWS): the client
  database's Secrets Manager secret (``username``, ``password``, ``dbname``, ``host``,
  ``port``), read at cold start.
- :class:`EnsureDatabaseSettings` — ``python -m services ensure-database`` (a Kubernetes Job):
  the admin connection and ``LIFTOFF_DATABASE_NAME`` / ``_ROLE`` / ``_PASSWORD`` (or
  ``_PASSWORD_FILE``) / ``_MEMBER_OF``; :class:`EnsureDatabaseFunctionSettings` — its Lambda
  (``LIFTOFF_ADMIN_SECRET_ARN``; the client's secret comes in the invocation).
- :class:`BackupSettings` — ``python -m services backup-upload``: the archive and
  ``LIFTOFF_BACKUP_RETENTION_DAYS``.
- :class:`PostgresServerSettings` — the official ``postgres`` image the Kubernetes target runs
  (``POSTGRES_USER``, ``POSTGRES_DB``, ``POSTGRES_PASSWORD_FILE``, ``PGDATA``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from services.archive.contract import ArchiveAccess, bucket_of
from services.contract import (
    ConfigError,
    Integer,
    Names,
    Text,
    V,
    check_pattern,
    group,
    log_level_variable,
    process,
    secret_arn,
    variable,
)

_HOST = "PGHOST"
_PORT = "PGPORT"
_DATABASE = "PGDATABASE"
_USER = "PGUSER"
_PASSWORD = "PGPASSWORD"
_PASSWORD_FILE = "PGPASSWORD_FILE"
_SSLMODE = "PGSSLMODE"
_WAREHOUSE_SECRET_ARN = "LIFTOFF_WAREHOUSE_SECRET_ARN"
_NAME = "LIFTOFF_DATABASE_NAME"
_ROLE = "LIFTOFF_DATABASE_ROLE"
_CLIENT_PASSWORD = "LIFTOFF_DATABASE_PASSWORD"
_CLIENT_PASSWORD_FILE = "LIFTOFF_DATABASE_PASSWORD_FILE"
_MEMBER_OF = "LIFTOFF_DATABASE_MEMBER_OF"
_ADMIN_SECRET_ARN = "LIFTOFF_ADMIN_SECRET_ARN"
_RETENTION_DAYS = "LIFTOFF_BACKUP_RETENTION_DAYS"
_SERVER_USER = "POSTGRES_USER"
_SERVER_DATABASE = "POSTGRES_DB"
_SERVER_PASSWORD_FILE = "POSTGRES_PASSWORD_FILE"
_DATA = "PGDATA"

DEFAULT_PORT = 5432
DEFAULT_ADMIN_DATABASE = "postgres"
DEFAULT_SSLMODE = "prefer"
DEFAULT_RETENTION_DAYS = 7
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
GRANTABLE_ROLES = ("pg_monitor",)
"""Predefined roles a client may be made a member of (read-only monitoring, nothing that
writes)."""

_IDENTIFIER = check_pattern(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}", "is not a Postgres name")


def _check_port(raw: str) -> str | None:
    return None if raw.isdigit() and 1 <= int(raw) <= 65535 else "is not a port (1-65535)"


def _check_sslmode(raw: str) -> str | None:
    return None if raw in SSLMODES else f"must be one of {', '.join(SSLMODES)}"


def _check_grantable(raw: str) -> str | None:
    return None if raw in GRANTABLE_ROLES else f"is not allowed: use {', '.join(GRANTABLE_ROLES)}"


@dataclass(frozen=True)
class PostgresAccess(Generic[V]):
    """libpq's connection variables."""

    host: V | None = variable(_HOST, Text("host"))
    port: V | None = variable(_PORT, Text("port", _check_port))
    """Default :data:`DEFAULT_PORT`."""
    database: V | None = variable(_DATABASE, Text("identifier", _IDENTIFIER))
    user: V | None = variable(_USER, Text("identifier", _IDENTIFIER))
    password: str | None = variable(_PASSWORD, Text("secret", secret=True))
    """Inline (a developer's shell); the platform mounts ``password_file`` instead."""
    password_file: V | None = variable(_PASSWORD_FILE, Text("path"))
    sslmode: str | None = variable(_SSLMODE, Text("sslmode", _check_sslmode))
    """Default :data:`DEFAULT_SSLMODE`."""


def warehouse_secret_arn_variable() -> Any:
    return variable(_WAREHOUSE_SECRET_ARN, secret_arn())


def missing(names: list[str]) -> ConfigError:
    return ConfigError(f"missing environment variable(s): {', '.join(names)}")


def check_admin(admin: PostgresAccess[str]) -> None:
    """The admin connection names a host, a user and a password (inline or as a file)."""
    absent = [name for name, value in ((_HOST, admin.host), (_USER, admin.user)) if not value]
    if admin.password is None and admin.password_file is None:
        absent.append(f"{_PASSWORD} (or {_PASSWORD_FILE})")
    if absent:
        raise missing(absent)


def require_host(access: PostgresAccess[str], secret_arn: str | None) -> None:
    """A client needs a host, unless its secret (on AWS) names one."""
    if access.host is None and secret_arn is None:
        raise ConfigError(f"{_HOST} is not set (the warehouse Postgres host)")


def password_variables() -> tuple[str, str]:
    """The libpq password variables, as errors name them (inline, file)."""
    return _PASSWORD, _PASSWORD_FILE


def warehouse_secret_error() -> ConfigError:
    return ConfigError(
        f"the secret {_WAREHOUSE_SECRET_ARN} must be JSON with username, password, dbname, "
        "host, port"
    )


# --- ensure-database -----------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureDatabaseSettings(Generic[V]):
    admin: PostgresAccess[V] = group(PostgresAccess)
    database: str | None = variable(_NAME, Text("identifier", _IDENTIFIER))
    role: str | None = variable(_ROLE, Text("identifier", _IDENTIFIER))
    password: str | None = variable(_CLIENT_PASSWORD, Text("secret", secret=True))
    password_file: V | None = variable(_CLIENT_PASSWORD_FILE, Text("path"))
    member_of: tuple[str, ...] | None = variable(_MEMBER_OF, Names("role", _check_grantable))
    log_level: str | None = log_level_variable()


def _check_ensure_database(settings: EnsureDatabaseSettings[str]) -> None:
    check_admin(settings.admin)
    absent = [
        name for name, value in ((_NAME, settings.database), (_ROLE, settings.role)) if not value
    ]
    if settings.password is None and settings.password_file is None:
        absent.append(f"{_CLIENT_PASSWORD} (or {_CLIENT_PASSWORD_FILE})")
    if absent:
        raise missing(absent)


def client_password_variables() -> tuple[str, str]:
    return _CLIENT_PASSWORD, _CLIENT_PASSWORD_FILE


@dataclass(frozen=True)
class EnsureDatabaseFunctionSettings(Generic[V]):
    admin_secret_arn: V | None = variable(_ADMIN_SECRET_ARN, secret_arn())


def _check_ensure_database_function(settings: EnsureDatabaseFunctionSettings[str]) -> None:
    if settings.admin_secret_arn is None:
        raise missing([_ADMIN_SECRET_ARN])


# --- backup-upload -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSettings(Generic[V]):
    archive: ArchiveAccess[V] = group(ArchiveAccess)
    retention_days: int | None = variable(_RETENTION_DAYS, Integer(1, 3650))
    """Default :data:`DEFAULT_RETENTION_DAYS`."""
    log_level: str | None = log_level_variable()


def _check_backup(settings: BackupSettings[str]) -> None:
    bucket_of(settings.archive)


# --- the server (the official postgres image) ---------------------------------------------


@dataclass(frozen=True)
class PostgresServerSettings(Generic[V]):
    user: str | None = variable(_SERVER_USER, Text("identifier", _IDENTIFIER))
    database: str | None = variable(_SERVER_DATABASE, Text("identifier", _IDENTIFIER))
    password_file: str | None = variable(_SERVER_PASSWORD_FILE, Text("path"))
    data: str | None = variable(_DATA, Text("path"))


ENSURE_DATABASE = process(EnsureDatabaseSettings, _check_ensure_database)
ENSURE_DATABASE_FUNCTION = process(EnsureDatabaseFunctionSettings, _check_ensure_database_function)
BACKUP_UPLOAD = process(BackupSettings, _check_backup)
PG_DUMP = process(PostgresAccess)
"""The backups' ``pg_dump`` (an init container of the server's image): libpq's variables."""
SERVER = process(PostgresServerSettings)
parse_ensure_database = ENSURE_DATABASE.parse
parse_ensure_database_function = ENSURE_DATABASE_FUNCTION.parse
