"""The collector's request handling, independent of the transport (ASGI server or Lambda).

Order of checks for ``POST /v1/<route>``: content type (415), write key in the ``Authorization``
header when one is sent (401), content encoding (415) and gzip (400/413), body size (413),
JSON envelope (400), write key in the body when no header was sent (401), the browser's
``Origin`` against the source's allowed origins (403), then each event on its own: valid ones
are published to the stream, invalid ones put in the quarantine with their reason
(:mod:`services.collector.quarantine`) first (503 with ``Retry-After`` unless both acknowledged
everything). The answer is 200 only after that: ``{"success": true}``, plus
``"quarantined": N`` and ``"rejected": [{"index", "code", "reason", "field"}]`` when events were
quarantined (SDKs ignore the extra fields). Without a quarantine configured, an invalid event
fails its whole request with 400 and nothing is published.

CORS headers are added by the transports to every response (:meth:`Collector.with_cors`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from services.collector import browser
from services.collector.browser import AllowedOrigins, Library
from services.collector.quarantine import Quarantine, QuarantineUnavailable
from services.collector.request_headers import shown
from services.events.limits import MAX_REQUEST_BYTES, InvalidInput
from services.events.model import StreamRecord, format_timestamp
from services.events.records import REJECTION_CODES, Rejected, validate_events
from services.events.segment import parse_body
from services.events.write_keys import (
    BASIC_FORM,
    InvalidCredentials,
    WriteKeys,
    basic_auth_username,
)
from services.observability import Counters
from services.stream.base import EventStream, StreamUnavailable
from services.suppression.lists import SuppressedIds

log = logging.getLogger("liftoff.collector")

# Path → event type; None is the batch endpoint (``/v1/import`` is Segment's older name for it).
ROUTES: dict[str, str | None] = {
    "/v1/batch": None,
    "/v1/import": None,
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
    # The short paths analytics.js (analytics-next) posts to: first letter of the type, and
    # "b" for its batching delivery ({"batch": [...], "writeKey", "sentAt"}).
    "/v1/b": None,
    "/v1/t": "track",
    "/v1/i": "identify",
    "/v1/p": "page",
    "/v1/s": "screen",
    "/v1/g": "group",
    "/v1/a": "alias",
}
# analytics.js posts with text/plain so that browsers skip the CORS preflight.
ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "text/plain", ""})
RETRY_AFTER_SECONDS = "5"
MAX_GZIP_MEMBERS = 100
"""Real clients send one gzip member; each costs ~30 us to set up, so 500 KB of tiny members
would cost ~0.7 s of CPU per request: more are refused."""
READINESS_TIMEOUT_SECONDS = 3.0

REQUEST_DURATION = "liftoff_collector_request_duration_seconds"
QUARANTINED = "liftoff_collector_events_quarantined_total"
SUPPRESSED = "liftoff_collector_suppressed_total"
# Around the contract's default p99 threshold (1 s) finely enough to place it.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_SUCCESS = b'{"success":true}'
_json_encoder = msgspec.json.Encoder()


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


@dataclass(slots=True)
class IngestRequest:
    route: str
    body: bytes
    content_type: str = ""
    content_encoding: str = ""
    authorization: str | None = None
    origin: str | None = None
    client_ip: str | None = None
    """The client's address as the transport established it (peer, trusted proxy's
    X-Forwarded-For, or API Gateway's sourceIp); fills ``context.ip`` when the event has none."""


def json_response(status: int, document: object, headers: list[tuple[str, str]]) -> Response:
    return Response(status, _json_encoder.encode(document), headers)


def _origin_refused(origin: str | None) -> InvalidInput:
    return InvalidInput(
        403,
        "origin_not_allowed",
        f"origin {origin!r} is not in the allowed origins of this write key's source",
    )


def _write_key_of(authorization: str) -> str | None:
    try:
        return basic_auth_username(authorization)
    except InvalidCredentials as error:
        # The credentials are not quoted back: they may be a real key, mangled.
        raise InvalidInput(
            401,
            "invalid_write_key",
            f"header Authorization: {error}; send the write key as {BASIC_FORM}",
            field="Authorization",
        ) from None


