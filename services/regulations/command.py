"""``python -m services regulation {suppress,delete,unsuppress,status}``.

A request is recorded first (:mod:`services.regulations.record`), then each of its targets not
yet done is run in turn, its status written before and after: ``suppression`` (the list, for
suppress and unsuppress), ``warehouse``, ``archive`` (when ``LIFTOFF_ARCHIVE_BUCKET`` is set),
``dead-letters`` (``LIFTOFF_DEAD_LETTER_URL``, default on JetStream the stream's ``/DEADLETTER``)
``quarantine`` (``LIFTOFF_QUARANTINE_URL``, when set) and ``destination:<name>`` (each
deletion API, :mod:`services.regulations.destinations`) for delete. A failed target is
recorded with its reason and the others still run; the exit status is 1 when any is not done.
Running the same request again finishes what is left. Runs are serialized by a Postgres lock.

The same request as one JSON document, ``{"action", "userIds", "anonymousIds", "requestId"}``
(:func:`asked`): ``--json`` (the Airflow DAG's pod) and the ops function's ``regulation``
payload (:func:`handle`, the DAG on MWAA).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from services.archive.store import ArchiveLocation, s3_client
from services.consumers.loader.sink import LoaderConfig
from services.contract import ConfigError
from services.observability import configure_logging
from services.regulations import record
from services.regulations.contract import DEFAULT_SETTLE_SECONDS, RegulationSettings, sqs_urls
from services.regulations.dead_letters import delete_from_dead_letters
from services.regulations.deletion import (
    ArchiveDeletion,
    delete_from_archive,
    delete_from_warehouse,
)
from services.regulations.destinations import request_deletion
from services.regulations.settle import wait_for_writer
from services.stream.address import dead_letter_url_of
from services.suppression.contract import require_suppression
from services.suppression.lists import entries, key_in_secret, open_store

log = logging.getLogger("liftoff.regulations")

DESTINATION = "destination:"
ACTIONS = ("suppress", "delete", "unsuppress", "status")


def dead_letter_urls(settings: RegulationSettings[str]) -> list[str]:
    """Every dead-letter store: ``LIFTOFF_DEAD_LETTER_URL`` (default on JetStream the stream's
    ``/DEADLETTER``) and ``LIFTOFF_REGULATION_DEAD_LETTER_URLS``."""
    found = sqs_urls(settings.dead_letter_urls)
    if settings.dead_letter_url is not None:
        found.insert(0, settings.dead_letter_url)
    elif (stream := settings.stream.url) and stream.startswith("nats://"):
        found.insert(0, dead_letter_url_of(stream))
    return found


def targets_of(kind: str, settings: RegulationSettings[str]) -> list[str]:
    if kind != "delete":
        return ["suppression"]
    return (
        ["warehouse"]
        + (["archive"] if settings.archive.bucket else [])
        + (["dead-letters"] if dead_letter_urls(settings) else [])
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


def _settle(settings: RegulationSettings[str], target: str) -> dict[str, object] | None:
    """The events on the stream reach ``target``'s store first (:mod:`.settle`)."""
    seconds = settings.settle_seconds
    return wait_for_writer(
        settings.stream.url,
        settings.stream.credentials_file,
        target,
        DEFAULT_SETTLE_SECONDS if seconds is None else seconds,
    )


def connect(settings: RegulationSettings[str]) -> psycopg.Connection:
    connection = psycopg.connect(
        connect_timeout=5,
        application_name="liftoff-regulation",
        autocommit=True,
        **LoaderConfig.load(settings.warehouse, settings.warehouse_secret_arn).connection,
    )
    record.migrate(connection)
    return connection


def _suppression_list(settings: RegulationSettings[str]) -> tuple[str, str]:
    """The list's URL and key (on AWS the key from its secret, as the collector reads it)."""
    read_key = key_in_secret(settings.suppression_key_secret_arn)
    if read_key is None:
        return require_suppression(settings.suppression)
    return settings.suppression.url or "", read_key()


def _suppression(settings: RegulationSettings[str], request: record.Request) -> dict[str, Any]:
    url, key = _suppression_list(settings)
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


ARCHIVE_COUNTS = ("objects_read", "objects_rewritten", "bytes_rewritten", "lines_removed")
STOPPED = "stopped at the invocation's time limit: run the same request again to continue"


