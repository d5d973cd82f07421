"""Read back what reached the real streams, and wait for adapters to connect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import nats
import nats.js.errors

from services.stream.base import EventStream, StreamUnavailable

WRITE_KEYS = {"web": "web-key-1", "ios": "ios-key-2"}
WRITE_KEYS_JSON = json.dumps(WRITE_KEYS)


@dataclass(frozen=True)
class StoredMessage:
    subject: str
    headers: dict[str, str]
    event: dict[str, Any]


async def read_jetstream(server_url: str, stream: str) -> list[StoredMessage]:
    """Every message in ``stream``, in stream order."""
    nc = await nats.connect(server_url, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        state = (await js.stream_info(stream)).state
        messages = []
        for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            raw = await js.get_msg(stream, sequence)
            messages.append(
                StoredMessage(raw.subject, dict(raw.headers or {}), json.loads(raw.data))
            )
        return messages
    finally:
        await nc.close()


async def jetstream_message_count(server_url: str, stream: str) -> int:
    nc = await nats.connect(server_url, allow_reconnect=False)
    try:
        return (await nc.jetstream(timeout=5).stream_info(stream)).state.messages
    finally:
        await nc.close()


async def delete_jetstream(server_url: str, stream: str) -> None:
    nc = await nats.connect(server_url, allow_reconnect=False)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream(timeout=5).delete_stream(stream)
    finally:
        await nc.close()


def read_kinesis(client: Any, stream_name: str) -> list[tuple[str, dict[str, Any]]]:
    """(partition key, event) of every record, shard by shard, each shard in order."""
    records = []
    for shard in client.list_shards(StreamName=stream_name)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10000)
            records.extend((r["PartitionKey"], json.loads(r["Data"])) for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


async def wait_ready(stream: EventStream, deadline: float = 20.0) -> None:
    """Poll readiness until it passes: a wait for a connection, not a timed assertion."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            await stream.check_ready()
            return
        except StreamUnavailable:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.05)
