"""Broker down: the collector answers 503 and acknowledges nothing; it recovers by itself."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.servers import ServerProcess, nats_url
from tests.services.collector.test_collector_jetstream import JSON, collector_client
from tests.services.conftest import unique_stream_url
from tests.services.stream.under_test import read_jetstream

pytestmark = pytest.mark.servers


def batch(label: str, size: int = 5) -> dict[str, object]:
    return {
        "batch": [
            {"type": "track", "event": "E", "userId": "u", "messageId": f"{label}-{i}"}
            for i in range(size)
        ]
    }


async def wait_for_readiness(client: httpx.AsyncClient, status: int, attempts: int = 400) -> None:
    """Poll /readyz until it answers ``status`` (a bounded wait, not a timing assertion)."""
    for _ in range(attempts):
        if (await client.get("/readyz")).status_code == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never answered {status}")


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_down_means_503_and_nothing_acknowledged(own_nats: ServerProcess, how: str) -> None:
    url, stream = unique_stream_url(own_nats, publish_timeout=1.0)

    async def scenario() -> list[httpx.Response]:
        async with collector_client(url) as client:
            before = await client.post("/v1/batch", json=batch("before"), headers=JSON)
            own_nats.stop() if how == "stop" else own_nats.kill()
            # Once the client knows the broker is gone. (A request racing the crash itself may
            # still be stored after it was answered 503: at-least-once, deduplicated on
            # messageId when the client retries; the fault tests account for that case.)
            await wait_for_readiness(client, 503)
            during = [
                await client.post("/v1/batch", json=batch(f"during{i}"), headers=JSON)
                for i in range(3)
            ]
            not_ready = await client.get("/readyz")
            own_nats.start()
            await wait_for_readiness(client, 200)
            after = await client.post("/v1/batch", json=batch("after"), headers=JSON)
            return [before, *during, not_ready, after]

    before, *during, not_ready, after = asyncio.run(scenario())
    assert before.status_code == 200
    for response in during:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["code"] == "stream_unavailable"
    assert not_ready.status_code == 503
    assert after.status_code == 200

    stored = asyncio.run(read_jetstream(nats_url(own_nats), stream))
    stored_ids = [m.event["messageId"] for m in stored]
    # Everything acknowledged survived the restart; nothing answered 503 was stored.
    assert stored_ids == [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
