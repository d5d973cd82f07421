"""The collector as a plain ASGI application (no framework: the hot path is a dict lookup).

Routes: ``POST /v1/{batch,import,track,identify,page,screen,group,alias}`` and analytics.js's
short aliases ``/v1/{b,t,i,p,s,g,a}``; ``GET``/``HEAD`` ``/v1/projects/<writeKey>/settings``,
``/analytics.js/v1/<writeKey>/analytics.min.js`` and ``/analytics-next/bundles/<chunk>``
(:mod:`services.collector.browser`); ``GET /healthz`` (liveness: the process answers), ``GET
/readyz`` (readiness: the stream is reachable and exists), ``GET /metrics`` (Prometheus text format,
this process). ``OPTIONS`` (CORS preflight) on every route; CORS headers on every response.
The lifespan protocol starts and closes the stream adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services.collector.browser import browser_route
from services.collector.ingest import ROUTES, Collector, IngestRequest, Response, json_response
from services.collector.request_headers import RequestHeaders, client_address
from services.events.limits import MAX_REQUEST_BYTES, InvalidInput

log = logging.getLogger("liftoff.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_NOT_FOUND = Response(404, b'{"success":false,"code":"not_found","message":"no such path"}')
_HEALTHY = Response(200, b'{"status":"ok"}')


def _method_not_allowed(allowed: str) -> Response:
    return json_response(
        405,
        {"success": False, "code": "method_not_allowed", "message": f"use {allowed}"},
        [("allow", allowed)],
    )


class _TooLarge(Exception):
    pass


class CollectorApp:
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self._http(scope, receive)
            if response is not None:
                await _send(send, response, head=scope["method"] == "HEAD")
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive) -> Response | None:
        try:
            headers = RequestHeaders.from_raw(scope["headers"])
        except InvalidInput as error:
            # No origin is believed (it may be the header at fault): CORS as for none.
            return self.collector.with_cors(self.collector.reject(_route_label(scope), error), None)
        response = await self._route(scope, receive, headers)
        if response is None:
            return None
        return self.collector.with_cors(response, headers.origin)

    async def _route(
        self, scope: Scope, receive: Receive, headers: RequestHeaders
    ) -> Response | None:
        path: str = scope["path"]
        method: str = scope["method"]
        origin = headers.origin
        if path in ROUTES:
            if method == "POST":
                return await self._ingest(path, scope, receive, headers)
            if method == "OPTIONS":
                return self.collector.preflight(origin)
            return self.collector.reject(
                path,
                InvalidInput(405, "method_not_allowed", f"{method} {path}: use POST"),
            )
        browser = self._browser_route(scope, path, method, headers)
        if browser is not None:
            return browser
        if method == "OPTIONS" and path in _READ_ROUTES:
            return self.collector.preflight(origin)
        if method not in ("GET", "HEAD"):
            return _method_not_allowed("GET, HEAD") if path in _READ_ROUTES else _NOT_FOUND
        if path == "/healthz":
            return _HEALTHY
        if path == "/readyz":
            return await self.collector.readiness()
        if path == "/metrics":
            return self.collector.metrics()
        return _NOT_FOUND

    def _browser_route(
        self, scope: Scope, path: str, method: str, headers: RequestHeaders
    ) -> Response | None:
        route = browser_route(path)
        if route is None:
            return None
        if method == "OPTIONS":
            return self.collector.preflight(headers.origin)
        if method not in ("GET", "HEAD"):
            return _method_not_allowed("GET, HEAD")
        if route.write_key is not None:
            return self.collector.settings(
                route.write_key, headers.host, scope["scheme"], headers.origin
            )
        return self.collector.static_file(
            route.file, headers.if_none_match, headers.accept_encoding
        )

    async def _ingest(
        self, path: str, scope: Scope, receive: Receive, headers: RequestHeaders
    ) -> Response | None:
        client = scope.get("client")
        try:
            # uvicorn has already replaced the peer with X-Forwarded-For's client when the peer
            # is a trusted proxy (LIFTOFF_TRUSTED_PROXIES; none by default): see services.cli.
            client_ip = client_address(client[0] if client else None)
        except InvalidInput as error:
            return self.collector.reject(path, error)
        request = IngestRequest(
            route=path,
            body=b"",
            content_type=headers.content_type,
            content_encoding=headers.content_encoding,
            authorization=headers.authorization,
            origin=headers.origin,
            client_ip=client_ip,
        )
        too_large = InvalidInput(
            413, "request_too_large", f"request body exceeds {MAX_REQUEST_BYTES} bytes"
        )
        # The HTTP parser has already refused a Content-Length that is not a number; longer
        # than the limit's digits is past it.
        declared = headers.content_length or ""
        if (
            declared.isascii()
            and declared.isdigit()
            and (len(declared) > len(str(MAX_REQUEST_BYTES)) or int(declared) > MAX_REQUEST_BYTES)
        ):
            return self.collector.reject(path, too_large)
        try:
            body = await _read_body(receive, MAX_REQUEST_BYTES)
        except _TooLarge:
            return self.collector.reject(path, too_large)
        if body is None:
            return None  # the client went away; nothing to answer, nothing published
        request.body = body
        return await self.collector.ingest(request)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.collector.stream.start()
                    if self.collector.quarantine is not None:
                        await self.collector.quarantine.start()
                    if self.collector.suppression is not None:
                        await self.collector.suppression.start()
                except Exception as error:
                    log.exception("stream adapter failed to start")
                    await send({"type": "lifespan.startup.failed", "message": repr(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.collector.stream.close()
                if self.collector.quarantine is not None:
                    await self.collector.quarantine.close()
                if self.collector.suppression is not None:
                    await self.collector.suppression.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


_READ_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def _route_label(scope: Scope) -> str:
    """The route a refusal is counted under: a known path, else one label for the rest (a
    client-chosen path must not become a metric label)."""
    path = scope.get("path", "")
    return path if path in ROUTES or path in _READ_ROUTES else "other"


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send: Send, response: Response, head: bool = False) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
    ]
    headers.extend((name.encode(), value.encode()) for name, value in response.headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})
