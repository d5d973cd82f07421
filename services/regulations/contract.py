"""``python -m services regulation``: :class:`RegulationSettings`.

The suppression list (:class:`~services.suppression.contract.SuppressionAccess`; on AWS its key
from the secret ``LIFTOFF_SUPPRESSION_KEY_SECRET_ARN``), the warehouse (libpq's variables, or on
AWS the secret ``LIFTOFF_WAREHOUSE_SECRET_ARN``; it also keeps the requests, schema
``liftoff_regulations``), the archive, the stream, the dead letters (``LIFTOFF_DEAD_LETTER_URL``,
and on AWS every consumer's queue, ``LIFTOFF_REGULATION_DEAD_LETTER_URLS``) and the collector's
quarantine when it is kept apart (``LIFTOFF_QUARANTINE_URL``, AWS), and the destinations whose
deletion APIs a delete calls (``LIFTOFF_REGULATION_DESTINATIONS``: :data:`DELETION_TYPES`; their
credentials in ``LIFTOFF_REGULATION_SECRETS_FILE``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic

from services.archive.contract import ArchiveAccess
from services.contract import (
    ConfigError,
    Integer,
    Json,
    Text,
    V,
    group,
    log_level_variable,
    process,
    required,
    variable,
)
from services.postgres.contract import (
    PostgresAccess,
    require_host,
    warehouse_secret_arn_variable,
)
from services.stream.address import dead_letter_problem
from services.stream.contract import StreamAccess, dead_letter_url_variable
from services.suppression.contract import (
    KV_BUCKET,
    SuppressionAccess,
    check_key_secret,
    key_secret_arn_variable,
    name_of_url,
)

_QUARANTINE_URL = "LIFTOFF_QUARANTINE_URL"
_DESTINATIONS = "LIFTOFF_REGULATION_DESTINATIONS"
_SECRETS_FILE = "LIFTOFF_REGULATION_SECRETS_FILE"
_DEAD_LETTER_URLS = "LIFTOFF_REGULATION_DEAD_LETTER_URLS"
_SETTLE_SECONDS = "LIFTOFF_REGULATION_SETTLE_SECONDS"
DEFAULT_SETTLE_SECONDS = 900


def _sqs_urls_problem(urls: str) -> str | None:
    for url in urls.split(","):
        if not url.startswith("sqs://") or dead_letter_problem(url):
            return "must be sqs://<queue-name>[,sqs://<queue-name>...]"
    return None


def sqs_urls(text: str | None) -> list[str]:
    """``LIFTOFF_REGULATION_DEAD_LETTER_URLS`` as a list."""
    return text.split(",") if text else []


def quarantine_url_variable() -> Any:
    """``LIFTOFF_QUARANTINE_URL`` (here and in the ops function's contract)."""
    return variable(_QUARANTINE_URL, Text("dead-letter-url", dead_letter_problem))


def dead_letter_urls_variable() -> Any:
    """``LIFTOFF_REGULATION_DEAD_LETTER_URLS`` (here and in the ops function's contract)."""
    return variable(_DEAD_LETTER_URLS, Text("sqs-urls", _sqs_urls_problem))


@dataclass(frozen=True)
class DeletionType:
    """What a destination type's deletion call needs (the calls: ``destinations.py``)."""

    settings: tuple[str, ...]
    required_settings: tuple[str, ...]
    secrets: tuple[str, ...]


DELETION_TYPES: dict[str, DeletionType] = {
    "amplitude": DeletionType(("region", "apiUrl"), (), ("apiKey", "secretKey")),
    "mixpanel": DeletionType(("region", "apiUrl"), (), ("projectToken", "oauthToken")),
    "ga4": DeletionType(("propertyId", "apiUrl"), ("propertyId",), ("accessToken",)),
    "webhook": DeletionType(("url", "apiUrl"), ("url",), ("signingSecret",)),
}


@dataclass(frozen=True)
class DeletionDestination:
    name: str
    type: str
    settings: Mapping[str, str] = field(default_factory=dict)


def decode_destinations(document: Any) -> tuple[DeletionDestination, ...]:
    """``LIFTOFF_REGULATION_DESTINATIONS``; a ValueError says what is wrong."""
    if not isinstance(document, list):
        raise ValueError('must be a JSON list of {"name", "type", "settings"}')
    found = []
    for index, item in enumerate(document):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"item {index}: expected an object with a name")
        kind = DELETION_TYPES.get(str(item.get("type")))
        if kind is None:
            allowed = ", ".join(DELETION_TYPES)
            raise ValueError(f"item {index}: type {item.get('type')!r}: use one of {allowed}")
        settings = item.get("settings") or {}
        if not isinstance(settings, dict) or set(settings) - set(kind.settings):
            allowed = ", ".join(kind.settings)
            raise ValueError(f"item {index}: settings must be strings among {allowed}")
        missing = [name for name in kind.required_settings if not settings.get(name)]
        if missing:
            raise ValueError(f"item {index}: settings {missing} are required for {item['type']}")
        found.append(DeletionDestination(item["name"], item["type"], dict(settings)))
    return tuple(found)