def _archive(
    settings: RegulationSettings[str],
    connection: psycopg.Connection,
    request: record.Request,
    previous: dict[str, Any] | None,
    deadline: float | None,
) -> dict[str, Any]:
    """The archive scan, resumed after the last key recorded (``previous``, the target's
    detail), its progress recorded after each chunk; ``resume_after`` set when it stopped at
    ``deadline``."""
    location = ArchiveLocation.of(settings.archive)
    before = previous or {}
    start_after = before.get("resume_after")
    # Counts carry over only when resuming: a finished scan's detail is not this run's.
    base = {key: int(before.get(key) or 0) if start_after else 0 for key in ARCHIVE_COUNTS}

    def total(result: ArchiveDeletion) -> dict[str, Any]:
        return {key: base[key] + getattr(result, key) for key in ARCHIVE_COUNTS}

    def checkpoint(result: ArchiveDeletion, last_key: str) -> None:
        progress = {**total(result), "resume_after": last_key}
        record.mark(connection, request.id, "archive", "running", detail=progress)

    result = delete_from_archive(
        s3_client(location),
        location.bucket,
        location.prefix,
        request.user_ids,
        request.anonymous_ids,
        start_after=start_after,
        deadline=deadline,
        checkpoint=checkpoint,
    )
    return {**total(result), "resume_after": result.resume_after}


def _dead_letters(settings: RegulationSettings[str], request: record.Request) -> dict[str, Any]:
    deleted = 0
    for url in dead_letter_urls(settings):
        found = delete_from_dead_letters(url, request.user_ids, request.anonymous_ids)
        deleted += found["messages_deleted"]
    return {"messages_deleted": deleted}


def perform(
    connection: psycopg.Connection,
    settings: RegulationSettings[str],
    request: record.Request,
    after_target: Callable[[str], None] = lambda target: None,
    deadline: float | None = None,
) -> bool:
    """Run the request's targets not yet done; True when all are done. Past ``deadline``
    (``time.monotonic()``) no further target starts (the first always does) and the archive
    scan stops after its chunk in hand, left ``pending`` with its progress for the next run."""
    work: dict[str, Callable[[dict[str, Any] | None], dict[str, Any]]] = {
        "suppression": lambda previous: _suppression(settings, request),
        "warehouse": lambda previous: _warehouse(connection, request),
        "archive": lambda previous: _archive(settings, connection, request, previous, deadline),
        "dead-letters": lambda previous: _dead_letters(settings, request),
        "quarantine": lambda previous: delete_from_dead_letters(
            settings.quarantine_url or "", request.user_ids, request.anonymous_ids
        ),
    }
    finished = True
    for n, target in enumerate(record.unfinished(connection, request.id)):
        if n > 0 and deadline is not None and time.monotonic() >= deadline:
            return False  # each run makes progress on one target at least
        previous = record.detail(connection, request.id, target)
        record.mark(connection, request.id, target, "running", detail=previous)
        try:
            settled = _settle(settings, target)
            if target.startswith(DESTINATION):
                detail = _destination(settings, request, target)
            else:
                detail = work[target](previous)
            if settled is not None:
                detail = {**detail, "settled": settled}
        except Exception as error:
            log.exception("regulation target failed", extra={"fields": {"target": target}})
            reason = f"{type(error).__name__}: {error}"
            # The progress recorded so far stays: the next run resumes after it.
            progress = record.detail(connection, request.id, target)
            record.mark(connection, request.id, target, "failed", reason, detail=progress)
            finished = False
            continue
        if detail.get("resume_after"):
            record.mark(connection, request.id, target, "pending", STOPPED, detail=detail)
            finished = False
            continue
        record.mark(connection, request.id, target, "done", detail=detail)
        after_target(target)
    return finished


@dataclass(frozen=True)
class Asked:
    """What a run is asked to do."""

    action: str
    user_ids: tuple[str, ...] = ()
    anonymous_ids: tuple[str, ...] = ()
    request_id: int | None = None
    """``status``: only this request."""


DOCUMENT_KEYS = ("action", "userIds", "anonymousIds", "requestId")


