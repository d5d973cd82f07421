"""The collector's runtime contract: ``python -m services collector`` (the container) and
``services.aws_lambda.collector_handler`` (behind API Gateway).

Both read the stream (:class:`~services.stream.contract.StreamAccess`), the sources
(:class:`Sources`: write keys, allowed origins, public URL, sources keeping no IP address), the
quarantine (``LIFTOFF_DEAD_LETTER_URL``; on JetStream its default is the stream's
``/DEADLETTER``, on Kinesis unset means an invalid event fails its request) and the log level.
The container also reads where it listens (``LIFTOFF_HOST``, ``LIFTOFF_PORT``,
``LIFTOFF_WORKERS``, TLS files), the proxies it believes, analytics.js's directory and its
HTTP limits (:class:`HttpLimitSettings`). Both read the suppression list
(:class:`~services.suppression.contract.SuppressionAccess`). The function reads its write keys
from Secrets Manager (``LIFTOFF_WRITE_KEYS_SECRET_ARN``) instead of a file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic
from urllib.parse import urlsplit

from services.contract import (
    ConfigError,
    Integer,
    Json,
    Names,
    Number,
    Text,
    V,
    check_pattern,
    group,
    log_level_variable,
    process,
    secret_arn,
    variable,
)
from services.stream.contract import StreamAccess, dead_letter_url_variable, stream_url
from services.suppression.contract import (
    SuppressionAccess,
    check_key_secret,
    check_suppression,
    key_secret_arn_variable,
)

_WRITE_KEYS = "LIFTOFF_WRITE_KEYS"
_WRITE_KEYS_FILE = "LIFTOFF_WRITE_KEYS_FILE"
_WRITE_KEYS_SECRET_ARN = "LIFTOFF_WRITE_KEYS_SECRET_ARN"
_ALLOWED_ORIGINS = "LIFTOFF_ALLOWED_ORIGINS"
_PUBLIC_URL = "LIFTOFF_PUBLIC_URL"
_NO_IP_SOURCES = "LIFTOFF_IP_COLLECTION_OFF"
_HOST = "LIFTOFF_HOST"
_PORT = "LIFTOFF_PORT"
_WORKERS = "LIFTOFF_WORKERS"
_ANALYTICS_JS_DIR = "LIFTOFF_ANALYTICS_JS_DIR"
_TLS_CERT_FILE = "LIFTOFF_TLS_CERT_FILE"
_TLS_KEY_FILE = "LIFTOFF_TLS_KEY_FILE"
_TRUSTED_PROXIES = "LIFTOFF_TRUSTED_PROXIES"
_MAX_HEADER_BYTES = "LIFTOFF_HTTP_MAX_HEADER_BYTES"
_HEADER_TIMEOUT = "LIFTOFF_HTTP_HEADER_TIMEOUT_SECONDS"
_BODY_TIMEOUT = "LIFTOFF_HTTP_BODY_TIMEOUT_SECONDS"
_MAX_CONNECTIONS = "LIFTOFF_HTTP_MAX_CONNECTIONS"

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 1
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_CONNECTIONS = 512

_SOURCE = check_pattern(r"[A-Za-z0-9_-]{1,64}", "is not a source name")


def public_url_problem(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return "must be http(s)://host[:port][/path], e.g. https://events.example.com"
    return None


def _check_proxy(item: str) -> str | None:
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return "is not an IP address or CIDR (e.g. 10.0.0.0/8,fd00::/8)"
    return None


def decode_origins(document: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(document, dict):
        raise ValueError("must be a JSON object mapping source name to a list of origins")
    origins: dict[str, tuple[str, ...]] = {}
    for source, listed in document.items():
        if (
            not isinstance(listed, list)
            or not listed
            or not all(isinstance(o, str) for o in listed)
        ):
            raise ValueError(f"source {source!r}: expected a non-empty list of origins")
        origins[source] = tuple(listed)
    return origins


def encode_origins(origins: Mapping[str, tuple[str, ...]]) -> str:
    import json

    return json.dumps(
        {source: list(listed) for source, listed in origins.items()},
        sort_keys=True,
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Sources(Generic[V]):
    """The sources: their write keys (JSON ``{"<source>": "<key>"}`` inline or as a file), the
    browser origins each allows (sources not listed allow any), where browsers reach the
    collector, and the sources whose events keep no IP address."""

    write_keys: str | None = variable(_WRITE_KEYS, Text("write-keys", secret=True))
    write_keys_file: V | None = variable(_WRITE_KEYS_FILE, Text("path"))
    allowed_origins: Mapping[str, tuple[str, ...]] | None = variable(
        _ALLOWED_ORIGINS, Json("origins", decode_origins, encode_origins)
    )
    public_url: V | None = variable(_PUBLIC_URL, Text("url", public_url_problem))
    """Default: the request's own Host and scheme."""
    no_ip_sources: tuple[str, ...] | None = variable(_NO_IP_SOURCES, Names("source", _SOURCE))


