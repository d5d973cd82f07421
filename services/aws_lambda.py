"""The collector as an AWS Lambda function behind API Gateway HTTP API (payload format 2.0).

Handler: ``services.aws_lambda.collector_handler``. Same validation and publish code as the
container (:class:`services.collector.ingest.Collector`), publishing to Kinesis.

Environment: ``LIFTOFF_STREAM_URL`` (``kinesis://<stream-name>``), and the write keys either in
``LIFTOFF_WRITE_KEYS`` (JSON) or in the Secrets Manager secret ``LIFTOFF_WRITE_KEYS_SECRET_ARN``
(its SecretString is that JSON), read once per cold start. ``LIFTOFF_LOG_LEVEL``,
``LIFTOFF_ALLOWED_ORIGINS`` and ``LIFTOFF_PUBLIC_URL`` as in the container. Routes, CORS
(preflight included: the API's edge CORS is off, so one policy answers on both targets) and
the analytics.js routes are the container's (:mod:`services.collector.app`); analytics.js is read
from ``services/static/analytics-next`` in the package (:mod:`components.packaging` puts it there).
``LIFTOFF_DEAD_LETTER_URL`` (``sqs://<queue>``): the quarantine for invalid events of valid
requests (:mod:`services.collector.quarantine`); unset, such a request is refused with 400.
``LIFTOFF_IP_COLLECTION_OFF``: sources whose events keep no IP address. ``context.ip`` is filled
from API Gateway's ``requestContext.http.sourceIp`` (the TCP peer of API Gateway).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from services import config
from services.collector.browser import (
    BUNDLE_PATH,
    DEFAULT_LIBRARY_DIR,
    LIBRARY_PATH,
    SETTINGS_PATH,
    AllowedOrigins,
    Library,
)
from services.collector.ingest import ROUTES, Collector, IngestRequest, Response, json_response
from services.collector.request_headers import RequestHeaders
from services.config import ConfigError
from services.events.segment import MAX_REQUEST_BYTES, InvalidInput
from services.events.write_keys import WriteKeys
from services.observability import configure_logging
from services.stream.kinesis import KinesisStream


@dataclass
class _Runtime:
    collector: Collector
    loop: asyncio.AbstractEventLoop


_runtime: _Runtime | None = None


def _write_keys(env: Mapping[str, str]) -> WriteKeys:
    secret_arn = env.get(config.WRITE_KEYS_SECRET_ARN, "").strip()
    if not secret_arn:
        return config.write_keys(env)
    if env.get(config.WRITE_KEYS, "").strip():
        raise ConfigError(f"set only one of {config.WRITE_KEYS} and {config.WRITE_KEYS_SECRET_ARN}")
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    try:
        return WriteKeys.from_json(secret.get("SecretString") or "")
    except ValueError as error:
        raise ConfigError(f"the secret {config.WRITE_KEYS_SECRET_ARN} names {error}") from None


@dataclass(frozen=True)
class LambdaCollectorSettings:
    log_level: str
    stream_url: str
    write_keys: WriteKeys
    quarantine_url: str | None
    allowed_origins: AllowedOrigins
    public_url: str | None
    no_ip_sources: frozenset[str]


def collector_settings(env: Mapping[str, str]) -> LambdaCollectorSettings:
    """What the collector function reads from its environment (the write keys from Secrets
    Manager); no connection is opened."""
    url = config.stream_url(env, ("kinesis",))
    keys = _write_keys(env)
    return LambdaCollectorSettings(
        log_level=config.log_level(env),
        stream_url=url,
        write_keys=keys,
        quarantine_url=config.collector_quarantine_url(env, url),
        allowed_origins=config.allowed_origins(env, keys),
        public_url=config.public_url(env),
        no_ip_sources=config.no_ip_sources(env, keys),
    )


def _start(env: Mapping[str, str]) -> _Runtime:
    configure_logging(config.log_level(env))
    from services.collector.quarantine import open_quarantine

    settings = collector_settings(env)
    quarantine_url = settings.quarantine_url
    collector = Collector(
        KinesisStream.from_url(settings.stream_url),
        settings.write_keys,
        origins=settings.allowed_origins,
        library=Library(DEFAULT_LIBRARY_DIR),
        public_url=settings.public_url,
        quarantine=open_quarantine(quarantine_url) if quarantine_url else None,
        no_ip_sources=settings.no_ip_sources,
    )
    # One loop per execution environment, reused across invocations (boto3 runs on threads).
    loop = asyncio.new_event_loop()
    if collector.quarantine is not None:
        loop.run_until_complete(collector.quarantine.start())
    return _Runtime(collector, loop)


def _path(path: str, stage: str) -> str:
    # A named stage prefixes rawPath ("/prod/v1/batch"); the $default stage does not.
    prefix = f"/{stage}/"
    return path[len(prefix) - 1 :] if stage != "$default" and path.startswith(prefix) else path


def _answer(response: Response, head: bool = False) -> dict[str, Any]:
    headers: dict[str, str] = {"content-type": response.content_type}
    for name, value in response.headers:
        # Repeated names (Vary) are joined, as HTTP allows.
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    binary = "content-encoding" in headers
    body = b"" if head else response.body
    return {
        "statusCode": response.status,
        "headers": headers,
        "body": base64.b64encode(body).decode() if binary else body.decode(),
        "isBase64Encoded": binary,
    }


def _not_found() -> Response:
    document = {"success": False, "code": "not_found", "message": "no such path"}
    return json_response(404, document, [])


def _browser_route(
    collector: Collector,
    path: str,
    method: str,
    headers: RequestHeaders,
    request_context: Mapping[str, Any],
) -> Response | None:
    settings = SETTINGS_PATH.match(path)
    library = None if settings else LIBRARY_PATH.match(path)
    bundle = None if settings or library else BUNDLE_PATH.match(path)
    if not (settings or library or bundle):
        return None
    if method == "OPTIONS":
        return collector.preflight(headers.origin)
    if method not in ("GET", "HEAD"):
        error = InvalidInput(405, "method_not_allowed", f"{method} {path}: use GET")
        return collector.reject("/v1/projects/settings" if settings else "static", error)
    if settings:
        # API Gateway is reached over HTTPS only; a named stage is part of the public path.
        host = request_context.get("domainName") or headers.host
        stage = request_context.get("stage", "$default")
        prefix = "" if stage == "$default" else f"/{stage}"
        return collector.settings(settings.group(1), host, "https", headers.origin, prefix)
    return collector.static_file(
        "standalone.js" if library else bundle.group(1),  # type: ignore[union-attr]
        headers.if_none_match,
        headers.accept_encoding,
    )


def collector_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    global _runtime
    if _runtime is None:
        _runtime = _start(os.environ)
    collector = _runtime.collector

    request_context = event.get("requestContext") or {}
    http = request_context.get("http", {})
    method = http.get("method", "")
    path = _path(event.get("rawPath") or http.get("path", ""), request_context.get("stage", ""))
    head = method == "HEAD"
    try:
        # HTTP API lower-cases names and joins repeats with commas.
        headers = RequestHeaders.from_mapping(event.get("headers") or {})
    except InvalidInput as error:
        label = path if path in ROUTES else "other"
        return _answer(collector.with_cors(collector.reject(label, error), None), head)
    origin = headers.origin
    browser = _browser_route(collector, path, method, headers, request_context)
    if browser is not None:
        return _answer(collector.with_cors(browser, origin), head)
    if path not in ROUTES:
        return _answer(collector.with_cors(_not_found(), origin), head)
    return _answer(collector.with_cors(_ingest(collector, path, method, headers, event), origin))


def _body(event: Mapping[str, Any]) -> bytes:
    """The request body API Gateway passed on: base64 when it was not text, else text."""
    raw_body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw_body, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise InvalidInput(400, "malformed_body", "body is not valid base64") from None
    try:
        return raw_body.encode()
    except UnicodeEncodeError as error:
        raise InvalidInput(
            400,
            "invalid_utf8",
            f"request body: not valid UTF-8 (a lone surrogate at character {error.start})",
        ) from None


def _ingest(
    collector: Collector,
    route: str,
    method: str,
    headers: RequestHeaders,
    event: dict[str, Any],
) -> Response:
    assert _runtime is not None
    if method == "OPTIONS":
        return collector.preflight(headers.origin)
    if method != "POST":
        error = InvalidInput(405, "method_not_allowed", f"{method} {route}: use POST")
        return collector.reject(route, error)
    try:
        body = _body(event)
    except InvalidInput as error:
        return collector.reject(route, error)
    if len(body) > MAX_REQUEST_BYTES:
        error = InvalidInput(
            413, "request_too_large", f"request body exceeds {MAX_REQUEST_BYTES} bytes"
        )
        return collector.reject(route, error)

    request = IngestRequest(
        route=route,
        body=body,
        content_type=headers.content_type,
        content_encoding=headers.content_encoding,
        authorization=headers.authorization,
        origin=headers.origin,
        client_ip=(event.get("requestContext") or {}).get("http", {}).get("sourceIp") or None,
    )
    return _runtime.loop.run_until_complete(collector.ingest(request))


def reset_for_tests() -> None:
    """Forget the cold-start state (tests start several 'cold starts' in one process)."""
    global _runtime
    if _runtime is not None:
        _runtime.loop.run_until_complete(_runtime.collector.stream.close())
        _runtime.loop.close()
    _runtime = None


# --- stream consumers on Kinesis event-source mappings (services.consumers.runner.kinesis) --------


def _build_archiver(env: Mapping[str, str]) -> Any:
    from services.consumers.archiver.sink import Archiver

    return Archiver.from_env(env)


def _build_loader(env: Mapping[str, str]) -> Any:
    from services.consumers.loader.sink import Loader

    return Loader.from_env(env)


def _lambda_consumer(name: str, build: Any) -> Any:
    from services.consumers.runner.kinesis import LambdaConsumer

    return LambdaConsumer(name, build)


def _build_broadcaster(env: Mapping[str, str]) -> Any:
    from services.consumers.broadcaster.sink import BroadcastSink

    return BroadcastSink.from_env(env)


archiver_consumer = _lambda_consumer("archiver", _build_archiver)
broadcaster_consumer = _lambda_consumer("broadcaster", _build_broadcaster)
loader_consumer = _lambda_consumer("loader", _build_loader)


def archiver_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Kinesis batch → S3 archive; returns ``{"batchItemFailures": [...]}``."""
    return archiver_consumer(event, context)


