"""The limits hold for events as published: a batch's `context`/`integrations` are merged into
every event, so one small request must not fan out into a large amount of stream data.

The whole ASGI app against a real nats-server -js with its dead-letter stream (the quarantine).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from services.events.limits import MAX_EVENT_BYTES, MAX_JSON_DEPTH
from services.stream.dead_letters import ensure_dead_letter_stream
from tests.servers import ServerProcess, nats_server, nats_url
from tests.services.collector.test_collector_quarantine import JSON, quarantining_client, read_raw
from tests.services.conftest import unique_stream_url
from tests.services.stream.under_test import read_jetstream

pytestmark = pytest.mark.servers

# The documented bounds (README, "Hostile input and HTTP limits"), pinned here on purpose.
MAX_PUBLISHED_EVENT_BYTES = 64 * 1024
PUBLISHED_BYTES_PER_BODY_BYTE = 4
PUBLISHED_BYTES_PER_EVENT = 512


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with nats_server(tmp_path_factory.mktemp("nats")) as server:
        asyncio.run(ensure_dead_letter_stream(f"{nats_url(server)}/DEADLETTER", 1))
        yield server


def send(nats: ServerProcess, body: bytes) -> tuple[int, dict[str, Any], int, int, int]:
    """POST /v1/batch; (status, answer, events stored, bytes stored, events quarantined)."""
    url, stream = unique_stream_url(nats)
    quarantine = f"{nats_url(nats)}/DEADLETTER"
    quarantined_before = len(asyncio.run(read_raw(nats_url(nats), "DEADLETTER")))

    async def post() -> Any:
        async with quarantining_client(url, quarantine) as (client, _):
            return await client.post("/v1/batch", content=body, headers=JSON)

    response = asyncio.run(post())
    stored = asyncio.run(read_jetstream(nats_url(nats), stream))
    size = sum(len(json.dumps(m.event, separators=(",", ":"))) for m in stored)
    quarantined = len(asyncio.run(read_raw(nats_url(nats), "DEADLETTER"))) - quarantined_before
    return response.status_code, response.json(), len(stored), size, quarantined


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def batch(events: list[dict[str, Any]], **fields: Any) -> bytes:
    return json.dumps({"batch": events, **fields}, separators=(",", ":")).encode()


def tiny(count: int) -> list[dict[str, Any]]:
    return [{"type": "track", "event": "e", "userId": f"u{i}"} for i in range(count)]


def test_a_batch_context_repeated_in_every_event_is_bounded_by_the_body(
    nats: ServerProcess,
) -> None:
    # 20 KB of context (within the per-field limit) x 200 events would publish ~4 MB from a
    # 27 KB request.
    body = batch(tiny(200), context={"page": {"blob": "x" * 20_000}})
    status, answer, stored, _, quarantined = send(nats, body)
    assert (status, answer["code"], answer["field"]) == (413, "published_too_large", "context")
    assert f"{PUBLISHED_BYTES_PER_BODY_BYTE} x the {len(body)}-byte body" in answer["message"]
    assert (stored, quarantined) == (0, 0)


def test_the_amplification_request_is_refused_whole(nats: ServerProcess) -> None:
    # The shape that published ~420 MB from one 512 KB request on d932cdf (a batch context of
    # ~430 KB nested 975 deep, a thousand tiny events), scaled down: benchmarks/hostile_memory.py
    # sends the real one to the real process.
    context = {"blob": "x" * 40_000, "deep": nested(200)}
    body = batch(tiny(100), context=context)
    status, answer, stored, _, quarantined = send(nats, body)
    assert (status, answer["code"], answer.get("field")) == (413, "request_too_large", "context")
    assert str(MAX_EVENT_BYTES) in answer["message"]
    assert (stored, quarantined) == (0, 0)


@pytest.mark.parametrize("name", ["context", "integrations"])
def test_a_batch_field_nested_past_what_an_event_may_hold_is_a_400(
    nats: ServerProcess, name: str
) -> None:
    # Merged one level down, a batch field of MAX_JSON_DEPTH levels makes events one too deep.
    body = batch(tiny(3), **{name: nested(MAX_JSON_DEPTH)})
    status, answer, stored, _, quarantined = send(nats, body)
    assert (status, answer["code"], answer["field"]) == (400, "nesting_too_deep", name)
    assert (stored, quarantined) == (0, 0)
    within = batch(tiny(3), **{name: nested(MAX_JSON_DEPTH - 1)})
    assert send(nats, within)[:3] == (200, {"success": True}, 3)


def test_an_event_too_large_as_published_is_quarantined_and_its_neighbour_accepted(
    nats: ServerProcess,
) -> None:
    context = {"blob": "c" * (MAX_EVENT_BYTES - 100)}
    large = {"type": "track", "event": "e", "userId": "u", "properties": {"p": "p" * 32_600}}
    assert len(json.dumps(large)) <= MAX_EVENT_BYTES  # within the limit as sent
    body = batch([large, *tiny(1)], context=context)
    status, answer, stored, _, quarantined = send(nats, body)
    assert status == 200, answer
    ((rejected),) = answer["rejected"]
    assert (rejected["index"], rejected["code"]) == (0, "event_too_large")
    assert "as published" in rejected["reason"]
    assert str(MAX_PUBLISHED_EVENT_BYTES) in rejected["reason"]
    assert (stored, quarantined) == (1, 1)


@pytest.mark.parametrize(
    "fields",
    [{}, {"context": {"library": {"name": "analytics-custom", "version": "1.0.0"}, "ip": "::1"}}],
    ids=["no batch context", "a small batch context"],
)
def test_ordinary_batches_of_minimal_events_stay_within_the_bound(
    nats: ServerProcess, fields: dict[str, Any]
) -> None:
    # The collector's own fields grow a minimal event ~7x: the per-event allowance covers it.
    events = tiny(2500)
    body = batch(events, sentAt="2026-01-02T03:04:05.000Z", **fields)
    status, answer, stored, size, _ = send(nats, body)
    assert (status, answer, stored) == (200, {"success": True}, 2500)
    bound = PUBLISHED_BYTES_PER_BODY_BYTE * len(body) + PUBLISHED_BYTES_PER_EVENT * 2500
    assert size < bound
