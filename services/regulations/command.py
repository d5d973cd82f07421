"""``python -m services regulation {suppress,delete,unsuppress,status}``.

A request is recorded first (:mod:`services.regulations.record`), then each of its targets not
yet done is run in turn, its status written before and after: ``suppression`` (the list, for
suppress and unsuppress), ``warehouse``, ``archive`` (when ``LIFTOFF_ARCHIVE_BUCKET`` is set),
``dead-letters`` (``LIFTOFF_DEAD_LETTER_URL``, default on JetStream the stream's ``/DEADLETTER``)
``quarantine`` (``LIFTOFF_QUARANTINE_URL``, when set) and ``destination:<name>`` (each
deletion API, :mod:`services.regulations.destinations`) for delete. A failed target is
recorded with its reason and the others still run; the exit status is 1 when any is not done.
Running the same request again finishes what is left. Runs are serialized by a Postgres lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import psycopg

from services.archive.store import ArchiveLocation, s3_client
from services.consumers.loader.sink import LoaderConfig
from services.observability import configure_logging
from services.regulations import record
from services.regulations.contract import RegulationSettings
from services.regulations.dead_letters import delete_from_dead_letters
from services.regulations.deletion import delete_from_archive, delete_from_warehouse
from services.regulations.destinations import request_deletion
from services.stream.address import dead_letter_url_of
from services.suppression.contract import require_suppression
from services.suppression.lists import entries, open_store

log = logging.getLogger("liftoff.regulations")

DESTINATION = "destination:"
ACTIONS = ("suppress", "delete", "unsuppress", "status")


def dead_letter_url(settings: RegulationSettings[str]) -> str | None:
    if settings.dead_letter_url is not None:
        return settings.dead_letter_url
    stream = settings.stream.url
    return dead_letter_url_of(stream) if stream and stream.startswith("nats://") else None


def targets_of(kind: str, settings: RegulationSettings[str]) -> list[str]:
    if kind != "delete":
        return ["suppression"]
    return (
        ["warehouse"]
        + (["archive"] if settings.archive.bucket else [])
        + (["dead-letters"] if dead_letter_url(settings) else [])
        + (["quarantine"] if settings.quarantine_url else [])
        + [f"{DESTINATION}{d.name}" for d in settings.destinations or ()]
    )


def _destination(
    settings: RegulationSettings[str], request: record.Request, target: str
) -> dict[str, Any]:
    name = target.removeprefix(DESTINATION)
    (destination,) = (d for d in settings.destinations or () if d.name == name)
    with open(settings.secrets_file or "", encoding="utf-8") as file:
        secrets = json.load(file)
    return request_deletion(
        destination, secrets.get(name) or {}, request.id, request.user_ids, request.anonymous_ids
    )


def connect(settings: RegulationSettings[str]) -> psycopg.Connection:
    connection = psycopg.connect(
        connect_timeout=5,
        application_name="liftoff-regulation",
        autocommit=True,
        **LoaderConfig.load(settings.warehouse).connection,
    )
    record.migrate(connection)
    return connection


def _suppression(settings: RegulationSettings[str], request: record.Request) -> dict[str, Any]:
    url, key = require_suppression(settings.suppression)
    listed = entries(key, request.user_ids, request.anonymous_ids)

    async def change() -> None:
        store = open_store(url)
        try:
            if request.kind == "suppress":
                await store.add(listed)
            else:
                await store.remove(listed)
        finally:
            await store.close()

    asyncio.run(change())
    return {"entries": len(listed)}


def _warehouse(connection: psycopg.Connection, request: record.Request) -> dict[str, Any]:
    return {"rows": delete_from_warehouse(connection, request.user_ids, request.anonymous_ids)}


def _archive(settings: RegulationSettings[str], request: record.Request) -> dict[str, Any]:
    location = ArchiveLocation.of(settings.archive)
    result = delete_from_archive(
        s3_client(location),
        location.bucket,
        location.prefix,
        request.user_ids,
        request.anonymous_ids,
    )
    return asdict(result)


def perform(
    connection: psycopg.Connection,
    settings: RegulationSettings[str],
    request: record.Request,
    after_target: Callable[[str], None] = lambda target: None,
) -> bool:
    """Run the request's targets not yet done; True when all are done."""
    work: dict[str, Callable[[], dict[str, Any]]] = {
        "suppression": lambda: _suppression(settings, request),
        "warehouse": lambda: _warehouse(connection, request),
        "archive": lambda: _archive(settings, request),
        "dead-letters": lambda: delete_from_dead_letters(
            dead_letter_url(settings) or "", request.user_ids, request.anonymous_ids
        ),
        "quarantine": lambda: delete_from_dead_letters(
            settings.quarantine_url or "", request.user_ids, request.anonymous_ids
        ),
    }
    finished = True
    for target in record.unfinished(connection, request.id):
        record.mark(connection, request.id, target, "running")
        try:
            if target.startswith(DESTINATION):
                detail = _destination(settings, request, target)
            else:
                detail = work[target]()
        except Exception as error:
            log.exception("regulation target failed", extra={"fields": {"target": target}})
            record.mark(
                connection, request.id, target, "failed", f"{type(error).__name__}: {error}"
            )
            finished = False
            continue
        record.mark(connection, request.id, target, "done", detail=detail)
        after_target(target)
    return finished


def run(
    settings: RegulationSettings[str],
    *,
    action: str,
    user_ids: Sequence[str] | None = None,
    anonymous_ids: Sequence[str] | None = None,
    request_id: int | None = None,
) -> int:
    configure_logging(settings.log_level or "INFO")
    users, anonymous = list(user_ids or ()), list(anonymous_ids or ())
    if action != "status" and (problem := _ids_problem(users, anonymous)):
        print(f"liftoff regulation: {problem}", file=sys.stderr)
        return 2
    try:
        connection = connect(settings)
    except psycopg.OperationalError as error:
        host = settings.warehouse.host or "the host of its secret"
        where = f"{host}:{settings.warehouse.port or 5432}"
        reason = str(error).strip().splitlines()[-1]
        print(
            f"liftoff regulation: cannot reach the warehouse at {where}: {reason}", file=sys.stderr
        )
        return 1
    with connection:
        if action == "status":
            print(json.dumps(record.status(connection, request_id), indent=2, default=str))
            return 0
        record.lock(connection)
        request = record.submit(connection, action, users, anonymous, targets_of(action, settings))
        done = perform(connection, settings, request)
        print(json.dumps(record.status(connection, request.id)[0], indent=2, default=str))
        return 0 if done else 1


def _ids_problem(users: Sequence[str], anonymous: Sequence[str]) -> str | None:
    """What is wrong with the ids given (None: nothing), before anything is connected."""
    if not users and not anonymous:
        return "give --user-id and/or --anonymous-id"
    for flag, ids in (("--user-id", users), ("--anonymous-id", anonymous)):
        for identifier in ids:
            if not identifier.strip():
                return f"{flag} {identifier!r}: an id is a non-empty string"
    return None