def loader_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Kinesis batch → Postgres warehouse; returns ``{"batchItemFailures": [...]}``."""
    return loader_consumer(event, context)


def broadcaster_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Kinesis batch → one destination (``LIFTOFF_DESTINATION``); retries stop before the
    invocation's deadline and unfinished records are reported as ``batchItemFailures``."""
    from services.consumers.broadcaster.sink import DEADLINE, lambda_deadline

    token = DEADLINE.set(lambda_deadline(context))
    try:
        return broadcaster_consumer(event, context)
    finally:
        DEADLINE.reset(token)


# --- warehouse reconciliation (invoked by the platform's DAG, dags/liftoff_reconcile.py) ------


def reconcile_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Repair one UTC hour of the warehouse from the archive
    (:mod:`services.consumers.reconcile.repair`).

    ``event``: ``{"hour": "2026-11-27T10"}`` or ``{"hoursAgo": 1}``. Returns the summary; raises
    when the hour could not be fully reconciled (a corrupt archive object, S3 or PostgreSQL
    down), so the invocation — and the Airflow task waiting on it — fails."""
    from services.consumers.reconcile import repair as reconcile

    configure_logging(config.log_level(os.environ))
    event = event or {}
    if event.get("hour") is not None:
        hour = reconcile.parse_hour(str(event["hour"]))
    elif event.get("hoursAgo") is not None:
        try:
            count = int(event["hoursAgo"])
        except (TypeError, ValueError):
            raise ConfigError(f"hoursAgo {event['hoursAgo']!r} is not an integer") from None
        hour = reconcile.hours_ago(count)
    else:
        raise ConfigError('the event needs "hour" (e.g. "2026-11-27T10") or "hoursAgo"')
    summary = reconcile.reconcile_hour(os.environ, hour)
    if not summary.ok:
        raise reconcile.ReconcileIncomplete(summary)
    return summary.as_dict()


# --- client databases on RDS (invoked by the Postgres component at deploy time) ----------------


def ensure_database_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Create or update one client's role and database on RDS
    (:func:`services.postgres.database.lambda_handler`: ``{"clientSecretArn": ...}``)."""
    from services.postgres.database import lambda_handler

    return lambda_handler(event, context)
