"""Property: whatever a client sends over HTTP, the collector answers a 4xx or a 200 — never a
5xx — with the JSON error shape, and a 200 only when every event was published or quarantined.

The whole ASGI app (routing, CORS, auth, decoding, validation, publish, quarantine) against a
real nats-server -js with its dead-letter stream; hypothesis derandomized, bounded examples.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services.collector.app import CollectorApp
from services.collector.ingest import ROUTES, Collector
from services.collector.quarantine import open_quarantine
from services.events.write_keys import WriteKeys
from services.stream.base import open_stream
from services.stream.dead_letters import ensure_dead_letter_stream
from tests.servers import nats_server, nats_url
from tests.services.conftest import unique_stream_url
from tests.services.events.test_parser_properties import (
    OUT_OF_RANGE,
    batch_fields,
    events,
    json_values,
    mangle,
)
from tests.services.stream.under_test import WRITE_KEYS, wait_ready

pytestmark = pytest.mark.servers


class RunningCollector:
    """The app on its own event loop thread, so each example is one request, not a startup."""

    def __init__(self, stream_url: str, quarantine_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.collector = Collector(
            open_stream(stream_url),
            WriteKeys(WRITE_KEYS),
            quarantine=open_quarantine(quarantine_url),
        )
        self.client: httpx.AsyncClient | None = None
        self.call(self._start())

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    async def _start(self) -> None:
        await self.collector.stream.start()
        assert self.collector.quarantine is not None
        await self.collector.quarantine.start()
        await wait_ready(self.collector.stream)
        for _ in range(400):
            if self.collector.quarantine._nc is not None:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        # As uvicorn runs it with trusted proxies: the ASGI client below is one, so a
        # client-written X-Forwarded-For reaches the app.
        app = ProxyHeadersMiddleware(CollectorApp(self.collector), trusted_hosts="127.0.0.1")
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://collector")

    async def _stop(self) -> None:
        assert self.client is not None and self.collector.quarantine is not None
        await self.client.aclose()
        await self.collector.stream.close()
        await self.collector.quarantine.close()

    def post(self, path: str, body: bytes, headers: Any, method: str = "POST") -> httpx.Response:
        assert self.client is not None
        return self.call(self.client.request(method, path, content=body, headers=headers))

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    with nats_server(tmp_path_factory.mktemp("nats")) as server:
        stream_url, _ = unique_stream_url(server)
        quarantine = f"{nats_url(server)}/DEADLETTER"
        asyncio.run(ensure_dead_letter_stream(quarantine, retention_hours=1))
        collector = RunningCollector(stream_url, quarantine)
        yield collector
        collector.close()


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


WEB = basic("web-key-1")
# Mostly what real clients send (so the parser is reached), sometimes not.
headers_strategy = st.fixed_dictionaries(
    {
        "content-type": st.sampled_from(
            ["application/json"] * 3
            + ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]
        ),
        "authorization": st.sampled_from(
            [WEB] * 6 + [basic("nope"), "Basic !!!", "Bearer x", basic("ios-key-2")]
        ),
    },
    optional={
        "content-encoding": st.sampled_from(["gzip", "gzip", "identity", "br"]),
        "origin": st.sampled_from(["https://shop.example", "null"]),
    },
)


@settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from([*sorted(ROUTES), "/v2/batch"]),
    batch=st.lists(events, max_size=5),
    envelope=batch_fields
    | st.fixed_dictionaries(
        {}, optional={"writeKey": json_values | st.just("web-key-1"), "sentAt": json_values}
    ),
    junk=st.none() | st.binary(max_size=3) | st.sampled_from([b"\xff", b"\xc3", b"[" * 1200]),
    where=st.floats(min_value=0, max_value=1),
    headers=headers_strategy,
)
def test_any_request_gets_a_json_4xx_or_a_200(
    running: RunningCollector,
    path: str,
    batch: list[dict[str, Any]],
    envelope: dict[str, Any],
    junk: bytes | None,
    where: float,
    headers: dict[str, str],
) -> None:
    single = ROUTES.get(path) is not None
    document: Any = {**envelope, **(batch[0] if batch else {})} if single else {**envelope}
    if not single:
        document["batch"] = batch
    body = json.dumps(document).encode().replace(str(OUT_OF_RANGE).encode(), b"1e999")
    if junk is not None:
        body = mangle(body, int(where * len(body)), junk)
    if headers.get("content-encoding") == "gzip":
        body = gzip.compress(body)

    response = running.post(path, body, headers)

    assert response.status_code < 500, response.text
    answer = response.json()
    event(
        f"{response.status_code} {answer.get('code', '')}"
    )  # the mix, with --hypothesis-show-statistics
    if response.status_code == 200:
        sent = 1 if single else len(batch)
        assert answer["success"] is True
        assert answer.get("quarantined", 0) <= sent
        assert len(answer.get("rejected", [])) == answer.get("quarantined", 0)
    else:
        assert answer["success"] is False and answer["code"] and answer["message"]


# Header values as an HTTP parser lets them through (no control bytes; any other byte, ASCII or
# not), for every header the collector reads, sometimes twice.
header_values = st.binary(max_size=40).map(
    lambda raw: bytes(byte for byte in raw if byte >= 0x20 and byte != 0x7F)
) | st.sampled_from(
    [
        b"Basic \xe9\xe9",
        b"Basic 6Ok6",
        b"Basic d2ViLWtleS0xOg==",
        b"gzip",
        b"https://\xe9.example",
        b"203.0.113.5, 10.0.0.1",
        b"garbage:port",
        b"99999999999999999999",
    ]
)
header_names = st.sampled_from(
    [
        b"authorization",
        b"content-type",
        b"content-encoding",
        b"content-length",
        b"origin",
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"if-none-match",
        b"accept-encoding",
    ]
)


@settings(
    derandomize=True,
    database=None,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["POST", "POST", "GET", "OPTIONS"]),
    path=st.sampled_from(
        [
            *["/v1/batch", "/v1/track"] * 3,
            "/v1/projects/web-key-1/settings",
            "/analytics.js/v1/web-key-1/analytics.min.js",
            "/healthz",
        ]
    ),
    # Mostly one value per header (so each is read), sometimes repeated.
    headers=st.lists(st.tuples(header_names, header_values), max_size=3, unique_by=lambda h: h[0])
    | st.lists(st.tuples(header_names, header_values), max_size=5),
    envelope=batch_fields,
)
def test_any_header_gets_a_json_4xx_or_a_success(
    running: RunningCollector,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    envelope: dict[str, Any],
) -> None:
    track = {"type": "track", "event": "e", "userId": "u"}
    document = {**envelope, "batch": [track]} if path == "/v1/batch" else {**envelope, **track}
    body = json.dumps(document).encode().replace(str(OUT_OF_RANGE).encode(), b"1e999")
    sent = [(b"content-type", b"application/json"), *headers]
    if not any(name == b"authorization" for name, _ in headers):  # so the body is reached too
        sent.append((b"authorization", WEB.encode()))
    response = running.post(path, body if method == "POST" else b"", sent, method)

    assert response.status_code < 500, response.text
    event_label = f"{method} {response.status_code}"
    if response.status_code >= 400:
        answer = response.json()
        assert answer["success"] is False and answer["code"] and answer["message"]
        event_label += f" {answer['code']}"
    event(event_label)
