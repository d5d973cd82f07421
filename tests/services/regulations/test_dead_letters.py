"""Deletion from the dead letters and the quarantine: JetStream (one stream holds both) and
SQS (moto), through the regulation command's targets."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import boto3
import nats
import pytest

from services.regulations import command
from services.regulations.contract import parse
from tests.services.regulations.test_deletion import KEY

pytestmark = pytest.mark.servers


async def park(url: str, bodies: list[tuple[str, bytes]]) -> None:
    server, _, stream = url.rpartition("/")
    nc = await nats.connect(server)
    try:
        js = nc.jetstream(timeout=5)
        for subject, body in bodies:
            await js.publish(subject, body, stream=stream)
    finally:
        await nc.close()


async def bodies_in(url: str) -> list[bytes]:
    server, _, stream = url.rpartition("/")
    nc = await nats.connect(server)
    try:
        js = nc.jetstream(timeout=5)
        state = (await js.stream_info(stream)).state
        found = []
        for sequence in range(state.first_seq, state.last_seq + 1):
            try:
                found.append((await js.get_msg(stream, sequence)).data)
            except nats.js.errors.NotFoundError:
                continue  # deleted
        return found
    finally:
        await nc.close()


def test_delete_from_jetstream_dead_letters_and_sqs_quarantine(
    dead_letter_url: str, warehouse: dict[str, str], aws_env: str
) -> None:
    user, other = f"u-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    theirs = json.dumps({"type": "track", "userId": user, "messageId": "m1"}).encode()
    quarantined = json.dumps({"type": "track", "anonymousId": user + "-anon"}).encode()
    kept = json.dumps({"type": "track", "userId": other, "messageId": "m2"}).encode()
    asyncio.run(
        park(
            dead_letter_url,
            [
                ("deadletter.loader", theirs),
                ("deadletter.collector", quarantined),
                ("deadletter.loader", kept),
                ("deadletter.collector", b"{not json " + user.encode()),
            ],
        )
    )
    sqs = boto3.client("sqs")
    queue = f"quarantine-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    for event in ({"userId": user}, {"userId": other}, {"anonymousId": user + "-anon"}):
        sqs.send_message(
            QueueUrl=queue_url, MessageBody=json.dumps({"reason": "r", "event": event})
        )

    settings = parse(
        {
            **warehouse,
            "LIFTOFF_SUPPRESSION_URL": "nats://127.0.0.1:1/unused",
            "LIFTOFF_SUPPRESSION_KEY": KEY,
            "LIFTOFF_DEAD_LETTER_URL": dead_letter_url,
            "LIFTOFF_QUARANTINE_URL": f"sqs://{queue}",
        }
    )
    assert command.targets_of("delete", settings) == ["warehouse", "dead-letters", "quarantine"]
    done = command.run(settings, action="delete", user_ids=[user], anonymous_ids=[user + "-anon"])
    assert done == 0

    left = asyncio.run(bodies_in(dead_letter_url))
    assert theirs not in left and quarantined not in left
    assert kept in left and b"{not json " + user.encode() in left  # not JSON: cannot be matched
    remaining: list[Any] = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        remaining += [json.loads(m["Body"])["event"] for m in got.get("Messages", [])]
    assert remaining == [{"userId": other}]  # and visible again at once
