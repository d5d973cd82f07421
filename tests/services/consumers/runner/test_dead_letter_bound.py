"""The dead-letter stream (the collector's quarantine and the consumers' parked events) is
bounded by bytes, updated in place on an existing stack, never refuses a writer, and says how
full it is: against a real nats-server -js, `python -m services ensure-stream`, the collector's
app and a real archiver process.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from services import cli
from tests.servers import LOOPBACK, ServerProcess, consumer_process, moto_endpoint, nats_url
from tests.services.collector.test_collector_quarantine import JSON, quarantining_client
from tests.services.conftest import unique_stream_url
from tests.services.consumers.runner.test_consumer_process import archiver_env

pytestmark = pytest.mark.servers

BOUND = 1024 * 1024  # the smallest allowed: one quarantined event can be a 500 KB request


async def create_as_before(server_url: str) -> None:
    """DEADLETTER as ensure-stream created it up to d932cdf: an age limit only."""
    nc = await nats.connect(server_url)
    try:
        await nc.jetstream(timeout=5).add_stream(
            StreamConfig(
                name="DEADLETTER",
                subjects=["deadletter.>"],
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.NEW,
                max_bytes=-1,
                max_age=336 * 3600,
                storage=StorageType.FILE,
                num_replicas=1,
                duplicate_window=120,
            )
        )
    finally:
        await nc.close()


async def park_raw(server_url: str, count: int, size: int, consumer: str = "loader") -> int:
    """Publish `count` dead letters of `size` bytes; returns how many were acknowledged."""
    nc = await nats.connect(server_url)
    acknowledged = 0
    try:
        js = nc.jetstream(timeout=5)
        for index in range(count):
            await js.publish(f"deadletter.{consumer}", b"x" * size, headers={"n": str(index)})
            acknowledged += 1
    finally:
        await nc.close()
    return acknowledged


async def state(server_url: str) -> tuple[Any, Any]:
    nc = await nats.connect(server_url)
    try:
        info = await nc.jetstream(timeout=5).stream_info("DEADLETTER")
        return info.config, info.state
    finally:
        await nc.close()


def test_an_existing_unbounded_stream_is_bounded_in_place_and_never_refuses_a_writer(
    own_nats: ServerProcess,
) -> None:
    server = nats_url(own_nats)
    url, _ = unique_stream_url(own_nats)
    asyncio.run(create_as_before(server))
    assert asyncio.run(park_raw(server, 50, 1000)) == 50

    env = {
        "LIFTOFF_STREAM_URL": url,
        "LIFTOFF_DEAD_LETTER_MAX_BYTES": str(BOUND),
        "LIFTOFF_LOG_LEVEL": "ERROR",
    }
    assert cli.main(["ensure-stream"], env) == 0
    config, kept = asyncio.run(state(server))
    assert (config.max_bytes, config.discard) == (BOUND, DiscardPolicy.OLD)
    assert (kept.messages, kept.first_seq) == (50, 1)  # updated in place: nothing lost
    assert cli.main(["ensure-stream"], env) == 0  # idempotent

    # A flood of 3 MB: every write acknowledged, the stream stays within its bound, the
    # newest kept and the oldest dropped to make room.
    assert asyncio.run(park_raw(server, 3000, 1000)) == 3000
    _, after = asyncio.run(state(server))
    assert after.bytes <= BOUND
    assert after.last_seq == 3050 and after.first_seq > 1


def test_the_default_bound_applies_when_nothing_is_set(own_nats: ServerProcess) -> None:
    url, _ = unique_stream_url(own_nats)
    assert (
        cli.main(["ensure-stream"], {"LIFTOFF_STREAM_URL": url, "LIFTOFF_LOG_LEVEL": "ERROR"}) == 0
    )
    config, _ = asyncio.run(state(nats_url(own_nats)))
    assert (config.max_bytes, config.discard) == (1024**3, DiscardPolicy.OLD)


def test_a_flood_of_invalid_events_stays_within_the_bound_and_is_always_answered(
    own_nats: ServerProcess,
) -> None:
    server = nats_url(own_nats)
    url, _ = unique_stream_url(own_nats)
    env = {"LIFTOFF_STREAM_URL": url, "LIFTOFF_DEAD_LETTER_MAX_BYTES": str(BOUND)}
    assert cli.main(["ensure-stream"], {**env, "LIFTOFF_LOG_LEVEL": "ERROR"}) == 0
    # 60 requests of 50 invalid events (no userId), ~1 KB each: 3 MB of quarantine.
    invalid = [{"type": "track", "event": "e", "properties": {"pad": "p" * 900}}] * 50

    async def flood() -> list[int]:
        async with quarantining_client(url, f"{server}/DEADLETTER") as (client, _):
            statuses = []
            for request in range(60):
                events = [{**e, "messageId": f"q-{request}-{i}"} for i, e in enumerate(invalid)]
                body = json.dumps({"batch": events}).encode()
                statuses.append(
                    (await client.post("/v1/batch", content=body, headers=JSON)).status_code
                )
            return statuses

    assert asyncio.run(flood()) == [200] * 60
    _, after = asyncio.run(state(server))
    assert after.last_seq == 3000
    assert after.bytes <= BOUND


def metric(port: int, name: str) -> float | None:
    for line in httpx.get(f"http://{LOOPBACK}:{port}/metrics").text.splitlines():
        if line.startswith(name + "{") and 'stream="DEADLETTER"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_consumer_process_reports_how_full_the_dead_letter_stream_is(
    own_nats: ServerProcess, tmp_path: Path, bucket: tuple[Any, str], moto: ServerProcess
) -> None:
    server = nats_url(own_nats)
    url, _ = unique_stream_url(own_nats)
    env = {"LIFTOFF_STREAM_URL": url, "LIFTOFF_DEAD_LETTER_MAX_BYTES": str(BOUND)}
    assert cli.main(["ensure-stream"], {**env, "LIFTOFF_LOG_LEVEL": "ERROR"}) == 0
    _, bucket_name = bucket
    archiver = consumer_process(
        tmp_path,
        "archiver",
        {
            **archiver_env(url, bucket_name, moto_endpoint(moto), f"{server}/DEADLETTER"),
            "LIFTOFF_CONSUMER_LAG_INTERVAL_SECONDS": "0.5",
        },
    )
    with archiver:
        asyncio.run(park_raw(server, 2000, 1000, consumer="broadcast-x"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            used = metric(archiver.port, "liftoff_dead_letter_stream_bytes")
            if used is not None and used > 0.9 * BOUND:
                break
            time.sleep(0.2)
        assert metric(archiver.port, "liftoff_dead_letter_stream_max_bytes") == BOUND
        used = metric(archiver.port, "liftoff_dead_letter_stream_bytes")
        assert used is not None and 0.9 * BOUND < used <= BOUND
        assert (metric(archiver.port, "liftoff_dead_letter_stream_messages") or 0) > 0
