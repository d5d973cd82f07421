"""Deleting users' events: from the warehouse and from the archive.

Warehouse: every row whose ``user_id`` or ``anonymous_id`` (or an alias's ``previous_id``) is
one of the ids, in the raw ``events`` table and in every other table of the database that has
such a column (the typed tables of each source's schema, whatever their names: found in
``information_schema``), except the regulation record itself; in each typed schema (one with the
typed layer's ``discards`` table) also the ``users`` row of each userId (keyed by ``id``, as
Segment's) and the discards of the deleted events (their values may be personal data). One
transaction.

Archive: every object under the prefix is read; an object holding none of the ids is left as it
is (byte-identical, not written); one that holds some is written back under the same key
without those lines, gzip with a zero mtime as the archiver writes it, and conditionally on the
ETag read (a concurrent archiver write makes it read again). Keys go in order, a chunk at a
time: after each chunk the caller may record the last key done (``checkpoint``), and a
``deadline`` stops the scan after the chunk in hand with ``resume_after`` set — the next run
starts after that key (S3 ``StartAfter``). Without a checkpoint, re-running after a crash skips
the objects already rewritten (they no longer hold the ids) but reads them again.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from services.regulations.record import SCHEMA

log = logging.getLogger("liftoff.regulations")

ID_COLUMNS = ("user_id", "anonymous_id", "previous_id")
MAX_CONFLICT_RETRIES = 5
ARCHIVE_CONCURRENCY = 4
ARCHIVE_CHUNK = 64
"""Objects scanned between two checkpoints (and deadline checks)."""


def _tables_with_ids(connection: psycopg.Connection) -> dict[tuple[str, str], set[str]]:
    rows = connection.execute(
        "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE' AND c.column_name = ANY(%s)"
        " AND c.table_schema NOT IN ('pg_catalog', 'information_schema', %s)"
        " AND c.table_schema NOT LIKE 'pg_temp%%'",
        (list(ID_COLUMNS), SCHEMA),
    ).fetchall()
    found: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in rows:
        found.setdefault((schema, table), set()).add(column)
    return found


def delete_from_warehouse(
    connection: psycopg.Connection, user_ids: Sequence[str], anonymous_ids: Sequence[str]
) -> dict[str, int]:
    """Rows deleted per ``schema.table`` (tables with none left out)."""
    wanted = {
        "user_id": list(user_ids),
        "anonymous_id": list(anonymous_ids),
        "previous_id": [*user_ids, *anonymous_ids],  # an alias's earlier id, either kind
    }
    deleted: dict[str, int] = {}
    with connection.transaction():
        # First what is found through the raw rows (the discards' messageIds), then the rows.
        for schema in _typed_schemas(connection):
            _count(deleted, schema, "discards", _delete_discards(connection, schema, wanted))
            users = sql.SQL("DELETE FROM {}.users WHERE id = ANY(%s)").format(
                sql.Identifier(schema)
            )
            _count(
                deleted, schema, "users", connection.execute(users, (wanted["user_id"],)).rowcount
            )
        for (schema, table), columns in sorted(_tables_with_ids(connection).items()):
            conditions = [
                sql.SQL("{} = ANY(%s)").format(sql.Identifier(column))
                for column in sorted(columns)
                if wanted[column]
            ]
            if not conditions:
                continue
            statement = sql.SQL("DELETE FROM {}.{} WHERE {}").format(
                sql.Identifier(schema), sql.Identifier(table), sql.SQL(" OR ").join(conditions)
            )
            values = [wanted[column] for column in sorted(columns) if wanted[column]]
            _count(deleted, schema, table, connection.execute(statement, values).rowcount)
    return deleted


def _count(deleted: dict[str, int], schema: str, table: str, rows: int) -> None:
    if rows > 0:
        deleted[f"{schema}.{table}"] = deleted.get(f"{schema}.{table}", 0) + rows


def _typed_schemas(connection: psycopg.Connection) -> list[str]:
    """Schemas the typed layer writes: a ``discards`` and a ``users`` table with its columns."""
    rows = connection.execute(
        "SELECT d.table_schema FROM information_schema.columns d"
        " JOIN information_schema.columns u ON u.table_schema = d.table_schema"
        " WHERE d.table_name = 'discards' AND d.column_name = 'message_id'"
        " AND u.table_name = 'users' AND u.column_name = 'id' ORDER BY 1"
    ).fetchall()
    return [schema for (schema,) in rows]


def _delete_discards(
    connection: psycopg.Connection, schema: str, wanted: dict[str, list[str]]
) -> int:
    """``schema``'s discards of the raw events of the ids (before those rows go)."""
    if connection.execute("SELECT to_regclass('events')").fetchone() == (None,):
        return 0
    statement = sql.SQL(
        "DELETE FROM {}.discards d USING events e WHERE d.message_id = e.message_id"
        " AND (e.user_id = ANY(%s) OR e.anonymous_id = ANY(%s))"
    ).format(sql.Identifier(schema))
    return connection.execute(statement, (wanted["user_id"], wanted["anonymous_id"])).rowcount


