"""The Lambda entry points: every handler the AWS target deploys, and nothing else.

Handler paths are deployed configuration (``services.aws_lambda.<handler>``): keep them. Each
handler is a :class:`Handler` in :data:`HANDLERS`: its runtime contract (the settings its cold
start parses from the environment) and what it loads then (secrets), so
``tests/test_runtime_contract.py`` checks every function a stack declares against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from services.collector import contract as collector
from services.consumers.archiver import contract as archiver
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.loader import contract as loader
from services.consumers.runner.kinesis import LambdaConsumer
from services.contract import Process
from services.operations import contract as operations
from services.postgres import contract as postgres


@dataclass(frozen=True)
class Handler:
    contract: Process[Any]
    load: str
    """``module:function(settings)``: what the cold start reads (secrets), nothing opened."""


HANDLERS: dict[str, Handler] = {
    "services.aws_lambda.collector_handler": Handler(
        collector.FUNCTION, "services.collector.aws_lambda:load"
    ),
    "services.aws_lambda.archiver_handler": Handler(
        archiver.FUNCTION, "services.consumers.archiver.sink:load"
    ),
    "services.aws_lambda.loader_handler": Handler(
        loader.FUNCTION, "services.consumers.loader.sink:load"
    ),
    "services.aws_lambda.broadcaster_handler": Handler(
        broadcaster.FUNCTION, "services.consumers.broadcaster.sink:load"
    ),
    "services.aws_lambda.reconcile_handler": Handler(
        operations.FUNCTION, "services.operations.function:load"
    ),
    "services.aws_lambda.ensure_database_handler": Handler(
        postgres.ENSURE_DATABASE_FUNCTION, "services.postgres.database:admin_from_secret"
    ),
}


# --- the collector behind API Gateway (services.collector.aws_lambda) ---------------------------


def collector_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from services.collector.aws_lambda import collector_handler as handle

    return handle(event, context)


def reset_for_tests() -> None:
    """Forget the collector's cold-start state (tests start several in one process)."""
    from services.collector.aws_lambda import reset_for_tests as reset

    reset()


# --- stream consumers on Kinesis event-source mappings (services.consumers.runner.kinesis) ------


def _archiver(settings: archiver.ArchiverFunctionSettings[str]) -> Any:
    from services.consumers.archiver.sink import Archiver, load

    return Archiver(load(settings))


def _loader(settings: loader.LoaderFunctionSettings[str]) -> Any:
    from services.consumers.loader.sink import Loader, load

    return Loader(load(settings))


def _broadcaster(settings: broadcaster.BroadcasterFunctionSettings[str]) -> Any:
    from services.consumers.broadcaster.sink import BroadcastSink, load

    return BroadcastSink(load(settings))


archiver_consumer = LambdaConsumer(archiver.NAME, archiver.parse_function, _archiver)
loader_consumer = LambdaConsumer(loader.NAME, loader.parse_function, _loader)
broadcaster_consumer = LambdaConsumer("broadcaster", broadcaster.parse_function, _broadcaster)


def archiver_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Kinesis batch → S3 archive; returns ``{"batchItemFailures": [...]}``."""
    return archiver_consumer(event, context)


def loader_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Kinesis batch → Postgres warehouse; returns ``{"batchItemFailures": [...]}``."""
    return loader_consumer(event, context)


def broadcaster_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Kinesis batch → one destination; retries stop before the invocation's deadline and
    unfinished records are reported as ``batchItemFailures``."""
    from services.consumers.broadcaster.sink import DEADLINE, lambda_deadline

    token = DEADLINE.set(lambda_deadline(context))
    try:
        return broadcaster_consumer(event, context)
    finally:
        DEADLINE.reset(token)


# --- the ops function (invoked by the platform's DAGs, dags/liftoff_operations.py) ------------


MARGIN_SECONDS = 60.0
"""What the ops function keeps of an invocation's remaining time to save progress and answer."""
MINIMUM_SECONDS = 1.0


def budget_of(context: Any) -> float | None:
    """The seconds an operation (a replay, a regulation) may take in this invocation: what
    remains of it but the margin (at least :data:`MINIMUM_SECONDS`); no limit without a Lambda
    context."""
    if context is None:
        return None
    remaining = float(context.get_remaining_time_in_millis()) / 1000
    return max(remaining - MARGIN_SECONDS, MINIMUM_SECONDS)


def reconcile_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The ops function: repair one UTC hour of the warehouse from the archive
    (:func:`services.consumers.reconcile.repair.handle`), or, for ``{"rebuild": {...}}`` (the
    rebuild DAG on MWAA), rebuild a source's typed tables (:func:`services.warehouse.command.
    handle`; the same variables as ``warehouse-rebuild``), or, for ``{"regulation": {...}}``
    (the regulation DAG), run a regulation request (:func:`services.regulations.command.
    handle`; the function runs none unless the stack gave it the suppression list), or, for
    ``{"replay": {...}}`` (the replay DAG), replay an archived window into the warehouse within
    this invocation's time (:func:`services.consumers.replay.request.handle`)."""
    settings = operations.parse_function(os.environ)
    if isinstance(event, dict) and "rebuild" in event:
        from dataclasses import fields

        from services.warehouse.command import handle as rebuild
        from services.warehouse.contract import RebuildSettings

        repair = settings.reconcile
        same = {item.name: getattr(repair, item.name) for item in fields(RebuildSettings)}
        return rebuild(event["rebuild"] or {}, RebuildSettings(**same))
    if isinstance(event, dict) and "regulation" in event:
        from services.contract import ConfigError
        from services.regulations.command import handle as regulation

        if settings.suppression.url is None:
            raise ConfigError("this function was given no suppression list: it runs no regulation")
        return regulation(event["regulation"], settings.regulation(), budget_of(context))
    if isinstance(event, dict) and "replay" in event:
        from services.consumers.replay.request import handle as replay

        return replay(event["replay"], settings.replay(), budget_of(context))
    from services.consumers.reconcile.repair import handle

    return handle(event, settings.reconcile)


# --- client databases on RDS (invoked by the Postgres component at deploy time) ----------------


def ensure_database_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Create or update one client's role and database on RDS
    (:func:`services.postgres.database.lambda_handler`: ``{"clientSecretArn": ...}``)."""
    from services.postgres.database import lambda_handler

    return dict(lambda_handler(event, context))
