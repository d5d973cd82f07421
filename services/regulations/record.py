"""The record of regulation requests, in Postgres (schema ``liftoff_regulations``).

``requests``: one row per request — its kind (suppress, delete, unsuppress) and ids. A request
with the same kind and ids as one not yet finished *is* that one (``fingerprint``), so a second
run only finishes what the first left undone; once finished, the same request again is recorded
anew and runs again — every target is idempotent (suppressing or deleting twice has the effect
of once), and a later run must act: suppress after an unsuppress, delete rows that arrived
since.
``targets``: one row per (request, target) with its status: ``pending``, ``running``, ``done``
or ``failed`` (``reason`` says why). A worker killed mid-run leaves ``running``; the next run
of the same request (or any ``regulation`` run) picks up every target not ``done``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

SCHEMA = "liftoff_regulations"
KINDS = ("suppress", "delete", "unsuppress")
STATUSES = ("pending", "running", "done", "failed")
LOCK = "liftoff.regulations"

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.requests (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('suppress', 'delete', 'unsuppress')),
    fingerprint   text NOT NULL,
    user_ids      text[] NOT NULL,
    anonymous_ids text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS requests_fingerprint_idx ON {SCHEMA}.requests (fingerprint);
CREATE TABLE IF NOT EXISTS {SCHEMA}.targets (
    request_id bigint NOT NULL REFERENCES {SCHEMA}.requests (id),
    target     text NOT NULL,
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'running', 'done', 'failed')),
    reason     text,
    detail     jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, target)
);
"""


@dataclass(frozen=True)
class Request:
    id: int
    kind: str
    user_ids: tuple[str, ...]
    anonymous_ids: tuple[str, ...]


def fingerprint(kind: str, user_ids: Sequence[str], anonymous_ids: Sequence[str]) -> str:
    document = [kind, sorted(set(user_ids)), sorted(set(anonymous_ids))]
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()


def migrate(connection: psycopg.Connection) -> None:
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('liftoff.regulations.ddl'))")
        connection.execute(_DDL)


def lock(connection: psycopg.Connection) -> None:
    """One regulation run at a time (they rewrite the same archive objects and list)."""
    connection.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK,))


def submit(
    connection: psycopg.Connection,
    kind: str,
    user_ids: Sequence[str],
    anonymous_ids: Sequence[str],
    targets: Sequence[str],
) -> Request:
    """The unfinished request of the same kind and ids, or a new one, with its targets (call
    under :func:`lock`)."""
    users, anonymous = sorted(set(user_ids)), sorted(set(anonymous_ids))
    key = fingerprint(kind, users, anonymous)
    with connection.transaction():
        row = (
            connection.execute(
                f"SELECT r.id FROM {SCHEMA}.requests r WHERE r.fingerprint = %s AND EXISTS"
                f" (SELECT 1 FROM {SCHEMA}.targets t"
                "  WHERE t.request_id = r.id AND t.status <> 'done')"
                " ORDER BY r.id DESC LIMIT 1",
                (key,),
            ).fetchone()
            or connection.execute(
                f"INSERT INTO {SCHEMA}.requests (kind, fingerprint, user_ids, anonymous_ids)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (kind, key, users, anonymous),
            ).fetchone()
        )
        assert row is not None
        for target in targets:
            connection.execute(
                f"INSERT INTO {SCHEMA}.targets (request_id, target) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (row[0], target),
            )
    return Request(row[0], kind, tuple(users), tuple(anonymous))


def unfinished(connection: psycopg.Connection, request_id: int) -> list[str]:
    rows = connection.execute(
        f"SELECT target FROM {SCHEMA}.targets WHERE request_id = %s AND status <> 'done'"
        " ORDER BY target",
        (request_id,),
    ).fetchall()
    return [row[0] for row in rows]


def detail(connection: psycopg.Connection, request_id: int, target: str) -> dict[str, Any] | None:
    """What a target recorded last (the archive's progress while it is not done)."""
    row = connection.execute(
        f"SELECT detail FROM {SCHEMA}.targets WHERE request_id = %s AND target = %s",
        (request_id, target),
    ).fetchone()
    return row[0] if row else None


def mark(
    connection: psycopg.Connection,
    request_id: int,
    target: str,
    status: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    connection.execute(
        f"UPDATE {SCHEMA}.targets SET status = %s, reason = %s, detail = %s, updated_at = now()"
        " WHERE request_id = %s AND target = %s",
        (status, reason, json.dumps(detail) if detail is not None else None, request_id, target),
    )


def status(connection: psycopg.Connection, request_id: int | None = None) -> list[dict[str, Any]]:
    """Every request (or one) with its targets' statuses, newest first."""
    rows = connection.execute(
        f"SELECT r.id, r.kind, r.created_at, t.target, t.status, t.reason, t.detail"
        f" FROM {SCHEMA}.requests r JOIN {SCHEMA}.targets t ON t.request_id = r.id"
        " WHERE %s::bigint IS NULL OR r.id = %s ORDER BY r.id DESC, t.target",
        (request_id, request_id),
    ).fetchall()
    found: dict[int, dict[str, Any]] = {}
    for id_, kind, created, target, state, reason, detail in rows:
        request = found.setdefault(
            id_, {"id": id_, "kind": kind, "created_at": created.isoformat(), "targets": {}}
        )
        request["targets"][target] = {"status": state, "reason": reason, "detail": detail}
    return list(found.values())
