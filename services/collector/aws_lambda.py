"""The collector as an AWS Lambda function behind API Gateway HTTP API (payload format 2.0).

Handler: ``services.aws_lambda.collector_handler`` (this module is its code). Same validation
and publish code as the container (:class:`services.collector.ingest.Collector`), publishing
to Kinesis. Its environment: :class:`services.collector.contract.CollectorFunctionSettings`
(the write keys inline, or in the Secrets Manager secret ``LIFTOFF_WRITE_KEYS_SECRET_ARN``,
read once per cold start; ``LIFTOFF_DEAD_LETTER_URL``, ``sqs://<queue>``, the quarantine for
invalid events of valid requests: unset, such a request is refused with 400). Routes, CORS
(preflight included: the API's edge CORS is off, so one policy answers on both targets) and
the analytics.js routes are the container's (:mod:`services.collector.app`); analytics.js is
read from ``services/static/analytics-next`` in the package (:mod:`components.packaging` puts
it there). ``context.ip`` is filled from API Gateway's ``requestContext.http.sourceIp`` (the
TCP peer of API Gateway).
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

from services.collector import contract
from services.collector.browser import (
    DEFAULT_LIBRARY_DIR,
    AllowedOrigins,
    Library,
    browser_route,
)
from services.collector.config import load_sources, quarantine_url, write_keys
from services.collector.ingest import ROUTES, Collector, IngestRequest, Response, json_response
from services.collector.request_headers import RequestHeaders
from services.contract import level_of
from services.events.limits import MAX_REQUEST_BYTES, InvalidInput
from services.events.write_keys import WriteKeys
from services.observability import configure_logging
from services.stream.contract import stream_url
from services.stream.kinesis import KinesisStream
from services.suppression.lists import SuppressionConfig, key_in_secret


@dataclass
class _Runtime:
    collector: Collector
    loop: asyncio.AbstractEventLoop


_runtime: _Runtime | None = None


@dataclass(frozen=True)
class LambdaCollectorSettings:
    log_level: str
    stream_url: str
    write_keys: WriteKeys
    quarantine_url: str | None
    allowed_origins: AllowedOrigins
    public_url: str | None
    no_ip_sources: frozenset[str]
    suppression: SuppressionConfig | None = None
    """Read on the first request and again on the first after it is older than the refresh
    interval (the function is frozen between invocations: no background refresh)."""


def _read_secret(arn: str) -> str:
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    return str(secret.get("SecretString") or "")


def load(settings: contract.CollectorFunctionSettings[str]) -> LambdaCollectorSettings:
    """What the function runs with: its settings with the write keys read (from Secrets
    Manager when the secret is named); no connection to the stream is opened."""
    url = stream_url(settings.stream, ("kinesis",))
    arn = settings.write_keys_secret_arn
    keys = write_keys(settings.sources, (lambda: _read_secret(arn)) if arn else None)
    sources = load_sources(settings.sources, keys)
    return LambdaCollectorSettings(
        log_level=level_of(settings.log_level),
        stream_url=url,
        write_keys=keys,
        quarantine_url=quarantine_url(settings.quarantine_url, url),
        allowed_origins=sources.allowed_origins,
        public_url=sources.public_url,
        no_ip_sources=sources.no_ip_sources,
        suppression=SuppressionConfig.of(
            settings.suppression, key_in_secret(settings.suppression_key_secret_arn)
        ),
    )


def collector_settings(env: Mapping[str, str]) -> LambdaCollectorSettings:
    """What the collector function reads from its environment (the write keys from Secrets
    Manager); no connection is opened."""
    return load(contract.parse_function(env))


def _start(env: Mapping[str, str]) -> _Runtime:
    from services.collector.quarantine import open_quarantine

    settings = collector_settings(env)
    configure_logging(settings.log_level)
    quarantine_url = settings.quarantine_url
    collector = Collector(
        KinesisStream.from_url(settings.stream_url),
        settings.write_keys,
        origins=settings.allowed_origins,
        library=Library(DEFAULT_LIBRARY_DIR),
        public_url=settings.public_url,
        quarantine=open_quarantine(quarantine_url) if quarantine_url else None,
        no_ip_sources=settings.no_ip_sources,
        suppression=settings.suppression.reader() if settings.suppression else None,
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
    route = browser_route(path)
    if route is None:
        return None
    if method == "OPTIONS":
        return collector.preflight(headers.origin)
    if method not in ("GET", "HEAD"):
        error = InvalidInput(405, "method_not_allowed", f"{method} {path}: use GET")
        label = "/v1/projects/settings" if route.write_key is not None else "static"
        return collector.reject(label, error)
    if route.write_key is not None:
        # API Gateway is reached over HTTPS only; a named stage is part of the public path.
        host = request_context.get("domainName") or headers.host
        stage = request_context.get("stage", "$default")
        prefix = "" if stage == "$default" else f"/{stage}"
        return collector.settings(route.write_key, host, "https", headers.origin, prefix)
    return collector.static_file(route.file, headers.if_none_match, headers.accept_encoding)


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
    except InvalidInput as unreadable:
        return collector.reject(route, unreadable)
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
