"""Segment's warehouse schema, derived from one event: the names, the typed rows, the column types.

Names (:mod:`~services.warehouse.names`): camelCase split with ``_`` (``productId`` →
``product_id``), lower case, every character outside ``[a-z0-9_]`` → ``_``, runs of ``_``
collapsed and trimmed at both ends, a leading digit prefixed with ``_``, and a name longer than
PostgreSQL's 63 bytes cut to 54 characters + ``_`` + 8 hex digits of its SHA-1 (so two long
names that share a prefix stay apart). Nested objects are flattened with ``_``
(``context.app.version`` → ``context_app_version``); arrays are stored as JSON text. A property
or trait whose name collides with one of its table's own columns (``id``, ``timestamp``,
``event``, any ``context_*``...) is prefixed with ``_``, as is a track event whose table name
collides with one of the source's own tables (``tracks``, ``users``, ``discards``...).

Rows (:func:`derive`): every call writes its call table (``tracks``, ``identifies``, ``pages``,
``screens``, ``groups``, ``aliases``) with the common columns; a track also writes its event's
table (properties as columns); a page/screen's properties and an identify/group's traits are
columns of their call table; an identify with a userId upserts ``users`` (traits as columns);
an identify with both ids, or an alias, maps an id to the user in ``identity_map``.

Types (:data:`COLUMN_TYPES`): a column is created with its declared type (a tracking plan), else
its fixed type (the common columns), else the type of the first non-null value seen
(:func:`infer`); a later value that does not fit (:func:`coerce`) is stored NULL and kept in
``discards`` by the writer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal

import msgspec

from services.warehouse.names import limited, segment_name, words

ColumnType = Literal["timestamp", "bigint", "double precision", "boolean", "text"]
COLUMN_TYPES: Final[tuple[ColumnType, ...]] = (
    "timestamp",
    "bigint",
    "double precision",
    "boolean",
    "text",
)
SQL_TYPES: Final[Mapping[str, str]] = {
    "timestamp": "timestamp with time zone",
    "bigint": "bigint",
    "double precision": "double precision",
    "boolean": "boolean",
    "text": "text",
}
"""How each column type is declared (timestamps keep their zone: ``timestamptz``)."""
COPY_TYPES: Final[Mapping[str, str]] = {
    "timestamp": "timestamptz",
    "bigint": "int8",
    "double precision": "float8",
    "boolean": "bool",
    "text": "text",
}
"""The binary COPY type of each column type."""
CATALOG_TYPES: Final[Mapping[str, str]] = {sql: name for name, sql in SQL_TYPES.items()}
"""PostgreSQL's ``format_type`` name → column type (any other type is foreign to the writer)."""

TableRows = list[tuple[str, dict[str, Any]]]
"""Typed rows: (table, {column: value}) in the order they were derived."""
Declared = Mapping[str, Mapping[str, Mapping[str, str]]]
"""Declared column types of every source: {source: {table: {column: type}}}."""

CALL_TABLES: Final[Mapping[str, str]] = {
    "track": "tracks",
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
RESERVED_TABLES: Final = frozenset({*CALL_TABLES.values(), "users", "identity_map", "discards"})

COMMON: Final[Mapping[str, ColumnType]] = {
    "id": "text",
    "received_at": "timestamp",
    "sent_at": "timestamp",
    "timestamp": "timestamp",
    "original_timestamp": "timestamp",
    "user_id": "text",
    "anonymous_id": "text",
}
FIXED: Final[Mapping[str, Mapping[str, ColumnType]]] = {
    "tracks": {**COMMON, "event": "text", "event_text": "text"},
    "identifies": COMMON,
    "pages": {**COMMON, "name": "text"},
    "screens": {**COMMON, "name": "text"},
    "groups": {**COMMON, "group_id": "text"},
    "aliases": {**COMMON, "previous_id": "text"},
    "users": {"id": "text", "received_at": "timestamp", "timestamp": "timestamp"},
    "identity_map": {
        "anonymous_id": "text",
        "user_id": "text",
        "timestamp": "timestamp",
        "received_at": "timestamp",
    },
}
"""Each table's own columns and their types; an event table has the tracks columns."""
KEYS: Final[Mapping[str, str]] = {"identity_map": "anonymous_id"}
"""Each table's primary key column (``id`` unless named here)."""

_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)
_encoder = msgspec.json.Encoder()


