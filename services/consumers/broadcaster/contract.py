"""The broadcaster's runtime contract: ``python -m services broadcaster`` (JetStream) and
``services.aws_lambda.broadcaster_handler`` (Kinesis), one per destination.

- ``LIFTOFF_DESTINATION`` (required): the destination document
  (:class:`~services.consumers.broadcaster.destinations.DestinationDocument`: ``name``,
  ``type``, ``settings``, ``sources``, ``events``), checked against the registry of types.
- ``LIFTOFF_DESTINATION_API_URL``: replaces the API's base URL (wins over ``settings.apiUrl``).
- The secret, one of: ``LIFTOFF_DESTINATION_SECRETS_FILE`` (a JSON file) or
  ``LIFTOFF_DESTINATION_SECRET_ARN`` (a Secrets Manager secret holding that JSON), with the
  type's secret field (webhook ``signingSecret``, mixpanel ``projectToken``, amplitude
  ``apiKey``, ga4 ``apiSecret``).
- Delivery: ``LIFTOFF_BROADCAST_MAX_ATTEMPTS`` (HTTP attempts per request before parking),
  ``LIFTOFF_BROADCAST_BACKOFF_BASE_SECONDS``, ``_BACKOFF_MAX_SECONDS``,
  ``_RETRY_AFTER_MAX_SECONDS``, ``LIFTOFF_BROADCAST_CONCURRENCY`` (requests in flight),
  ``LIFTOFF_BROADCAST_TIMEOUT_SECONDS`` (per attempt); defaults below.
- The process bounds its batches (``LIFTOFF_BROADCAST_BATCH_MAX_EVENTS`` / ``_SECONDS``); on
  Lambda the event-source mapping does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.consumers.broadcaster.destinations import DestinationDocument, decode
from services.consumers.runner.contract import (
    ConsumerRuntime,
    FunctionRuntime,
    consumer_process,
)
from services.contract import (
    ConfigError,
    Integer,
    Json,
    Number,
    Text,
    V,
    check_pattern,
    group,
    required,
    secret_arn,
    variable,
)

FILTERED_LOG_MESSAGE = "events filtered out"
FILTERED_LOG_TOTAL = "filtered"
"""The log line of a batch some of whose events the destination's filters refused, and its
field with how many (``liftoff_broadcaster_filtered_total``): what a CloudWatch Logs metric
filter reads on AWS."""

_DESTINATION = "LIFTOFF_DESTINATION"
_API_URL = "LIFTOFF_DESTINATION_API_URL"
_SECRETS_FILE = "LIFTOFF_DESTINATION_SECRETS_FILE"
_SECRET_ARN = "LIFTOFF_DESTINATION_SECRET_ARN"
_MAX_ATTEMPTS = "LIFTOFF_BROADCAST_MAX_ATTEMPTS"
_BACKOFF_BASE = "LIFTOFF_BROADCAST_BACKOFF_BASE_SECONDS"
_BACKOFF_MAX = "LIFTOFF_BROADCAST_BACKOFF_MAX_SECONDS"
_RETRY_AFTER_MAX = "LIFTOFF_BROADCAST_RETRY_AFTER_MAX_SECONDS"
_CONCURRENCY = "LIFTOFF_BROADCAST_CONCURRENCY"
_TIMEOUT = "LIFTOFF_BROADCAST_TIMEOUT_SECONDS"
_BATCH_MAX_EVENTS = "LIFTOFF_BROADCAST_BATCH_MAX_EVENTS"
_BATCH_MAX_SECONDS = "LIFTOFF_BROADCAST_BATCH_MAX_SECONDS"

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BACKOFF_BASE_SECONDS = 1.0
DEFAULT_BACKOFF_MAX_SECONDS = 60.0
DEFAULT_RETRY_AFTER_MAX_SECONDS = 300.0
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_BATCH_MAX_EVENTS = 500
DEFAULT_BATCH_MAX_SECONDS = 1.0

_HTTP_URL = check_pattern(r"https?://\S+", "must be an http(s) URL")
_DOCUMENT = Json("destination", decode, DestinationDocument.encode)


@dataclass(frozen=True)
class Broadcast(Generic[V]):
    """One destination, its secret, and how hard to try."""

    destination: DestinationDocument | None = variable(_DESTINATION, _DOCUMENT)
    api_url: str | None = variable(_API_URL, Text("url", _HTTP_URL))
    secrets_file: V | None = variable(_SECRETS_FILE, Text("path"))
    secret_arn: V | None = variable(_SECRET_ARN, secret_arn())
    max_attempts: int | None = variable(_MAX_ATTEMPTS, Integer(1, 100))
    """Default :data:`DEFAULT_MAX_ATTEMPTS`."""
    backoff_base_seconds: float | None = variable(_BACKOFF_BASE, Number(0.0))
    """Default :data:`DEFAULT_BACKOFF_BASE_SECONDS`."""
    backoff_max_seconds: float | None = variable(_BACKOFF_MAX, Number(0.0))
    """Default :data:`DEFAULT_BACKOFF_MAX_SECONDS`."""
    retry_after_max_seconds: float | None = variable(_RETRY_AFTER_MAX, Number(0.0))
    """Default :data:`DEFAULT_RETRY_AFTER_MAX_SECONDS`."""
    concurrency: int | None = variable(_CONCURRENCY, Integer(1, 64))
    """Default :data:`DEFAULT_CONCURRENCY`."""
    timeout_seconds: float | None = variable(_TIMEOUT, Number(0.1))
    """Default :data:`DEFAULT_TIMEOUT_SECONDS`."""


@dataclass(frozen=True)
class BroadcasterSettings(Generic[V]):
    """``python -m services broadcaster``: a JetStream consumer process."""

    runtime: ConsumerRuntime[V] = group(ConsumerRuntime)
    broadcast: Broadcast[V] = group(Broadcast)
    batch_max_events: int | None = variable(_BATCH_MAX_EVENTS, Integer(1, 1_000_000))
    """Events per batch; default :data:`DEFAULT_BATCH_MAX_EVENTS`."""
    batch_max_seconds: float | None = variable(_BATCH_MAX_SECONDS, Number(0.01))
    """Age of the oldest event when a batch is handled; default
    :data:`DEFAULT_BATCH_MAX_SECONDS`."""


@dataclass(frozen=True)
class BroadcasterFunctionSettings(Generic[V]):
    """``services.aws_lambda.broadcaster_handler``: the event-source mapping sizes its batches."""

    runtime: FunctionRuntime[V] = group(FunctionRuntime)
    broadcast: Broadcast[V] = group(Broadcast)


def destination_of(broadcast: Broadcast[str]) -> DestinationDocument:
    return required(_DESTINATION, broadcast.destination, "the destination as JSON")


def parse_destination(text: str) -> DestinationDocument:
    """``LIFTOFF_DESTINATION``'s document from its text; errors name the variable."""
    return _DOCUMENT.read(_DESTINATION, text)


def check_secret_source(broadcast: Broadcast[str]) -> None:
    if broadcast.secrets_file and broadcast.secret_arn:
        raise ConfigError(f"set only one of {_SECRETS_FILE} and {_SECRET_ARN}")
    if not (broadcast.secrets_file or broadcast.secret_arn):
        raise ConfigError(f"{_SECRETS_FILE} or {_SECRET_ARN} must be set")


def secret_origin(broadcast: Broadcast[str]) -> str:
    """How errors name where the secret came from."""
    return _SECRETS_FILE if broadcast.secrets_file else f"the secret {_SECRET_ARN}"


def secrets_file_error(path: str, problem: str) -> ConfigError:
    return ConfigError(f"{_SECRETS_FILE}={path!r} {problem}")


def _checked(broadcast: Broadcast[str]) -> None:
    destination_of(broadcast)
    check_secret_source(broadcast)


PROCESS = consumer_process(BroadcasterSettings, lambda s: _checked(s.broadcast))
FUNCTION = consumer_process(BroadcasterFunctionSettings, lambda s: _checked(s.broadcast))
parse, parse_function = PROCESS.parse, FUNCTION.parse