class _Ids(msgspec.Struct):
    userId: Any = None
    anonymousId: Any = None


_ids = msgspec.json.Decoder(_Ids)


def _as_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


@dataclass
class ArchiveDeletion:
    objects_read: int = 0
    objects_rewritten: int = 0
    bytes_rewritten: int = 0
    lines_removed: int = 0
    resume_after: str | None = None
    """The last key scanned when the scan stopped at its deadline (None: it finished)."""


def keep_line(line: bytes, user_ids: frozenset[str], anonymous_ids: frozenset[str]) -> bool:
    ids = _ids.decode(line)
    return _as_text(ids.userId) not in user_ids and _as_text(ids.anonymousId) not in anonymous_ids


def needles(user_ids: Sequence[str], anonymous_ids: Sequence[str]) -> tuple[bytes, ...]:
    """Byte strings one of which every archived line of the ids contains: each id as a JSON
    string (the archiver writes compact JSON with msgspec, non-ASCII unescaped), and as a bare
    number when it is one (a numeric userId is stored as its JSON text). An object without any
    is not decoded line by line."""
    found = set()
    for identifier in (*user_ids, *anonymous_ids):
        found.add(msgspec.json.encode(identifier))
        try:
            number = msgspec.json.decode(identifier.encode())
        except msgspec.DecodeError:
            continue
        if isinstance(number, int | float) and not isinstance(number, bool):
            found.add(identifier.encode())
    return tuple(sorted(found))


def _keys(client: Any, bucket: str, prefix: str, start_after: str | None) -> Iterator[str]:
    paginator = client.get_paginator("list_objects_v2")
    after = {"StartAfter": start_after} if start_after else {}
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, **after):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".json.gz"):
                yield item["Key"]


def _clean_object(
    client: Any,
    bucket: str,
    key: str,
    ids: tuple[frozenset[str], frozenset[str], tuple[bytes, ...]],
) -> tuple[int, int]:
    """(bytes written, lines removed) for one object: (0, 0) when it holds none of the ids."""
    from services.consumers.archiver.sink import encode_object

    users, anonymous, look_for = ids
    for _ in range(MAX_CONFLICT_RETRIES):
        response = client.get_object(Bucket=bucket, Key=key)
        text = gzip.decompress(response["Body"].read())
        if not any(needle in text for needle in look_for):
            return 0, 0
        lines = [line for line in text.split(b"\n") if line]
        kept = [line for line in lines if keep_line(line, users, anonymous)]
        if len(kept) == len(lines):
            return 0, 0
        body = encode_object(kept)
        try:
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="application/gzip",
                IfMatch=response["ETag"],
            )
        except client.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                continue  # the archiver wrote meanwhile: read it again
            raise
        return len(body), len(lines) - len(kept)
    raise RuntimeError(f"{key}: still conflicting after {MAX_CONFLICT_RETRIES} attempts")


def delete_from_archive(
    client: Any,
    bucket: str,
    prefix: str,
    user_ids: Sequence[str],
    anonymous_ids: Sequence[str],
    concurrency: int = ARCHIVE_CONCURRENCY,
    *,
    start_after: str | None = None,
    deadline: float | None = None,
    checkpoint: Callable[[ArchiveDeletion, str], None] | None = None,
    chunk: int = ARCHIVE_CHUNK,
) -> ArchiveDeletion:
    """Every object under ``prefix`` (after ``start_after``) scanned, ``concurrency`` at a time
    (gzip and S3 wait outside the GIL), those holding the ids rewritten without their lines;
    ``checkpoint(result so far, last key)`` after each chunk of keys; past ``deadline``
    (``time.monotonic()``) the scan stops after the chunk in hand, at least one chunk done, with
    ``resume_after`` the last key scanned."""
    from concurrent.futures import ThreadPoolExecutor

    ids = (frozenset(user_ids), frozenset(anonymous_ids), needles(user_ids, anonymous_ids))
    result = ArchiveDeletion()
    keys = _keys(client, bucket, prefix, start_after)
    with ThreadPoolExecutor(concurrency, thread_name_prefix="regulation-archive") as pool:
        while batch := list(itertools.islice(keys, chunk)):
            cleaned = pool.map(lambda k: _clean_object(client, bucket, k, ids), batch)
            for written, removed in cleaned:
                result.objects_read += 1
                if removed:
                    result.objects_rewritten += 1
                    result.bytes_rewritten += written
                    result.lines_removed += removed
            if checkpoint is not None:
                checkpoint(result, batch[-1])
            if deadline is not None and time.monotonic() >= deadline and len(batch) == chunk:
                result.resume_after = batch[-1]
                break
    return result