def encode_destinations(destinations: tuple[DeletionDestination, ...]) -> str:
    return json.dumps(
        [{"name": d.name, "type": d.type, "settings": dict(d.settings)} for d in destinations],
        sort_keys=True,
    )


@dataclass(frozen=True)
class RegulationSettings(Generic[V]):
    """``python -m services regulation``."""

    suppression: SuppressionAccess[V] = group(SuppressionAccess)
    suppression_key_secret_arn: V | None = key_secret_arn_variable()
    """AWS: the list's key, from Secrets Manager."""
    warehouse: PostgresAccess[V] = group(PostgresAccess)
    warehouse_secret_arn: V | None = warehouse_secret_arn_variable()
    archive: ArchiveAccess[V] = group(ArchiveAccess)
    stream: StreamAccess[V] = group(StreamAccess)
    dead_letter_url: V | None = dead_letter_url_variable()
    """The consumers' dead letters; default on JetStream: the stream's servers + /DEADLETTER
    (which holds the collector's quarantine too)."""
    dead_letter_urls: V | None = dead_letter_urls_variable()
    """More dead-letter queues, ``sqs://<queue>,...`` (AWS: one per consumer function; one
    text, so a deployment may give it as one value: :func:`sqs_urls` splits it)."""
    quarantine_url: V | None = quarantine_url_variable()
    """The collector's quarantine when it is a store of its own (AWS: its SQS queue)."""
    destinations: tuple[DeletionDestination, ...] | None = variable(
        _DESTINATIONS,
        Json("regulation-destinations", decode_destinations, encode_destinations),
    )
    """Destinations whose deletion API a delete calls (:mod:`services.regulations.destinations`);
    default none."""
    secrets_file: V | None = variable(_SECRETS_FILE, Text("path"))
    """Their deletion credentials, ``{"<name>": {"<field>": "..."}}``."""
    settle_seconds: int | None = variable(_SETTLE_SECONDS, Integer(0, 86_400))
    """How long a delete waits for the consumer that writes a target to have acknowledged what
    the stream held when the target started (JetStream); default
    :data:`DEFAULT_SETTLE_SECONDS`."""
    log_level: str | None = log_level_variable()


def _check_regulation(settings: RegulationSettings[str]) -> None:
    required(name_of_url(), settings.suppression.url, f"e.g. nats://127.0.0.1:4222/{KV_BUCKET}")
    check_key_secret(settings.suppression, settings.suppression_key_secret_arn)
    require_host(settings.warehouse, settings.warehouse_secret_arn)
    if settings.destinations and settings.secrets_file is None:
        raise ConfigError(f"{_SECRETS_FILE} is not set ({_DESTINATIONS} names destinations)")


PROCESS = process(RegulationSettings, _check_regulation)
parse = PROCESS.parse