def decode_content(body: bytes, content_encoding: str) -> bytes:
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise InvalidInput(
            415,
            "unsupported_content_encoding",
            f"header Content-Encoding: {shown(encoding)} is not accepted: use gzip (one coding), "
            "or none",
            field="Content-Encoding",
        )
    # RFC 1952 allows several members one after another (what `cat a.gz b.gz` makes), and
    # gzip.decompress reads them all: so do we, all within one output bound, never dropping any.
    decoded = bytearray()
    remaining = body
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # Bounded output: a small gzip bomb must not expand past the request limit.
            decoded += inflater.decompress(remaining, MAX_REQUEST_BYTES + 1 - len(decoded))
        except zlib.error as error:
            raise InvalidInput(
                400, "malformed_gzip", f"request body is not valid gzip: {error}"
            ) from None
        if len(decoded) > MAX_REQUEST_BYTES or (inflater.unconsumed_tail and not inflater.eof):
            raise InvalidInput(
                413,
                "request_too_large",
                f"decompressed request body exceeds the limit of {MAX_REQUEST_BYTES} bytes",
            )
        if not inflater.eof:
            raise InvalidInput(400, "malformed_gzip", "request body is truncated gzip")
        remaining = inflater.unused_data
        if not remaining:
            return bytes(decoded)
    raise InvalidInput(
        400, "malformed_gzip", f"request body has more than {MAX_GZIP_MEMBERS} gzip members"
    )