@dataclass(frozen=True)
class HttpLimitSettings(Generic[V]):
    """Per worker process (:mod:`services.collector.http_limits`)."""

    max_header_bytes: int | None = variable(_MAX_HEADER_BYTES, Integer(1024, 1024 * 1024))
    header_timeout_seconds: float | None = variable(_HEADER_TIMEOUT, Number(0.1))
    body_timeout_seconds: float | None = variable(_BODY_TIMEOUT, Number(0.1))
    max_connections: int | None = variable(_MAX_CONNECTIONS, Integer(1, 100_000))


@dataclass(frozen=True)
class CollectorSettings(Generic[V]):
    """``python -m services collector``."""

    stream: StreamAccess[V] = group(StreamAccess)
    sources: Sources[V] = group(Sources)
    quarantine_url: V | None = dead_letter_url_variable()
    log_level: str | None = log_level_variable()
    host: str | None = variable(_HOST, Text("host"))
    port: int | None = variable(_PORT, Integer(1, 65535))
    workers: int | None = variable(_WORKERS, Integer(1, 64))
    analytics_js_dir: str | None = variable(_ANALYTICS_JS_DIR, Text("path"))
    """Default: ``services/static/analytics-next`` (the image)."""
    tls_cert_file: V | None = variable(_TLS_CERT_FILE, Text("path"))
    tls_key_file: V | None = variable(_TLS_KEY_FILE, Text("path"))
    trusted_proxies: tuple[str, ...] | None = variable(
        _TRUSTED_PROXIES, Names("cidr", _check_proxy)
    )
    """Addresses or CIDRs whose X-Forwarded-For is believed; default none."""
    http: HttpLimitSettings[V] = group(HttpLimitSettings)
    suppression: SuppressionAccess[V] = group(SuppressionAccess)


@dataclass(frozen=True)
class CollectorFunctionSettings(Generic[V]):
    """``services.aws_lambda.collector_handler``."""

    stream: StreamAccess[V] = group(StreamAccess)
    sources: Sources[V] = group(Sources)
    write_keys_secret_arn: V | None = variable(_WRITE_KEYS_SECRET_ARN, secret_arn())
    quarantine_url: V | None = dead_letter_url_variable()
    log_level: str | None = log_level_variable()
    suppression: SuppressionAccess[V] = group(SuppressionAccess)
    suppression_key_secret_arn: V | None = key_secret_arn_variable()
    """The suppression list's key, read once per cold start (never in the environment)."""


def check_write_keys(sources: Sources[str], secret_arn: str | None = None) -> None:
    if secret_arn is not None and sources.write_keys is not None:
        raise ConfigError(f"set only one of {_WRITE_KEYS} and {_WRITE_KEYS_SECRET_ARN}")
    if sources.write_keys is not None and sources.write_keys_file is not None:
        raise ConfigError(f"set only one of {_WRITE_KEYS} and {_WRITE_KEYS_FILE}")
    if secret_arn is None and sources.write_keys is None and sources.write_keys_file is None:
        raise ConfigError(
            f"{_WRITE_KEYS} or {_WRITE_KEYS_FILE} must be set "
            '(JSON object mapping source name to write key, e.g. {"web": "<key>"})'
        )


def _check_collector(settings: CollectorSettings[str]) -> None:
    stream_url(settings.stream)
    check_write_keys(settings.sources)
    check_suppression(settings.suppression)
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigError(f"set both {_TLS_CERT_FILE} and {_TLS_KEY_FILE}, or neither")


def _check_function(settings: CollectorFunctionSettings[str]) -> None:
    stream_url(settings.stream, ("kinesis",))
    check_write_keys(settings.sources, settings.write_keys_secret_arn)
    check_key_secret(settings.suppression, settings.suppression_key_secret_arn)


@dataclass(frozen=True)
class QuarantineSettings(Generic[V]):
    """``python -m services quarantine`` (run by hand in a collector pod: its environment)."""

    stream: StreamAccess[V] = group(StreamAccess)
    quarantine_url: V | None = dead_letter_url_variable()
    log_level: str | None = log_level_variable()


def _check_quarantine(settings: QuarantineSettings[str]) -> None:
    stream_url(settings.stream, ("nats",))


PROCESS = process(CollectorSettings, _check_collector)
QUARANTINE = process(QuarantineSettings, _check_quarantine)
FUNCTION = process(CollectorFunctionSettings, _check_function)
parse, parse_function, parse_quarantine = PROCESS.parse, FUNCTION.parse, QUARANTINE.parse
