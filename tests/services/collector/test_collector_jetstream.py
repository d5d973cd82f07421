"""The collector app against a real nats-server -js, driven through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from services.collector.app import CollectorApp
from services.collector.ingest import Collector
from services.events.write_keys import WriteKeys
from services.stream.base import open_stream
from tests.servers import ServerProcess, nats_url
from tests.services.stream.under_test import (
    WRITE_KEYS,
    jetstream_message_count,
    read_jetstream,
    wait_ready,
)

pytestmark = pytest.mark.servers

WEB_AUTH = "Basic " + base64.b64encode(b"web-key-1:").decode()
JSON = {"content-type": "application/json", "authorization": WEB_AUTH}


@asynccontextmanager
async def collector_client(stream_url: str) -> AsyncIterator[httpx.AsyncClient]:
    collector = Collector(open_stream(stream_url), WriteKeys(WRITE_KEYS))
    await collector.stream.start()
    try:
        await wait_ready(collector.stream)
        transport = httpx.ASGITransport(app=CollectorApp(collector))
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            yield client
    finally:
        await collector.stream.close()


def run_with_client(
    stream_url: str, scenario: Callable[[httpx.AsyncClient], Awaitable[Any]]
) -> Any:
    async def main() -> Any:
        async with collector_client(stream_url) as client:
            return await scenario(client)

    return asyncio.run(main())


def all_six_types() -> list[dict[str, Any]]:
    return [
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m-track"},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "m-id"},
        {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "m-page"},
        {"type": "screen", "anonymousId": "a1", "name": "Cart", "messageId": "m-screen"},
        {"type": "group", "userId": "u1", "groupId": "g1", "messageId": "m-group"},
        {"type": "alias", "userId": "u1", "previousId": "a1", "messageId": "m-alias"},
    ]


def test_batch_of_every_type_is_on_the_stream_as_sent_plus_enrichment(
    shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    url, stream = jetstream
    sent = all_six_types()
    response = run_with_client(
        url, lambda c: c.post("/v1/batch", json={"batch": sent}, headers=JSON)
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert response.headers["access-control-allow-origin"] == "*"

    stored = asyncio.run(read_jetstream(nats_url(shared_nats), stream))
    prefix = "t" + stream[1:]
    assert [m.subject for m in stored] == [f"{prefix}.web.{e['type']}" for e in sent]
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [e["messageId"] for e in sent]
    for original, message in zip(sent, stored, strict=True):
        event = message.event
        assert {k: event[k] for k in original} == original
        assert event["liftoff"] == {"source": "web", "schema": 1}
        assert event["receivedAt"].endswith("Z") and event["timestamp"] == event["receivedAt"]


@pytest.mark.parametrize("event_type", ["track", "identify", "page", "screen", "group", "alias"])
def test_single_event_endpoints(
    shared_nats: ServerProcess, jetstream: tuple[str, str], event_type: str
) -> None:
    url, stream = jetstream
    body = {"userId": "u1", "event": "E", "groupId": "g", "previousId": "p", "messageId": "m1"}
    response = run_with_client(url, lambda c: c.post(f"/v1/{event_type}", json=body, headers=JSON))
    assert response.status_code == 200, response.text
    (message,) = asyncio.run(read_jetstream(nats_url(shared_nats), stream))
    assert message.event["type"] == event_type
    assert message.subject.endswith(f".web.{event_type}")


def test_gzip_body_and_write_key_in_body_with_text_plain(
    shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    # analytics.js style: text/plain (no CORS preflight), write key in the body, no header.
    url, stream = jetstream
    body = gzip.compress(json.dumps({"batch": all_six_types(), "writeKey": "ios-key-2"}).encode())
    headers = {"content-type": "text/plain;charset=UTF-8", "content-encoding": "gzip"}
    response = run_with_client(url, lambda c: c.post("/v1/batch", content=body, headers=headers))
    assert response.status_code == 200, response.text
    stored = asyncio.run(read_jetstream(nats_url(shared_nats), stream))
    assert len(stored) == 6
    assert {m.event["liftoff"]["source"] for m in stored} == {"ios"}
    assert all("writeKey" not in m.event for m in stored)


def test_retried_request_is_deduplicated_by_message_id(
    shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    url, stream = jetstream
    body = {"batch": all_six_types()}

    async def twice(client: httpx.AsyncClient) -> list[int]:
        first = await client.post("/v1/batch", json=body, headers=JSON)
        second = await client.post("/v1/batch", json=body, headers=JSON)
        return [first.status_code, second.status_code]

    assert run_with_client(url, twice) == [200, 200]
    assert asyncio.run(jetstream_message_count(nats_url(shared_nats), stream)) == 6


GOOD_EVENT = {"type": "identify", "userId": "u1"}
BAD_INPUT_CASES = {
    "malformed json": (b'{"batch": [', JSON, 400, "malformed_json"),
    "malformed gzip": (
        b"\x1f\x8b\x08\x00garbage",
        {**JSON, "content-encoding": "gzip"},
        400,
        "malformed_gzip",
    ),
    "truncated gzip": (
        gzip.compress(json.dumps({"batch": [GOOD_EVENT]}).encode())[:-6],
        {**JSON, "content-encoding": "gzip"},
        400,
        "malformed_gzip",
    ),
    "unsupported encoding": (b"{}", {**JSON, "content-encoding": "br"}, 415, None),
    "missing ids in 3rd event": (
        json.dumps({"batch": [GOOD_EVENT, GOOD_EVENT, {"type": "track", "event": "e"}]}).encode(),
        JSON,
        400,
        "missing_identity",
    ),
    "oversize event": (
        json.dumps(
            {"batch": [GOOD_EVENT, {**GOOD_EVENT, "traits": {"blob": "x" * 40_000}}]}
        ).encode(),
        JSON,
        400,
        "event_too_large",
    ),
    "oversize request": (
        json.dumps({"batch": [{**GOOD_EVENT, "traits": {"b": "x" * 30_000}}] * 20}).encode(),
        JSON,
        413,
        "request_too_large",
    ),
    "gzip expanding past the limit": (
        gzip.compress(b" " * 600_000 + b'{"batch": []}'),
        {**JSON, "content-encoding": "gzip"},
        413,
        "request_too_large",
    ),
    "unknown write key": (
        json.dumps({"batch": [GOOD_EVENT]}).encode(),
        {**JSON, "authorization": "Basic " + base64.b64encode(b"nope:").decode()},
        401,
        "invalid_write_key",
    ),
    "missing write key": (
        json.dumps({"batch": [GOOD_EVENT]}).encode(),
        {"content-type": "application/json"},
        401,
        "invalid_write_key",
    ),
    "wrong content type": (
        b"batch=1",
        {**JSON, "content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT_CASES, ids=list(BAD_INPUT_CASES))
def test_bad_input_is_rejected_and_nothing_is_published(
    shared_nats: ServerProcess, jetstream: tuple[str, str], case: str
) -> None:
    url, stream = jetstream
    body, headers, status, code = BAD_INPUT_CASES[case]
    response = run_with_client(url, lambda c: c.post("/v1/batch", content=body, headers=headers))
    assert response.status_code == status, response.text
    error = response.json()
    if code is not None:
        assert error["code"] == code
    if case == "missing ids in 3rd event":
        assert (error["index"], error["field"]) == (2, "userId")
    assert asyncio.run(jetstream_message_count(nats_url(shared_nats), stream)) == 0


def test_wrong_method_unknown_path_and_cors_preflight(jetstream: tuple[str, str]) -> None:
    url, _ = jetstream

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get("/v1/batch"),
            await client.post("/v2/batch", json={}),
            await client.options(
                "/v1/batch",
                headers={
                    "origin": "https://shop.example",
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "content-type,authorization",
                },
            ),
            await client.post("/healthz"),
        ]

    wrong_method, unknown, preflight, post_health = run_with_client(url, scenario)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method_not_allowed"
    assert unknown.status_code == 404
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower().split(", ")
    assert {"content-type", "authorization"} <= set(allowed)
    assert post_health.status_code == 405


def test_health_readiness_and_metrics(jetstream: tuple[str, str]) -> None:
    url, _ = jetstream

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        await client.post("/v1/batch", json={"batch": all_six_types()}, headers=JSON)
        await client.post("/v1/batch", content=b"{", headers=JSON)
        return [await client.get(p) for p in ("/healthz", "/readyz", "/metrics")]

    health, ready, metrics = run_with_client(url, scenario)
    assert (health.status_code, ready.status_code) == (200, 200)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = metrics.text.splitlines()
    assert 'liftoff_collector_events_accepted_total{source="web"} 6.0' in lines
    assert 'liftoff_collector_requests_total{route="/v1/batch",status="200"} 1.0' in lines
    assert 'liftoff_collector_requests_rejected_total{code="malformed_json"} 1.0' in lines


def test_readiness_fails_when_the_stream_does_not_exist(shared_nats: ServerProcess) -> None:
    async def scenario() -> httpx.Response:
        collector = Collector(
            open_stream(f"{nats_url(shared_nats)}/NO_SUCH_STREAM"), WriteKeys(WRITE_KEYS)
        )
        app = CollectorApp(collector)
        await collector.stream.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                for _ in range(400):  # wait for the connection, then ask
                    response = await client.get("/readyz")
                    if "not connected" not in response.text:
                        break
                    await asyncio.sleep(0.05)
                return response
        finally:
            await collector.stream.close()

    response = asyncio.run(scenario())
    assert response.status_code == 503
    assert "does not exist" in response.json()["reason"]
