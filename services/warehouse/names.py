"""The warehouse's names (Segment's rules, see :mod:`services.warehouse.typed`): one registry read
by the typed layer that creates schemas, tables and columns, and by the stack validation that
refuses two sources sharing a schema (``components/consumers/settings.py``). Standard library
only: components/ imports it."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Final

NAME_LIMIT: Final = 63
"""PostgreSQL's identifier limit, in bytes (every name here is ASCII)."""
RESERVED_SCHEMAS: Final = frozenset({"public", "information_schema"})
"""Where the raw ``events`` table lives, and PostgreSQL's own (as are all ``pg_*``)."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_OTHER = re.compile(r"[^a-z0-9_]+")
_UNDERSCORES = re.compile(r"__+")


@lru_cache(maxsize=65536)
def words(text: str) -> str:
    """``text`` in snake case, without the limits (a part of a flattened name)."""
    snake = _OTHER.sub("_", _CAMEL.sub("_", text).lower())
    return _UNDERSCORES.sub("_", snake).strip("_")


def limited(name: str) -> str:
    """``name`` as a valid identifier: not empty, no leading digit, within :data:`NAME_LIMIT`
    (cut to 54 characters + ``_`` + 8 hex digits of its SHA-1, so long names stay apart)."""
    if not name:
        return "_"
    if name[0].isdigit():
        name = "_" + name
    if len(name) > NAME_LIMIT:
        name = f"{name[:54]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


@lru_cache(maxsize=65536)
def segment_name(text: str) -> str:
    """``text`` as a warehouse identifier (``Order Completed`` → ``order_completed``)."""
    return limited(words(text))


def source_schema(source: str) -> str:
    """The PostgreSQL schema of a source's typed tables: its name by :func:`segment_name`, with
    ``_`` before one PostgreSQL reserves or the raw table's (``public`` → ``_public``)."""
    name = segment_name(source)
    return "_" + name if name in RESERVED_SCHEMAS or name.startswith("pg_") else name