class Collector:
    def __init__(
        self,
        stream: EventStream,
        write_keys: WriteKeys,
        counters: Counters | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        origins: AllowedOrigins | None = None,
        library: Library | None = None,
        public_url: str | None = None,
        quarantine: Quarantine | None = None,
        no_ip_sources: frozenset[str] = frozenset(),
        suppression: SuppressedIds | None = None,
    ) -> None:
        self.stream = stream
        self.write_keys = write_keys
        self.origins = (origins or AllowedOrigins()).with_sources(write_keys.sources)
        self.library = library or Library(browser.DEFAULT_LIBRARY_DIR)
        self.public_url = public_url
        self.quarantine = quarantine
        """Where invalid events of a valid request go. None: such a request is refused (400)."""
        self.no_ip_sources = no_ip_sources
        """Sources whose events keep no IP address (``context.ip`` neither filled nor kept)."""
        self.suppression = suppression
        """Events of a listed id are answered 200 and dropped (as Segment does: no retries)."""
        self.counters = counters or Counters()
        self.clock = clock
        self._describe_metrics()

    def _describe_metrics(self) -> None:
        self.counters.describe(
            SUPPRESSED, "Events answered 200 and dropped: their user is suppressed, by source."
        )
        if self.suppression is not None:
            for known_source in self.write_keys.sources:
                self.counters.add(SUPPRESSED, 0, source=known_source)
        self.counters.describe(
            "liftoff_collector_requests_total", "Ingestion requests by route and status."
        )
        self.counters.describe(
            "liftoff_collector_events_accepted_total",
            "Events acknowledged by the stream, by source.",
        )
        self.counters.describe(
            "liftoff_collector_requests_rejected_total", "Requests answered 4xx, by error code."
        )
        self.counters.describe(
            "liftoff_collector_publish_failures_total",
            "Requests answered 503 because the stream did not acknowledge every event.",
        )
        self.counters.describe(
            QUARANTINED,
            "Invalid events put in the quarantine (their valid neighbours were accepted), "
            "by source and reason code.",
        )
        if self.quarantine is not None:
            # Each series exists from the start at 0: a counter born at its first increment
            # has no earlier sample, and PromQL's increase() would miss that first burst.
            for known_source in self.write_keys.sources:
                for code in REJECTION_CODES:
                    self.counters.add(QUARANTINED, 0, source=known_source, code=code)
        self.counters.describe_histogram(
            REQUEST_DURATION,
            "Time from a complete request body to the answer (stream acknowledgement included).",
            ("route",),
            LATENCY_BUCKETS,
        )

    def _unavailable(
        self, route: str, error: Exception, log_message: str, code: str, message: str
    ) -> Response:
        """503 with Retry-After: something the client's events need did not acknowledge them;
        nothing was lost and the client's retry is the right answer."""
        self.counters.add("liftoff_collector_publish_failures_total")
        log.warning(log_message, extra={"fields": {"route": route, "error": str(error)}})
        return json_response(
            503,
            {"success": False, "code": code, "message": message},
            [("retry-after", RETRY_AFTER_SECONDS)],
        )

    async def ingest(self, request: IngestRequest) -> Response:
        started = time.perf_counter()
        try:
            response = await self._ingest(request)
        except InvalidInput as error:
            return self.reject(request.route, error)
        except StreamUnavailable as error:
            response = self._unavailable(
                request.route,
                error,
                "stream did not acknowledge the request",
                "stream_unavailable",
                "the stream did not acknowledge every event; retry later",
            )
        except QuarantineUnavailable as error:
            response = self._unavailable(
                request.route,
                error,
                "quarantine did not acknowledge the request's invalid events",
                "quarantine_unavailable",
                "invalid events could not be quarantined; retry later",
            )
        except Exception:
            log.exception("unexpected error", extra={"fields": {"route": request.route}})
            response = json_response(
                500,
                {"success": False, "code": "internal", "message": "internal error"},
                [],
            )
        self.counters.add(
            "liftoff_collector_requests_total", route=request.route, status=str(response.status)
        )
        self.counters.observe(REQUEST_DURATION, time.perf_counter() - started, route=request.route)
        return response

    def reject(self, route: str, error: InvalidInput) -> Response:
        """Answer a client error (also used by transports that reject before calling ingest)."""
        self.counters.add("liftoff_collector_requests_rejected_total", code=error.code)
        log.info(
            "request rejected",
            extra={
                "fields": {
                    "route": route,
                    "status": error.status,
                    "code": error.code,
                    "index": error.index,
                    "field": error.field,
                }
            },
        )
        self.counters.add("liftoff_collector_requests_total", route=route, status=str(error.status))
        return json_response(error.status, error.as_json(), [])

    async def _ingest(self, request: IngestRequest) -> Response:
        event_type = ROUTES[request.route]
        media_type = request.content_type.partition(";")[0].strip().lower()
        if media_type not in ACCEPTED_MEDIA_TYPES:
            raise InvalidInput(
                415,
                "unsupported_media_type",
                f"header Content-Type: {shown(media_type)} is not accepted: use "
                "application/json (or text/plain, as analytics.js sends it)",
                field="Content-Type",
            )
        source = None
        if request.authorization:
            source = self.write_keys.source_for(_write_key_of(request.authorization))
            if source is None:
                raise InvalidInput(401, "invalid_write_key", "unknown write key")
        body = decode_content(request.body, request.content_encoding)
        parsed = parse_body(body, event_type)
        if source is None:
            source = self.write_keys.source_for(parsed.write_key)
            if source is None:
                raise InvalidInput(
                    401,
                    "invalid_write_key",
                    "missing or unknown write key: send it as the HTTP Basic username",
                )
        if not self.origins.allows(source, request.origin):
            raise _origin_refused(request.origin)
        received_at = self.clock()
        validated = validate_events(
            parsed,
            event_type,
            source,
            received_at,
            client_ip=request.client_ip,
            collect_ip=source not in self.no_ip_sources,
        )
        records = validated.records
        if self.suppression is not None and records:
            records = await self.suppression.without(records)
            if len(records) < len(validated.records):
                dropped = len(validated.records) - len(records)
                self.counters.add(SUPPRESSED, dropped, source=source)
        return await self._deliver(records, validated.rejected, source, request.route, received_at)

    async def _deliver(
        self,
        records: list[StreamRecord],
        rejected: list[Rejected],
        source: str,
        route: str,
        received_at: datetime,
    ) -> Response:
        """Publish the valid events and quarantine the invalid ones; the 200 once both
        acknowledged everything."""
        if rejected and self.quarantine is None:
            first = rejected[0]
            raise InvalidInput(400, first.code, first.reason, index=first.index, field=first.field)
        if rejected:
            await self._publish_and_quarantine(records, source, route, received_at, rejected)
        elif records:
            await self.stream.publish(records)
        if records:
            self.counters.add(
                "liftoff_collector_events_accepted_total", len(records), source=source
            )
        if not rejected:
            return Response(200, _SUCCESS, [])
        for item in rejected:
            self.counters.add(QUARANTINED, source=source, code=item.code)
        log.info(
            "events quarantined",
            extra={
                "fields": {
                    "route": route,
                    "source": source,
                    "accepted": len(records),
                    "quarantined": len(rejected),
                    "codes": sorted({item.code for item in rejected}),
                }
            },
        )
        answer = {
            "success": True,
            "quarantined": len(rejected),
            "rejected": [item.as_json() for item in rejected],
        }
        return json_response(200, answer, [])

    async def _publish_and_quarantine(
        self,
        records: list[StreamRecord],
        source: str,
        route: str,
        received_at: datetime,
        rejected: list[Rejected],
    ) -> None:
        assert self.quarantine is not None
        # Quarantine first: when it is down, nothing of the request reaches the stream before
        # the 503 (one round trip more, only for requests with invalid events).
        await self.quarantine.put(source, route, format_timestamp(received_at), rejected)
        if records:
            await self.stream.publish(records)

    # --- browsers: CORS, analytics.js settings and the library itself (services.collector.browser)

    def with_cors(self, response: Response, origin: str | None) -> Response:
        """``response`` plus the CORS headers for ``origin`` (every route, errors included)."""
        headers = [*response.headers, *self.origins.headers(origin)]
        return Response(response.status, response.body, headers, response.content_type)

    def preflight(self, origin: str | None) -> Response:
        """``OPTIONS`` on any route: 204, or 403 for a refused origin (then :meth:`with_cors`
        adds no allow header, so the browser blocks the request)."""
        if not self.origins.preflight_allowed(origin):
            return json_response(403, _origin_refused(origin).as_json(), [])
        return Response(204, b"", self.origins.preflight_headers())

    def settings(
        self,
        write_key: str,
        host: str | None,
        scheme: str,
        origin: str | None,
        path_prefix: str = "",
    ) -> Response:
        """``GET /v1/projects/<writeKey>/settings``: what analytics.js loads first.
        ``path_prefix``: where the collector's paths start on ``host`` (an API stage)."""
        route = "/v1/projects/settings"
        source = self.write_keys.source_for(write_key)
        if source is None:
            return self.reject(route, InvalidInput(404, "invalid_write_key", "unknown write key"))
        if not self.origins.allows(source, origin):
            return self.reject(route, _origin_refused(origin))
        if self.public_url is None and not browser.valid_host(host):
            error = InvalidInput(400, "invalid_host", f"Host header {host!r} is not host[:port]")
            return self.reject(route, error)
        api_host, protocol = browser.public_base(self.public_url, f"{host}{path_prefix}", scheme)
        document = browser.settings_document(write_key, f"{api_host}/v1", protocol)
        self.counters.add("liftoff_collector_requests_total", route=route, status="200")
        cache = f"public, max-age={browser.SETTINGS_MAX_AGE}"
        # The document names the Host it was asked on unless a public URL is configured.
        vary = [] if self.public_url else [("vary", "Host")]
        return json_response(200, document, [("cache-control", cache), *vary])

    def static_file(
        self, name: str, if_none_match: str | None, accept_encoding: str | None
    ) -> Response:
        """analytics.js (``standalone.js``) or one of its chunks, as built into the image."""
        found = self.library.get(name)
        if found is None:
            message = (
                f"no such file {name!r}"
                if self.library.available
                else "analytics.js is not built into this collector (see the README)"
            )
            document = {"success": False, "code": "not_found", "message": message}
            return json_response(404, document, [])
        body, etag, encoding = found.body, found.etag, []
        if found.gzipped is not None and browser.accepts_gzip(accept_encoding):
            # Each representation has its own strong ETag.
            body, etag = found.gzipped, found.etag[:-1] + '-gzip"'
            encoding = [("content-encoding", "gzip")]
        headers = [
            ("cache-control", f"public, max-age={found.max_age}"),
            ("etag", etag),
            ("vary", "Accept-Encoding"),
            ("x-content-type-options", "nosniff"),
            # Embedded by other sites' pages, including ones isolated with COEP require-corp.
            ("cross-origin-resource-policy", "cross-origin"),
        ]
        if browser.etag_matches(if_none_match, etag):
            return Response(304, b"", headers, content_type=found.content_type)
        return Response(200, body, [*headers, *encoding], content_type=found.content_type)

    async def readiness(self) -> Response:
        try:
            await asyncio.wait_for(self.stream.check_ready(), READINESS_TIMEOUT_SECONDS)
        except TimeoutError:
            return json_response(503, {"status": "unavailable", "reason": "timed out"}, [])
        except StreamUnavailable as error:
            return json_response(503, {"status": "unavailable", "reason": str(error)}, [])
        return json_response(200, {"status": "ready"}, [])

    def metrics(self) -> Response:
        return Response(
            200,
            self.counters.render().encode(),
            [],
            content_type="text/plain; version=0.0.4; charset=utf-8",
        )
