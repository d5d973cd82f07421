"""Fixtures for the consumer tests: PostgreSQL, S3 on moto, and helpers to drive a consumer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import nats
import pytest

from services.consumers.runner.jetstream import JetStreamRunner, RunnerSettings
from services.consumers.runner.model import Sink
from services.stream.dead_letters import JetStreamDeadLetter, ensure_dead_letter_stream
from tests.servers import ServerProcess, nats_url


@pytest.fixture
def bucket(aws_env: str) -> tuple[Any, str]:
    """(boto3 S3 client, name of a fresh bucket) on moto."""
    client = boto3.client("s3")
    name = f"archive-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return client, name


@pytest.fixture
def dead_letter_url(shared_nats: ServerProcess) -> str:
    url = f"{nats_url(shared_nats)}/DEADLETTER"
    asyncio.run(ensure_dead_letter_stream(url, retention_hours=1))
    return url


def event(
    index: int,
    *,
    source: str = "web",
    received_at: str = "2026-11-27T20:19:03.512Z",
    prefix: str = "m",
    **fields: Any,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{index % 7}",
        "messageId": f"{prefix}-{index}",
        "properties": {"index": index, "total": 9.99},
        "context": {"library": {"name": "test"}},
        "receivedAt": received_at,
        "timestamp": received_at,
        "liftoff": {"source": source, "schema": 1},
    }
    document.update(fields)
    return document


async def publish(stream_url: str, events: list[dict[str, Any] | bytes]) -> None:
    """Publish contract events (or raw bytes: bad events) straight onto the stream."""
    server, _, rest = stream_url.partition("://")[2].partition("/")
    prefix = rest.partition("subject_prefix=")[2].partition("&")[0] or "events"
    nc = await nats.connect(f"nats://{server}")
    try:
        js = nc.jetstream(timeout=5)
        for item in events:
            if isinstance(item, bytes):
                await js.publish(f"{prefix}.web.track", item)
            else:
                await js.publish(
                    f"{prefix}.{item['liftoff']['source']}.{item['type']}",
                    json.dumps(item).encode(),
                    headers={"Nats-Msg-Id": item["messageId"]},
                )
    finally:
        await nc.close()


async def consumer_state(stream_url: str, consumer: str) -> tuple[int, int]:
    """(num_pending, num_ack_pending) of a durable consumer: (0, 0) = all acknowledged."""
    server, _, rest = stream_url.partition("://")[2].partition("/")
    stream = rest.partition("?")[0]
    nc = await nats.connect(f"nats://{server}")
    try:
        info = await nc.jetstream(timeout=5).consumer_info(stream, consumer)
        return info.num_pending, info.num_ack_pending
    finally:
        await nc.close()


async def read_dead_letters(server_url: str, consumer: str) -> list[tuple[dict[str, str], bytes]]:
    nc = await nats.connect(server_url)
    try:
        js = nc.jetstream(timeout=5)
        subscription = await js.pull_subscribe(
            f"deadletter.{consumer}", stream="DEADLETTER", durable=None
        )
        found = []
        while True:
            try:
                messages = await subscription.fetch(100, timeout=0.5)
            # nats-py raises its own TimeoutError (a subclass) or, from some paths, a bare one.
            except TimeoutError:
                return found
            found += [(dict(m.headers or {}), m.data) for m in messages]
    finally:
        await nc.close()


def settings(name: str, **overrides: Any) -> RunnerSettings:
    values: dict[str, Any] = {
        "consumer_name": name,
        "batch_max_events": 100,
        "batch_max_seconds": 0.3,
        "ack_wait_seconds": 5.0,
        "shutdown_grace_seconds": 5.0,
        "health_port": None,
    }
    values.update(overrides)
    return RunnerSettings(**values)


def run_consumer_until(
    stream_url: str,
    sink: Sink,
    runner_settings: RunnerSettings,
    dead_letter_url: str,
    done: Callable[[], bool] | None = None,
    deadline: float = 30.0,
) -> None:
    """Run the JetStream runner in this process until every message is acknowledged (or
    ``done()`` holds), then stop it as SIGTERM would. A bounded wait, not a timing assertion."""

    async def main() -> None:
        stop = asyncio.Event()
        runner = JetStreamRunner(
            stream_url, sink, JetStreamDeadLetter(dead_letter_url), runner_settings
        )
        task = asyncio.create_task(runner.run(stop))
        give_up = time.monotonic() + deadline
        try:
            while time.monotonic() < give_up and not task.done():
                await asyncio.sleep(0.1)
                if done is not None:
                    if done():
                        break
                    continue
                try:
                    state = await consumer_state(stream_url, runner_settings.consumer_name)
                except Exception:
                    continue
                if state == (0, 0):
                    break
            else:
                if not task.done():
                    raise AssertionError(f"consumer did not finish within {deadline}s")
        finally:
            stop.set()
            await task

    asyncio.run(main())


def tmp_workdir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return path