def asked(document: Any) -> Asked:
    """The request as one JSON object (``--json``, the ops function's ``regulation`` payload);
    a ConfigError names the key, the value and what is allowed."""
    if not isinstance(document, dict):
        raise ConfigError(f"regulation request {document!r}: expected a JSON object")
    unknown = sorted(set(document) - set(DOCUMENT_KEYS))
    if unknown:
        allowed = ", ".join(DOCUMENT_KEYS)
        raise ConfigError(f"regulation request: unknown keys {unknown}; allowed: {allowed}")
    action = document.get("action")
    if action not in ACTIONS:
        raise ConfigError(f"regulation action {action!r}: use one of {', '.join(ACTIONS)}")
    ids = {}
    for key in ("userIds", "anonymousIds"):
        value = document.get(key) or []
        if not isinstance(value, list) or not all(isinstance(i, str) and i.strip() for i in value):
            raise ConfigError(f"regulation {key} {value!r}: a list of non-empty strings")
        ids[key] = tuple(value)
    request_id = document.get("requestId")
    if request_id is not None and (type(request_id) is not int or request_id < 1):
        raise ConfigError(f"regulation requestId {request_id!r}: a request number (status)")
    if action != "status" and not (ids["userIds"] or ids["anonymousIds"]):
        raise ConfigError(f"regulation {action}: give userIds and/or anonymousIds")
    return Asked(action, ids["userIds"], ids["anonymousIds"], request_id)


def execute(
    settings: RegulationSettings[str], request: Asked, deadline: float | None = None
) -> tuple[Any, bool]:
    """Run ``request`` (``status``: read the record); its status and whether all is done."""
    with connect(settings) as connection:
        if request.action == "status":
            return record.status(connection, request.request_id), True
        record.lock(connection)
        targets = targets_of(request.action, settings)
        submitted = record.submit(
            connection, request.action, request.user_ids, request.anonymous_ids, targets
        )
        done = perform(connection, settings, submitted, deadline=deadline)
        return record.status(connection, submitted.id)[0], done


def run(
    settings: RegulationSettings[str],
    *,
    action: str | None = None,
    user_ids: Sequence[str] | None = None,
    anonymous_ids: Sequence[str] | None = None,
    request_id: int | None = None,
    document: str | None = None,
) -> int:
    """``python -m services regulation``: the action and ids, or ``document`` (``--json``)."""
    configure_logging(settings.log_level or "INFO")
    if document is not None:
        if action is not None or user_ids or anonymous_ids or request_id is not None:
            raise ConfigError("regulation: give either --json or the action and its ids")
        try:
            request = asked(json.loads(document))
        except ValueError as error:
            raise ConfigError(f"regulation --json: not JSON ({error})") from None
    elif action is None:
        raise ConfigError("regulation: give an action (suppress, delete, unsuppress, status)")
    else:
        users, anonymous = tuple(user_ids or ()), tuple(anonymous_ids or ())
        if action != "status" and (problem := _ids_problem(users, anonymous)):
            print(f"liftoff regulation: {problem}", file=sys.stderr)
            return 2
        request = Asked(action, users, anonymous, request_id)
    try:
        found, done = execute(settings, request)
    except psycopg.OperationalError as error:  # one line, not a traceback; a rerun resumes
        host = settings.warehouse.host or "the host of its secret"
        where = f"{host}:{settings.warehouse.port or 5432}"
        reason = str(error).strip().splitlines()[-1]
        print(
            f"liftoff regulation: cannot reach the warehouse at {where}: {reason}", file=sys.stderr
        )
        return 1
    print(json.dumps(found, indent=2, default=str))
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


def handle(
    document: Any, settings: RegulationSettings[str], max_seconds: float | None = None
) -> dict[str, Any]:
    """The ops function's ``regulation`` payload, within ``max_seconds`` (what remains of the
    invocation): the request's status with ``finished``: false when only the time stopped it
    (invoke it again to continue, the archive scan resuming after its last key), true when
    every target is done; a failed target raises with the status (the DAG's task fails)."""
    configure_logging(settings.log_level or "INFO")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    found, done = execute(settings, asked(document), deadline)
    if isinstance(found, list):
        return {"requests": found, "finished": True}
    failed = [name for name, target in found["targets"].items() if target["status"] == "failed"]
    if failed or (not done and max_seconds is None):
        raise RuntimeError(f"regulation request not finished: {json.dumps(found, default=str)}")
    return {**found, "finished": done}