@lru_cache(maxsize=65536)
def _column(prefix: str, key: str, table: str, guarded: bool) -> str:
    name = limited(prefix + words(key))
    if guarded and (name in FIXED.get(table, FIXED["tracks"]) or name.startswith("context_")):
        return "_" + name  # a property or trait never takes one of the table's own columns
    return name


def event_table(event: str) -> str:
    """The table of the track event ``event`` (``Order Completed`` → ``order_completed``)."""
    name = segment_name(event)
    return "_" + name if name in RESERVED_TABLES else name


def flatten(
    value: Mapping[str, Any],
    table: str,
    row: dict[str, Any],
    prefix: str = "",
    guarded: bool = True,
) -> dict[str, Any]:
    """``value``'s leaves added to ``row`` as columns of ``table``: nested objects joined with
    ``_``, arrays as JSON text, nulls left out (a column is created by its first non-null
    value). Of two keys naming the same column, the first wins. ``guarded``: the value is a
    property or trait object (its names never take the table's own columns)."""
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, dict):
            flatten(item, table, row, words(f"{prefix}{key}") + "_", guarded)
            continue
        name = _column(prefix, key if isinstance(key, str) else str(key), table, guarded)
        if name not in row:
            row[name] = _encoder.encode(item).decode() if isinstance(item, list) else item
    return row


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else _encoder.encode(value).decode()


def _put(row: dict[str, Any], column: str, value: Any) -> Any:
    """Rows hold no nulls: an absent column is NULL, and a column is made by a value."""
    if value is not None:
        row[column] = value
    return value


