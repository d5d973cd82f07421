"""Settings read from environment variables; every error names the variable at fault."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.collector.browser import DEFAULT_LIBRARY_DIR, AllowedOrigins, validate_public_url
from services.env import (  # noqa: F401  (re-exported: services.config.<NAME> is used widely)
    ACK_WAIT,
    ALLOWED_ORIGINS,
    ANALYTICS_JS_DIR,
    ARCHIVE_BATCH_MAX_EVENTS,
    ARCHIVE_BATCH_MAX_SECONDS,
    ARCHIVE_BUCKET,
    ARCHIVE_PREFIX,
    BROADCAST_BATCH_MAX_EVENTS,
    BROADCAST_BATCH_MAX_SECONDS,
    CONSUMER_NAME,
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_RETENTION_HOURS,
    DEAD_LETTER_URL,
    DUPLICATE_WINDOW,
    HEALTH_HOST,
    HEALTH_PORT,
    HOST,
    HTTP_BODY_TIMEOUT,
    HTTP_HEADER_TIMEOUT,
    HTTP_MAX_CONNECTIONS,
    HTTP_MAX_HEADER_BYTES,
    LAG_INTERVAL,
    LOADER_BATCH_MAX_EVENTS,
    LOADER_BATCH_MAX_SECONDS,
    LOG_LEVEL,
    MAX_BYTES,
    NO_IP_SOURCES,
    PORT,
    PUBLIC_URL,
    REPLICAS,
    RETENTION_HOURS,
    SHUTDOWN_GRACE,
    STREAM_URL,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TRUSTED_PROXIES,
    WAREHOUSE_SECRET_ARN,
    WORKERS,
    WRITE_KEYS,
    WRITE_KEYS_FILE,
    WRITE_KEYS_SECRET_ARN,
)
from services.events.write_keys import WriteKeys
from services.observability import parse_log_level
from services.stream.base import InvalidStreamUrl, StreamSettings


class ConfigError(Exception):
    """A missing or invalid environment variable; the message names it."""


def stream_url(env: Mapping[str, str], schemes: tuple[str, ...] = ("nats", "kinesis")) -> str:
    url = env.get(STREAM_URL, "").strip()
    if not url:
        raise ConfigError(f"{STREAM_URL} is not set (e.g. nats://nats:4222/EVENTS)")
    scheme = url.partition("://")[0]
    if scheme not in schemes:
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{STREAM_URL}={url!r} is not supported: use {allowed}")
    try:
        if scheme == "nats":
            from services.stream.jetstream import (
                InvalidStreamCredentials,
                JetStreamAddress,
                stream_credentials,
            )

            JetStreamAddress.parse(url)
            try:
                stream_credentials(env)
            except InvalidStreamCredentials as error:
                raise ConfigError(str(error)) from None
        else:
            from services.stream.kinesis import KinesisAddress

            KinesisAddress.parse(url)
    except InvalidStreamUrl as error:
        raise ConfigError(f"{STREAM_URL} is invalid: {error}") from None
    return url


def write_keys(env: Mapping[str, str]) -> WriteKeys:
    inline = env.get(WRITE_KEYS, "").strip()
    path = env.get(WRITE_KEYS_FILE, "").strip()
    if inline and path:
        raise ConfigError(f"set only one of {WRITE_KEYS} and {WRITE_KEYS_FILE}")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"{WRITE_KEYS_FILE}={path!r} cannot be read: {error.strerror}"
            ) from None
        return _parse_write_keys(WRITE_KEYS_FILE, text)
    if inline:
        return _parse_write_keys(WRITE_KEYS, inline)
    raise ConfigError(
        f"{WRITE_KEYS} or {WRITE_KEYS_FILE} must be set "
        '(JSON object mapping source name to write key, e.g. {"web": "<key>"})'
    )


def _parse_write_keys(variable: str, text: str) -> WriteKeys:
    try:
        return WriteKeys.from_json(text)
    except ValueError as error:
        raise ConfigError(f"{variable} {error}") from None


def allowed_origins(env: Mapping[str, str], keys: WriteKeys) -> AllowedOrigins:
    """``LIFTOFF_ALLOWED_ORIGINS``: JSON source name → list of origins; unlisted sources: ``*``."""
    try:
        origins = AllowedOrigins.from_json(env.get(ALLOWED_ORIGINS, ""))
    except ValueError as error:
        raise ConfigError(f"{ALLOWED_ORIGINS} {error}") from None
    unknown = sorted(set(origins.sources) - set(keys.sources))
    if unknown:
        raise ConfigError(
            f"{ALLOWED_ORIGINS} names sources without a write key: {', '.join(unknown)} "
            f"(known: {', '.join(keys.sources)})"
        )
    return origins


def public_url(env: Mapping[str, str]) -> str | None:
    raw = env.get(PUBLIC_URL, "").strip()
    if not raw:
        return None
    try:
        return validate_public_url(raw)
    except ValueError as error:
        raise ConfigError(f"{PUBLIC_URL}={raw!r} {error}") from None


def integer(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} must be between {minimum} and {maximum}")
    return value


def number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:
        raise ConfigError(f"{name}={value:g} must be at least {minimum:g}")
    return value


def log_level(env: Mapping[str, str]) -> str:
    raw = env.get(LOG_LEVEL, "INFO")
    try:
        return parse_log_level(raw)
    except ValueError as error:
        raise ConfigError(f"{LOG_LEVEL}={raw!r} {error}") from None


def trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    """``LIFTOFF_TRUSTED_PROXIES``: comma-separated addresses or CIDRs whose X-Forwarded-For is
    believed (e.g. the ingress controller's pod network). Default: none, the header is ignored."""
    import ipaddress

    networks = []
    for item in env.get(TRUSTED_PROXIES, "").split(","):
        if not item.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ConfigError(
                f"{TRUSTED_PROXIES} item {item.strip()!r} is not an IP address or CIDR "
                "(e.g. 10.0.0.0/8,fd00::/8)"
            ) from None
    return tuple(networks)


def no_ip_sources(env: Mapping[str, str], keys: WriteKeys) -> frozenset[str]:
    """``LIFTOFF_IP_COLLECTION_OFF``: comma-separated source names that keep no IP address."""
    names = frozenset(n.strip() for n in env.get(NO_IP_SOURCES, "").split(",") if n.strip())
    unknown = sorted(names - set(keys.sources))
    if unknown:
        raise ConfigError(
            f"{NO_IP_SOURCES} names unknown sources {unknown}: use names of the write keys "
            f"({', '.join(keys.sources)})"
        )
    return names


@dataclass(frozen=True)
class HttpLimits:
    """Per worker process, enforced by :mod:`services.collector.http_limits` (uvicorn has none of
    the first three, and answers its own concurrency limit only once a request's headers are in)."""

    max_header_bytes: int = 64 * 1024
    """Default: 64 KiB (request line + headers); larger gets 431 and the connection closed."""
    header_timeout_seconds: float = 10.0
    """Default: 10. From connect (or the first byte of a keep-alive request) to the end of the
    headers; then 408 and close."""
    body_timeout_seconds: float = 30.0
    """Default: 30. From the end of the headers to the end of the body; then the connection is
    closed and nothing of the request published."""
    max_connections: int = 512
    """Default: 512. Open connections per worker; more are closed as soon as they connect."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpLimits:
        return cls(
            max_header_bytes=integer(env, HTTP_MAX_HEADER_BYTES, 64 * 1024, 1024, 1024 * 1024),
            header_timeout_seconds=number(env, HTTP_HEADER_TIMEOUT, 10.0, 0.1),
            body_timeout_seconds=number(env, HTTP_BODY_TIMEOUT, 30.0, 0.1),
            max_connections=integer(env, HTTP_MAX_CONNECTIONS, 512, 1, 100_000),
        )


def collector_quarantine_url(env: Mapping[str, str], stream: str) -> str | None:
    """Where the collector quarantines invalid events: ``LIFTOFF_DEAD_LETTER_URL``; on
    JetStream it defaults to the stream's servers + ``/DEADLETTER``. None on Kinesis when unset
    (then an invalid event fails its request with 400)."""
    if stream.startswith("kinesis://") and not env.get(DEAD_LETTER_URL, "").strip():
        return None
    return dead_letter_url(env, stream)


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
    """Where browsers reach the collector (``LIFTOFF_PUBLIC_URL``), for analytics.js's
    settings; default: the request's own Host and scheme."""
    analytics_js_dir: Path
    """``LIFTOFF_ANALYTICS_JS_DIR``; default: ``services/static/analytics-next`` (the image)."""
    tls_cert_file: str | None
    tls_key_file: str | None
    """``LIFTOFF_TLS_CERT_FILE`` / ``LIFTOFF_TLS_KEY_FILE``: serve HTTPS (PEM files)."""
    quarantine_url: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    no_ip_sources: frozenset[str] = frozenset()
    http_limits: HttpLimits = HttpLimits()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CollectorConfig:
        url = stream_url(env)
        keys = write_keys(env)
        cert = env.get(TLS_CERT_FILE, "").strip() or None
        key = env.get(TLS_KEY_FILE, "").strip() or None
        if (cert is None) != (key is None):
            raise ConfigError(f"set both {TLS_CERT_FILE} and {TLS_KEY_FILE}, or neither")
        return cls(
            stream_url=url,
            write_keys=keys,
            host=env.get(HOST, "").strip() or "0.0.0.0",
            port=integer(env, PORT, 8080, 1, 65535),
            log_level=log_level(env),
            workers=integer(env, WORKERS, 1, 1, 64),
            allowed_origins=allowed_origins(env, keys),
            public_url=public_url(env),
            analytics_js_dir=Path(env.get(ANALYTICS_JS_DIR, "").strip() or DEFAULT_LIBRARY_DIR),
            tls_cert_file=cert,
            tls_key_file=key,
            quarantine_url=collector_quarantine_url(env, url),
            trusted_proxies=trusted_proxies(env),
            no_ip_sources=no_ip_sources(env, keys),
            http_limits=HttpLimits.from_env(env),
        )


@dataclass(frozen=True)
class EnsureStreamConfig:
    stream_url: str
    settings: StreamSettings
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EnsureStreamConfig:
        settings = StreamSettings(
            retention_hours=number(env, RETENTION_HOURS, 168.0, 0.001),
            replicas=integer(env, REPLICAS, 1, 1, 5),
            duplicate_window_seconds=number(env, DUPLICATE_WINDOW, 120.0, 0.001),
            max_bytes=integer(env, MAX_BYTES, -1, -1, 2**53) or -1,
        )
        if settings.duplicate_window_seconds > settings.retention_hours * 3600:
            raise ConfigError(f"{DUPLICATE_WINDOW} must not exceed {RETENTION_HOURS} * 3600")
        return cls(stream_url(env, ("nats",)), settings, log_level(env))


# --- stream consumers (archiver, loader, broadcaster) ---------------------------------------


def consumer_name(env: Mapping[str, str], default: str) -> str:
    import re

    name = env.get(CONSUMER_NAME, "").strip() or default
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ConfigError(f"{CONSUMER_NAME}={name!r} must be letters, digits, '_' or '-'")
    return name


def dead_letter_url(env: Mapping[str, str], stream: str | None) -> str:
    """``LIFTOFF_DEAD_LETTER_URL``; on JetStream it defaults to the stream's servers +
    ``/DEADLETTER``. On Lambda (``stream`` None) it must be set (``sqs://<queue>``)."""
    url = env.get(DEAD_LETTER_URL, "").strip()
    if not url:
        if stream is None:
            raise ConfigError(f"{DEAD_LETTER_URL} is not set (e.g. sqs://<queue-name>)")
        servers = stream.partition("://")[2].partition("/")[0]
        return f"nats://{servers}/DEADLETTER"
    scheme = url.partition("://")[0]
    if scheme not in ("nats", "sqs") or not url.partition("://")[2].strip("/"):
        raise ConfigError(
            f"{DEAD_LETTER_URL}={url!r} is not supported: use nats://host:port/DEADLETTER "
            "or sqs://<queue-name>"
        )
    return url


def health_host(env: Mapping[str, str]) -> str:
    import ipaddress

    raw = env.get(HEALTH_HOST, "").strip() or "0.0.0.0"
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(
            f"{HEALTH_HOST}={raw!r} is not an IP address (e.g. 0.0.0.0, or 127.0.0.1 for "
            "loopback only)"
        ) from None
    return raw


@dataclass(frozen=True)
class ConsumerConfig:
    """What every consumer runtime needs; ``stream_url`` is None on Lambda (records arrive in
    the invocation event)."""

    consumer_name: str
    stream_url: str | None
    dead_letter_url: str
    log_level: str
    batch_max_events: int
    batch_max_seconds: float
    ack_wait_seconds: float
    shutdown_grace_seconds: float
    health_port: int
    lag_interval_seconds: float = 15.0
    health_host: str = "0.0.0.0"
    """``LIFTOFF_HEALTH_HOST``: where the probes listen (default all addresses, for the
    kubelet; liftoff local keeps them on 127.0.0.1)."""

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        default_name: str,
        batch_events: tuple[str, int] | None = None,
        batch_seconds: tuple[str, float] | None = None,
        on_lambda: bool = False,
    ) -> ConsumerConfig:
        url = None if on_lambda else stream_url(env, ("nats",))
        events_var, events_default = batch_events or ("", 1000)
        seconds_var, seconds_default = batch_seconds or ("", 5.0)
        return cls(
            consumer_name=consumer_name(env, default_name),
            stream_url=url,
            dead_letter_url=dead_letter_url(env, url),
            log_level=log_level(env),
            batch_max_events=(
                integer(env, events_var, events_default, 1, 1_000_000)
                if events_var
                else events_default
            ),
            batch_max_seconds=(
                number(env, seconds_var, seconds_default, 0.01) if seconds_var else seconds_default
            ),
            ack_wait_seconds=number(env, ACK_WAIT, 30.0, 1.0),
            shutdown_grace_seconds=number(env, SHUTDOWN_GRACE, 20.0, 0.0),
            health_port=integer(env, HEALTH_PORT, 8081, 0, 65535),
            lag_interval_seconds=number(env, LAG_INTERVAL, 15.0, 0.5),
            health_host=health_host(env),
        )

    def runner_settings(self) -> object:
        """The JetStream runner's settings (imported lazily: config stays import-light)."""
        from services.consumers.runner.jetstream import RunnerSettings

        return RunnerSettings(
            consumer_name=self.consumer_name,
            batch_max_events=self.batch_max_events,
            batch_max_seconds=self.batch_max_seconds,
            ack_wait_seconds=self.ack_wait_seconds,
            shutdown_grace_seconds=self.shutdown_grace_seconds,
            health_port=self.health_port or None,
            health_host=self.health_host,
            lag_interval_seconds=self.lag_interval_seconds,
        )
