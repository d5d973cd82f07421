"""The collector's configuration as it runs: its contract's settings
(:mod:`services.collector.contract`) with the write keys read (from the file or the secret),
the origins and IP opt-outs checked against them, and the defaults applied."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.collector.browser import DEFAULT_LIBRARY_DIR, AllowedOrigins
from services.collector.contract import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    CollectorFunctionSettings,
    CollectorSettings,
    HttpLimitSettings,
    Sources,
)
from services.contract import ConfigError, level_of, name_of
from services.events.write_keys import WriteKeys
from services.stream.contract import dead_letter_or_default, stream_url
from services.stream.jetstream import check_credentials
from services.suppression.lists import SuppressionConfig


@dataclass(frozen=True)
class HttpLimits:
    """Per worker process, enforced by :mod:`services.collector.http_limits` (uvicorn has none
    of the first three, and answers its own concurrency limit only once a request's headers are
    in)."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """Request line + headers; larger gets 431 and the connection closed."""
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    """From connect (or the first byte of a keep-alive request) to the end of the headers;
    then 408 and close."""
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    """From the end of the headers to the end of the body; then the connection is closed and
    nothing of the request published."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections per worker; more are closed as soon as they connect."""

    @classmethod
    def of(cls, settings: HttpLimitSettings[str]) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes or DEFAULT_MAX_HEADER_BYTES,
            header_timeout_seconds=settings.header_timeout_seconds
            or DEFAULT_HEADER_TIMEOUT_SECONDS,
            body_timeout_seconds=settings.body_timeout_seconds or DEFAULT_BODY_TIMEOUT_SECONDS,
            max_connections=settings.max_connections or DEFAULT_MAX_CONNECTIONS,
        )


@dataclass(frozen=True)
class SourcesConfig:
    write_keys: WriteKeys
    allowed_origins: AllowedOrigins
    public_url: str | None
    no_ip_sources: frozenset[str]


def _parsed_keys(variable: str, text: str) -> WriteKeys:
    try:
        return WriteKeys.from_json(text)
    except ValueError as error:
        raise ConfigError(f"{variable} {error}") from None


def write_keys(sources: Sources[str], read_secret: Callable[[], str] | None = None) -> WriteKeys:
    """The write keys: inline, from the file, or (``read_secret``) from Secrets Manager."""
    if read_secret is not None:
        return _parsed_keys(
            f"the secret {name_of(CollectorFunctionSettings, 'write_keys_secret_arn')} names",
            read_secret(),
        )
    path = sources.write_keys_file
    if path is not None:
        variable = name_of(Sources, "write_keys_file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{variable}={path!r} cannot be read: {error.strerror}") from None
        return _parsed_keys(variable, text)
    assert sources.write_keys is not None  # the contract's parse made sure
    return _parsed_keys(name_of(Sources, "write_keys"), sources.write_keys)


def load_sources(sources: Sources[str], keys: WriteKeys) -> SourcesConfig:
    origins_variable = name_of(Sources, "allowed_origins")
    try:
        origins = AllowedOrigins(
            {source: list(listed) for source, listed in (sources.allowed_origins or {}).items()}
        )
    except ValueError as error:
        raise ConfigError(f"{origins_variable} {error}") from None
    unknown = sorted(set(origins.sources) - set(keys.sources))
    if unknown:
        raise ConfigError(
            f"{origins_variable} names sources without a write key: {', '.join(unknown)} "
            f"(known: {', '.join(keys.sources)})"
        )
    no_ip = frozenset(sources.no_ip_sources or ())
    unknown = sorted(no_ip - set(keys.sources))
    if unknown:
        raise ConfigError(
            f"{name_of(Sources, 'no_ip_sources')} names unknown sources {unknown}: use names "
            f"of the write keys ({', '.join(keys.sources)})"
        )
    public_url = sources.public_url.rstrip("/") if sources.public_url else None
    return SourcesConfig(keys, origins, public_url, no_ip)


def quarantine_url(url: str | None, stream: str) -> str | None:
    """Where the collector quarantines invalid events; on JetStream by default the stream's
    servers + ``/DEADLETTER``. None on Kinesis when unset (an invalid event then fails its
    request with 400)."""
    if stream.startswith("kinesis://") and url is None:
        return None
    return dead_letter_or_default(url, stream)


@dataclass(frozen=True)
class CollectorConfig:
    stream_url: str
    write_keys: WriteKeys
    host: str
    port: int
    log_level: str
    workers: int
    allowed_origins: AllowedOrigins
    public_url: str | None
    """Where browsers reach the collector, for analytics.js's settings; default: the request's
    own Host and scheme."""
    analytics_js_dir: Path
    tls_cert_file: str | None
    tls_key_file: str | None
    quarantine_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    no_ip_sources: frozenset[str] = frozenset()
    http_limits: HttpLimits = HttpLimits()
    suppression: SuppressionConfig | None = None

    @classmethod
    def load(cls, settings: CollectorSettings[str]) -> CollectorConfig:
        url = stream_url(settings.stream)
        check_credentials(settings.stream)
        sources = load_sources(settings.sources, write_keys(settings.sources))
        return cls(
            stream_url=url,
            write_keys=sources.write_keys,
            host=settings.host or DEFAULT_HOST,
            port=settings.port or DEFAULT_PORT,
            log_level=level_of(settings.log_level),
            workers=settings.workers or DEFAULT_WORKERS,
            allowed_origins=sources.allowed_origins,
            public_url=sources.public_url,
            analytics_js_dir=Path(settings.analytics_js_dir or DEFAULT_LIBRARY_DIR),
            tls_cert_file=settings.tls_cert_file,
            tls_key_file=settings.tls_key_file,
            quarantine_url=quarantine_url(settings.quarantine_url, url),
            trusted_proxies=tuple(
                str(ipaddress.ip_network(item, strict=False))
                for item in settings.trusted_proxies or ()
            ),
            no_ip_sources=sources.no_ip_sources,
            http_limits=HttpLimits.of(settings.http),
            suppression=SuppressionConfig.of(settings.suppression),
        )