def _common(event: Mapping[str, Any], table: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column, key in _COMMON_KEYS:
        _put(row, column, event.get(key))
    _put(row, "user_id", _text(event.get("userId")))
    _put(row, "anonymous_id", _text(event.get("anonymousId")))
    context = event.get("context")
    if isinstance(context, dict):
        flatten(context, table, row, "context_", guarded=False)
    return row


_COMMON_KEYS = (
    ("id", "messageId"),
    ("received_at", "receivedAt"),
    ("sent_at", "sentAt"),
    ("timestamp", "timestamp"),
    ("original_timestamp", "originalTimestamp"),
)


def _objects(event: Mapping[str, Any], key: str, table: str, row: dict[str, Any]) -> None:
    value = event.get(key)
    if isinstance(value, dict):
        flatten(value, table, row)


def derive(event: Mapping[str, Any]) -> TableRows:
    """The typed rows of one event (a contract event: messageId, type, receivedAt set), as
    (table, {column: JSON value}) without nulls; the writer coerces the values to the columns'
    types."""
    kind = event.get("type")
    table = CALL_TABLES.get(kind) if isinstance(kind, str) else None
    if table is None:
        return []
    row = _common(event, table)
    rows: TableRows = [(table, row)]
    if kind == "track":
        name = _text(event.get("event"))
        if name:
            row["event"], row["event_text"] = segment_name(name), name
            own = event_table(name)
            rows.append((own, row.copy()))
            _objects(event, "properties", own, rows[-1][1])
    elif kind in ("page", "screen"):
        _put(row, "name", _text(event.get("name")))
        _objects(event, "properties", table, row)
    elif kind == "identify":
        _objects(event, "traits", table, row)
        rows += _identity(row, event)
    elif kind == "group":
        _put(row, "group_id", _text(event.get("groupId")))
        _objects(event, "traits", table, row)
    else:  # alias: the previous id (anonymous or a user's) now belongs to userId
        previous = _put(row, "previous_id", _text(event.get("previousId")))
        if previous and row.get("user_id"):
            rows.append(("identity_map", _mapping(previous, row)))
    return rows


def _mapping(anonymous_id: str, row: Mapping[str, Any]) -> dict[str, Any]:
    mapping = {"anonymous_id": anonymous_id, "user_id": row["user_id"]}
    for column in ("timestamp", "received_at"):
        _put(mapping, column, row.get(column))
    return mapping


def _identity(row: Mapping[str, Any], event: Mapping[str, Any]) -> TableRows:
    user_id = row.get("user_id")
    if not user_id:
        return []
    user = {"id": user_id}
    for column in ("received_at", "timestamp"):
        _put(user, column, row.get(column))
    traits = event.get("traits")
    if isinstance(traits, dict):
        flatten(traits, "users", user)
    found: TableRows = [("users", user)]
    if row.get("anonymous_id"):
        found.append(("identity_map", _mapping(row["anonymous_id"], row)))
    return found


# --- types ---------------------------------------------------------------------------------


def parse_timestamp(text: object) -> datetime | None:
    """An ISO-8601 date or date-time as a timezone-aware datetime (no zone = UTC), or None."""
    if not isinstance(text, str) or not _ISO_8601.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def infer(value: Any) -> ColumnType:
    """The type of a column whose first non-null value is ``value``."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint" if -(2**63) <= value < 2**63 else "double precision"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, str) and _ISO_8601.fullmatch(value):
        return "timestamp"
    return "text"


def column_type(table: str, column: str, value: Any, declared: Mapping[str, str]) -> str:
    """The type a new column of ``table`` gets: declared, else fixed, else inferred."""
    if column in declared:
        return declared[column]
    fixed = FIXED.get(table, FIXED["tracks"])
    return fixed[column] if column in fixed else infer(value)


MISFIT: Final = object()
"""What :func:`coerce` returns for a value that does not fit its column."""


_parse_timestamp_cached = lru_cache(maxsize=8192)(lambda text: parse_timestamp(text))
"""A batch's rows share their timestamps (a track's two rows, events of the same instant)."""


def _timestamp(value: Any) -> Any:
    moment = _parse_timestamp_cached(value) if type(value) is str else None
    return MISFIT if moment is None else moment


def _bigint(value: Any) -> Any:
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    if type(value) is float and value.is_integer() and -(2.0**63) <= value < 2.0**63:
        return int(value)
    return MISFIT


def _double(value: Any) -> Any:
    return float(value) if type(value) in (int, float) else MISFIT


def _boolean(value: Any) -> Any:
    return value if type(value) is bool else MISFIT


def _as_text(value: Any) -> Any:
    return value if type(value) is str else _encoder.encode(value).decode()


def _foreign(value: Any) -> Any:
    return MISFIT


CONVERTERS: Final[Mapping[str, Callable[[Any], Any]]] = {
    "timestamp": _timestamp,
    "bigint": _bigint,
    "double precision": _double,
    "boolean": _boolean,
    "text": _as_text,
}
"""Each column type's coercion: a non-null JSON value → the column's value, or :data:`MISFIT`
(strict: the string ``"42"`` does not fit a bigint; anything fits text, as its JSON text)."""


def coerce(value: Any, kind: str) -> Any:
    """``value`` (not None) as a value of a ``kind`` column, or :data:`MISFIT`."""
    return CONVERTERS.get(kind, _foreign)(value)


def converter(kind: str) -> Callable[[Any], Any]:
    """:func:`coerce` for one column type (a type foreign to the writer fits nothing)."""
    return CONVERTERS.get(kind, _foreign)


def as_text(value: Any) -> str:
    """A value as the discards table keeps it."""
    return value if type(value) is str else _encoder.encode(value).decode()
