"""Declared column types (a tracking plan's types): ``{source: {table: {column: type}}}``.

One registry read by the stack validation (``liftoff:warehouse.columns``, in
``components/consumers/settings.py``) and by every process that writes typed tables (the loader,
the reconciliation, ``warehouse-rebuild``), which receive it as ``LIFTOFF_WAREHOUSE_COLUMNS``
(:func:`columns_variable`). A declared type overrides the type inferred from the first value
seen; a value that does not fit it goes to the source's ``discards`` table.

Names are the warehouse's own: the source as in ``liftoff:sources``, tables and columns as the
typed layer names them (Segment's rule: lowercase, ``[a-z0-9_]``, at most 63 bytes), so what is
declared is exactly what an analyst sees in ``\\d``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from services.contract import Json, variable

COLUMN_TYPES = ("bigint", "boolean", "double precision", "text", "timestamp")
"""The types a column may be declared with: those the typed layer infers."""

FIXED_COLUMNS = frozenset(
    {
        "id", "received_at", "sent_at", "timestamp", "original_timestamp", "user_id",
        "anonymous_id", "event", "event_text", "name", "group_id", "previous_id", "uuid_ts",
    }
)  # fmt: skip
"""The typed tables' own columns (:data:`services.warehouse.typed.FIXED`, plus ``uuid_ts``):
their types are fixed (keys, timestamps), so they cannot be declared."""
SOURCE_PATTERN = r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?"
IDENTIFIER_PATTERN = r"[a-z_][a-z0-9_]{0,62}"
IDENTIFIER_DESCRIBE = (
    "a warehouse name as the typed tables spell it: lowercase letters, digits and '_', not "
    "starting with a digit, at most 63 characters"
)
_VARIABLE = "LIFTOFF_WAREHOUSE_COLUMNS"

DeclaredColumns = Mapping[str, Mapping[str, Mapping[str, str]]]
"""source → table → column → type."""


def problems(document: Any) -> Iterator[tuple[tuple[str, ...], Any, str]]:
    """What is wrong in ``document``: (path of keys, value found, what is allowed)."""
    if not isinstance(document, dict):
        yield (), document, "an object of sources, each an object of tables"
        return
    for source, tables in document.items():
        if not isinstance(source, str) or not re.fullmatch(SOURCE_PATTERN, source):
            yield (), source, "source names (lowercase letters, digits, '-' and '_')"
            continue
        if not isinstance(tables, dict):
            yield (source,), tables, "an object of tables, each an object of columns"
            continue
        for table, columns in tables.items():
            yield from _table_problems((source,), table, columns)


def _table_problems(
    path: tuple[str, ...], table: Any, columns: Any
) -> Iterator[tuple[tuple[str, ...], Any, str]]:
    if not isinstance(table, str) or not re.fullmatch(IDENTIFIER_PATTERN, table):
        yield path, table, f"table names: {IDENTIFIER_DESCRIBE}"
        return
    if not isinstance(columns, dict) or not columns:
        yield (*path, table), columns, "an object of column name → type, at least one column"
        return
    for column, kind in columns.items():
        if not isinstance(column, str) or not re.fullmatch(IDENTIFIER_PATTERN, column):
            yield (*path, table), column, f"column names: {IDENTIFIER_DESCRIBE}"
        elif column in FIXED_COLUMNS:
            fixed = ", ".join(sorted(FIXED_COLUMNS))
            allowed = f"a property or trait column: the tables' own ({fixed}) have fixed types"
            yield (*path, table), column, allowed
        elif kind not in COLUMN_TYPES:
            yield (*path, table, column), kind, "one of " + ", ".join(COLUMN_TYPES)


def decode(document: Any) -> dict[str, dict[str, dict[str, str]]]:
    """``document`` as declared columns, sorted; ValueError naming the first problem."""
    for path, value, allowed in problems(document):
        where = ".".join(path) or "the document"
        raise ValueError(f"at {where}: got {value!r}; allowed: {allowed}")
    return {
        source: {table: dict(sorted(columns.items())) for table, columns in sorted(tables.items())}
        for source, tables in sorted(document.items())
    }


def encode(declared: DeclaredColumns) -> str:
    """The one canonical text of ``declared`` (sorted keys, no spaces)."""
    return json.dumps(declared, sort_keys=True, separators=(",", ":"))


def columns_variable() -> Any:
    """``LIFTOFF_WAREHOUSE_COLUMNS``: declared column types as JSON; default none declared."""
    return variable(_VARIABLE, Json("warehouse-columns", decode, encode))


def of_source(declared: DeclaredColumns | None, source: str) -> Mapping[str, Mapping[str, str]]:
    """The tables and column types declared for ``source`` (empty when none)."""
    return (declared or {}).get(source, {})
