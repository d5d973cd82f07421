"""``python -m services warehouse-rebuild --source S [--table T ...] [--from raw|archive]``, and
the same on AWS through the reconcile function (``{"rebuild": {"source": ..., "tables": [...],
"from": "raw"}}``, :func:`handle`). Configuration: :mod:`services.warehouse.contract`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from services.archive.store import ArchiveLocation, s3_client
from services.contract import ConfigError, level_of
from services.observability import configure_logging
from services.postgres.database import warehouse_connection
from services.warehouse.columns import IDENTIFIER_PATTERN, SOURCE_PATTERN, of_source
from services.warehouse.contract import RebuildSettings
from services.warehouse.rebuild import Summary, archive_chunks, rebuild

log = logging.getLogger("liftoff.warehouse.rebuild")

ORIGINS = ("raw", "archive")


def connection_params(settings: RebuildSettings[str]) -> dict[str, Any]:
    """libpq's parameters, the loader's way (``warehouse_connection``)."""
    return warehouse_connection(settings.warehouse, settings.warehouse_secret_arn)


def load(settings: RebuildSettings[str]) -> dict[str, Any]:
    """What a run connects with (the password read; nothing connected)."""
    return connection_params(settings)


def rebuild_source(
    settings: RebuildSettings[str],
    source: str,
    tables: Sequence[str] | None = None,
    origin: str = "raw",
) -> Summary:
    """Rebuild ``source``'s typed tables (``tables``, default all) from ``origin``."""
    if origin not in ORIGINS:
        raise ConfigError(f"--from {origin!r}: one of {', '.join(ORIGINS)}")
    if not re.fullmatch(SOURCE_PATTERN, source):
        raise ConfigError(
            f"--source {source!r}: a source of liftoff:sources (lowercase letters, digits,"
            " '-' or '_')"
        )
    for table in tables or ():
        if not re.fullmatch(IDENTIFIER_PATTERN, table):
            raise ConfigError(
                f"--table {table!r}: a typed table as the warehouse names it (lowercase letters,"
                " digits and '_', at most 63), e.g. order_completed"
            )
    params = connection_params(settings)
    declared = of_source(settings.columns, source)
    with psycopg.connect(**params, autocommit=True) as connection:
        if origin == "archive":
            location = ArchiveLocation.of(settings.archive)
            chunks = archive_chunks(s3_client(location), location, source)
            return rebuild(connection, source, chunks, tables=tables, declared=declared)
        with psycopg.connect(**params) as reader:
            return rebuild(connection, source, tables=tables, declared=declared, reader=reader)


def run(
    settings: RebuildSettings[str],
    source: str,
    tables: Sequence[str] | None = None,
    origin: str = "raw",
) -> int:
    """``python -m services warehouse-rebuild``: prints the summary as one JSON line; exit 0
    when the tables were swapped in, 1 when the rebuild failed (nothing changed)."""
    configure_logging(level_of(settings.log_level))
    tables = [table for table in tables or () if table.strip()] or None  # "": every table
    try:
        summary = rebuild_source(settings, source, tables, origin)
    except ConfigError:
        raise
    except Exception as error:
        log.error("rebuild failed; nothing changed", extra={"fields": {"error": repr(error)}})
        return 1
    print(json.dumps(summary.as_dict(), sort_keys=True), flush=True)
    return 0


def handle(request: Mapping[str, Any], settings: RebuildSettings[str]) -> dict[str, Any]:
    """A Lambda invocation's ``rebuild`` object: ``{"source": S, "tables": [T...], "from":
    "raw"}``; the summary, or raise (the invocation and the task waiting on it fail)."""
    configure_logging(level_of(settings.log_level))
    source = request.get("source")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"rebuild.source {source!r}: the source to rebuild")
    tables = request.get("tables") or None
    if tables is not None and not (
        isinstance(tables, list) and all(isinstance(t, str) for t in tables)
    ):
        raise ConfigError(f"rebuild.tables {tables!r}: a list of table names")
    origin = str(request.get("from") or "raw")
    return rebuild_source(settings, source, tables, origin).as_dict()
