"""The broadcaster's configuration as it runs: its contract's settings
(:mod:`services.consumers.broadcaster.contract`) with the destination's secret read (from the
secrets file or Secrets Manager), its type built through the registry
(:mod:`services.consumers.broadcaster.destinations`) and the defaults applied. Errors name the
variable at fault and never quote a secret."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.consumers.broadcaster import contract
from services.consumers.broadcaster.contract import Broadcast
from services.consumers.broadcaster.delivery import Broadcaster, EventFilter
from services.consumers.broadcaster.destinations import API_URL, TYPES, DestinationDocument
from services.consumers.broadcaster.model import DestinationType
from services.consumers.broadcaster.retry import RetryPolicy
from services.contract import ConfigError, or_default


@dataclass(frozen=True)
class DestinationSpec:
    """A destination as the broadcaster runs it: the document, and where its API is."""

    document: DestinationDocument
    api_url: str | None = None
    """``LIFTOFF_DESTINATION_API_URL``, else ``settings.apiUrl``; None: the type's own API."""

    @classmethod
    def parse(cls, text: str, api_url_override: str | None = None) -> DestinationSpec:
        document = contract.parse_destination(text)
        return cls.of(document, api_url_override)

    @classmethod
    def of(cls, document: DestinationDocument, api_url: str | None = None) -> DestinationSpec:
        return cls(document, api_url or document.settings.get(API_URL) or None)

    @property
    def name(self) -> str:
        return self.document.name

    @property
    def type(self) -> str:
        return self.document.type

    @property
    def settings(self) -> dict[str, str]:
        return dict(self.document.settings)

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(self.document.sources)

    @property
    def events(self) -> frozenset[str]:
        return frozenset(self.document.events)

    @property
    def consumer_name(self) -> str:
        return self.document.consumer_name

    @property
    def event_filter(self) -> EventFilter:
        """What the destination receives: its sources, events and filters."""
        document = self.document
        return EventFilter(self.sources, self.events, document.filters, document.integration_names)

    @property
    def secret_field(self) -> str:
        return TYPES[self.type].secret.name

    def build(self, secret: str) -> DestinationType:
        """The type's own ``destination()`` (its module, as the registry names it)."""
        module = importlib.import_module(
            f"services.consumers.broadcaster.{TYPES[self.type].module}"
        )
        built: DestinationType = module.destination(
            self.name, self.document.settings, secret, self.api_url
        )
        return built


@dataclass(frozen=True)
class BroadcasterConfig:
    destination: DestinationSpec
    secret: str = field(repr=False)
    policy: RetryPolicy
    concurrency: int
    timeout: float

    @classmethod
    def load(
        cls, broadcast: Broadcast[str], read_secret_arn: Callable[[str], str] | None = None
    ) -> BroadcasterConfig:
        spec = DestinationSpec.of(contract.destination_of(broadcast), broadcast.api_url)
        policy = RetryPolicy(
            max_attempts=or_default(broadcast.max_attempts, contract.DEFAULT_MAX_ATTEMPTS),
            base=or_default(broadcast.backoff_base_seconds, contract.DEFAULT_BACKOFF_BASE_SECONDS),
            cap=or_default(broadcast.backoff_max_seconds, contract.DEFAULT_BACKOFF_MAX_SECONDS),
            retry_after_max=or_default(
                broadcast.retry_after_max_seconds, contract.DEFAULT_RETRY_AFTER_MAX_SECONDS
            ),
        )
        return cls(
            destination=spec,
            secret=_secret(broadcast, spec, read_secret_arn or _secrets_manager),
            policy=policy,
            concurrency=or_default(broadcast.concurrency, contract.DEFAULT_CONCURRENCY),
            timeout=or_default(broadcast.timeout_seconds, contract.DEFAULT_TIMEOUT_SECONDS),
        )

    def broadcaster(self, client: httpx.AsyncClient) -> Broadcaster:
        spec = self.destination
        return Broadcaster(
            spec.name,
            spec.build(self.secret),
            client,
            event_filter=spec.event_filter,
            policy=self.policy,
            concurrency=self.concurrency,
        )

    def http_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        return httpx.AsyncClient(timeout=self.timeout, limits=limits, follow_redirects=False)


def _secret(
    broadcast: Broadcast[str], spec: DestinationSpec, read_arn: Callable[[str], str]
) -> str:
    contract.check_secret_source(broadcast)
    origin = contract.secret_origin(broadcast)
    if broadcast.secrets_file:
        try:
            text = Path(broadcast.secrets_file).read_text(encoding="utf-8")
        except OSError as error:
            raise contract.secrets_file_error(
                broadcast.secrets_file, f"cannot be read: {error.strerror}"
            ) from None
    else:
        assert broadcast.secret_arn is not None
        text = read_arn(broadcast.secret_arn)
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise ConfigError(f"{origin} is not a JSON object") from None
    value = document.get(spec.secret_field) if isinstance(document, dict) else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{origin} has no {spec.secret_field!r} (needed by {spec.type})")
    return value


def _secrets_manager(arn: str) -> str:
    import boto3

    return str(
        boto3.client("secretsmanager").get_secret_value(SecretId=arn).get("SecretString") or ""
    )
