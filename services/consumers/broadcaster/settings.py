"""The broadcaster's settings, read from the environment; errors name the variable at fault and
never quote a secret.

- ``LIFTOFF_DESTINATION`` (required): ``{"name", "type": "webhook|mixpanel|amplitude|ga4",
  "settings": {...}, "sources": [...], "events": [...]}``. Settings per type: webhook ``url``;
  mixpanel ``region`` (us|eu), ``groupKey``; amplitude ``region`` (us|eu), ``groupType``; ga4
  ``measurementId``, ``region``. Any type: ``apiUrl`` replaces the API's base URL (tests, proxies).
- ``LIFTOFF_DESTINATION_API_URL``: same as ``settings.apiUrl`` (wins over it).
- Secrets, one of: ``LIFTOFF_DESTINATION_SECRETS_FILE`` (a JSON file) or
  ``LIFTOFF_DESTINATION_SECRET_ARN`` (a Secrets Manager secret with that JSON) — webhook
  ``signingSecret``, mixpanel ``projectToken``, amplitude ``apiKey``, ga4 ``apiSecret``.
- ``LIFTOFF_BROADCAST_MAX_ATTEMPTS`` (default 8): HTTP attempts per request before parking.
- ``LIFTOFF_BROADCAST_BACKOFF_BASE_SECONDS`` (1), ``LIFTOFF_BROADCAST_BACKOFF_MAX_SECONDS`` (60),
  ``LIFTOFF_BROADCAST_RETRY_AFTER_MAX_SECONDS`` (300): retry timing.
- ``LIFTOFF_BROADCAST_CONCURRENCY`` (4): requests in flight at once.
- ``LIFTOFF_BROADCAST_TIMEOUT_SECONDS`` (10): per HTTP attempt.
- ``LIFTOFF_BROADCAST_BATCH_MAX_EVENTS`` (500), ``LIFTOFF_BROADCAST_BATCH_MAX_SECONDS`` (1): batch
  bounds on JetStream (a Lambda batch is what the event-source mapping delivers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from services import config
from services import env as runtime_env
from services.config import ConfigError
from services.consumers.broadcaster.amplitude import Amplitude
from services.consumers.broadcaster.delivery import Broadcaster, EventFilter
from services.consumers.broadcaster.ga4 import GA4
from services.consumers.broadcaster.mixpanel import Mixpanel
from services.consumers.broadcaster.model import DestinationType
from services.consumers.broadcaster.retry import RetryPolicy
from services.consumers.broadcaster.webhook import Webhook

DESTINATION = runtime_env.DESTINATION
API_URL = runtime_env.DESTINATION_API_URL
SECRETS_FILE = runtime_env.DESTINATION_SECRETS_FILE
SECRET_ARN = runtime_env.DESTINATION_SECRET_ARN
MAX_ATTEMPTS = runtime_env.BROADCAST_MAX_ATTEMPTS
BACKOFF_BASE = runtime_env.BROADCAST_BACKOFF_BASE
BACKOFF_MAX = runtime_env.BROADCAST_BACKOFF_MAX
RETRY_AFTER_MAX = runtime_env.BROADCAST_RETRY_AFTER_MAX
CONCURRENCY = runtime_env.BROADCAST_CONCURRENCY
TIMEOUT = runtime_env.BROADCAST_TIMEOUT

# type → (required settings, optional settings, required secret)
TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "webhook": (("url",), (), "signingSecret"),
    "mixpanel": ((), ("region", "groupKey"), "projectToken"),
    "amplitude": ((), ("region", "groupType"), "apiKey"),
    "ga4": (("measurementId",), ("region",), "apiSecret"),
}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DestinationSpec:
    name: str
    type: str
    settings: dict[str, str]
    sources: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    api_url: str | None = None

    @classmethod
    def parse(cls, text: str, api_url_override: str = "") -> DestinationSpec:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"{DESTINATION} is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{DESTINATION} must be a JSON object")
        name, kind = document.get("name"), document.get("type")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"{DESTINATION} name={name!r}: use lower-case letters, digits and '-' (max 63)"
            )
        if kind not in TYPES:
            raise ConfigError(f"{DESTINATION} type={kind!r}: use one of {', '.join(TYPES)}")
        settings = document.get("settings") or {}
        if not isinstance(settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
        ):
            raise ConfigError(f"{DESTINATION} settings must map names to strings")
        required, optional, _ = TYPES[kind]
        allowed = {*required, *optional, "apiUrl"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ConfigError(
                f"{DESTINATION} settings {unknown} are not {kind} settings "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        missing = [key for key in required if not settings.get(key, "").strip()]
        if missing:
            raise ConfigError(f"{DESTINATION} settings.{missing[0]} is required for {kind}")
        if settings.get("region", "us") not in ("us", "eu"):
            raise ConfigError(f"{DESTINATION} settings.region={settings['region']!r}: use us or eu")
        api_url = api_url_override.strip() or settings.get("apiUrl", "").strip() or None
        for label, url in (("settings.url", settings.get("url")), ("API URL", api_url)):
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"{DESTINATION} {label} must be an http(s) URL")
        lists = {}
        for key in ("sources", "events"):
            value = document.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{DESTINATION} {key} must be a list of strings")
            lists[key] = frozenset(value)
        return cls(name, kind, dict(settings), lists["sources"], lists["events"], api_url)

    @property
    def consumer_name(self) -> str:
        return f"broadcaster-{self.name}"

    @property
    def secret_field(self) -> str:
        return TYPES[self.type][2]

    def build(self, secret: str) -> DestinationType:
        s = self.settings
        if self.type == "webhook":
            return Webhook(self.name, self.api_url or s["url"], secret)
        if self.type == "mixpanel":
            return Mixpanel(secret, s.get("region", "us"), self.api_url, s.get("groupKey"))
        if self.type == "amplitude":
            return Amplitude(
                secret, s.get("region", "us"), self.api_url, s.get("groupType", "group")
            )
        return GA4(s["measurementId"], secret, s.get("region", "us"), self.api_url)


@dataclass(frozen=True)
class BroadcasterConfig:
    destination: DestinationSpec
    secret: str = field(repr=False)
    policy: RetryPolicy
    concurrency: int
    timeout: float
    log_level: str

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], read_secret_arn: Callable[[str], str] | None = None
    ) -> BroadcasterConfig:
        text = env.get(DESTINATION, "").strip()
        if not text:
            raise ConfigError(f"{DESTINATION} is not set (the destination as JSON)")
        spec = DestinationSpec.parse(text, env.get(API_URL, ""))
        policy = RetryPolicy(
            max_attempts=config.integer(env, MAX_ATTEMPTS, 8, 1, 100),
            base=config.number(env, BACKOFF_BASE, 1.0, 0.0),
            cap=config.number(env, BACKOFF_MAX, 60.0, 0.0),
            retry_after_max=config.number(env, RETRY_AFTER_MAX, 300.0, 0.0),
        )
        return cls(
            destination=spec,
            secret=_secret(env, spec, read_secret_arn or _secrets_manager),
            policy=policy,
            concurrency=config.integer(env, CONCURRENCY, 4, 1, 64),
            timeout=config.number(env, TIMEOUT, 10.0, 0.1),
            log_level=config.log_level(env),
        )

    def broadcaster(self, client: httpx.AsyncClient) -> Broadcaster:
        spec = self.destination
        return Broadcaster(
            spec.name,
            spec.build(self.secret),
            client,
            event_filter=EventFilter(spec.sources, spec.events),
            policy=self.policy,
            concurrency=self.concurrency,
        )

    def http_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        return httpx.AsyncClient(timeout=self.timeout, limits=limits, follow_redirects=False)


def _secret(env: Mapping[str, str], spec: DestinationSpec, read_arn: Callable[[str], str]) -> str:
    path, arn = env.get(SECRETS_FILE, "").strip(), env.get(SECRET_ARN, "").strip()
    if path and arn:
        raise ConfigError(f"set only one of {SECRETS_FILE} and {SECRET_ARN}")
    if path:
        try:
            text, origin = Path(path).read_text(encoding="utf-8"), SECRETS_FILE
        except OSError as error:
            raise ConfigError(f"{SECRETS_FILE}={path!r} cannot be read: {error.strerror}") from None
    elif arn:
        text, origin = read_arn(arn), f"the secret {SECRET_ARN}"
    else:
        raise ConfigError(f"{SECRETS_FILE} or {SECRET_ARN} must be set")
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

    return boto3.client("secretsmanager").get_secret_value(SecretId=arn).get("SecretString") or ""
