"""The warehouse loader's runtime contract: ``python -m services loader`` (JetStream) and
``services.aws_lambda.loader_handler`` (Kinesis).

The warehouse: libpq's variables (:class:`~services.postgres.contract.PostgresAccess`); on AWS
the user and password (and, unless set, host, port and database) come from the secret
``LIFTOFF_WAREHOUSE_SECRET_ARN``. The process bounds its batches
(``LIFTOFF_LOADER_BATCH_MAX_EVENTS`` / ``_SECONDS``); on Lambda the event-source mapping does.
The typed tables' declared column types: ``LIFTOFF_WAREHOUSE_COLUMNS``
(:mod:`services.warehouse.columns`; default: every type inferred from the first value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.consumers.runner.contract import (
    ConsumerRuntime,
    FunctionRuntime,
    consumer_process,
)
from services.contract import Integer, Number, V, group, variable
from services.postgres.contract import PostgresAccess, require_host, warehouse_secret_arn_variable
from services.warehouse.columns import DeclaredColumns, columns_variable

NAME = "loader"
DISCARDS_LOG_MESSAGE = "typed values discarded"
DISCARDS_LOG_TOTAL = "discarded"
"""The log line of a load that discarded typed values, and its field with how many: what a
CloudWatch Logs metric filter reads on AWS, where a Lambda function serves no /metrics."""
_BATCH_MAX_EVENTS = "LIFTOFF_LOADER_BATCH_MAX_EVENTS"
_BATCH_MAX_SECONDS = "LIFTOFF_LOADER_BATCH_MAX_SECONDS"

DEFAULT_BATCH_MAX_EVENTS = 5000
DEFAULT_BATCH_MAX_SECONDS = 5.0


@dataclass(frozen=True)
class LoaderSettings(Generic[V]):
    """``python -m services loader``: a JetStream consumer process."""

    runtime: ConsumerRuntime[V] = group(ConsumerRuntime)
    warehouse: PostgresAccess[V] = group(PostgresAccess)
    batch_max_events: int | None = variable(_BATCH_MAX_EVENTS, Integer(1, 1_000_000))
    """Events per batch; default :data:`DEFAULT_BATCH_MAX_EVENTS`."""
    batch_max_seconds: float | None = variable(_BATCH_MAX_SECONDS, Number(0.01))
    """Age of the oldest event when a batch is handled; default
    :data:`DEFAULT_BATCH_MAX_SECONDS`."""
    columns: DeclaredColumns | None = columns_variable()


@dataclass(frozen=True)
class LoaderFunctionSettings(Generic[V]):
    """``services.aws_lambda.loader_handler``: the event-source mapping sizes its batches."""

    runtime: FunctionRuntime[V] = group(FunctionRuntime)
    warehouse: PostgresAccess[V] = group(PostgresAccess)
    warehouse_secret_arn: V | None = warehouse_secret_arn_variable()
    columns: DeclaredColumns | None = columns_variable()


PROCESS = consumer_process(LoaderSettings, lambda s: require_host(s.warehouse, None))
FUNCTION = consumer_process(
    LoaderFunctionSettings, lambda s: require_host(s.warehouse, s.warehouse_secret_arn)
)
parse, parse_function = PROCESS.parse, FUNCTION.parse
