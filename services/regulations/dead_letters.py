"""Deleting users' events from the dead letters and the collector's quarantine.

- JetStream (``nats://servers/DEADLETTER``: the consumers' dead letters and, on the same
  stream, the collector's quarantine): every message is read once (one direct get per message,
  oldest first) and those whose body is an event of one of the ids are deleted by sequence.
- SQS (``sqs://<queue>``, AWS: a dead-letter queue and a quarantine queue): messages are
  received (kept invisible while the scan lasts, so each is seen once) until a receive comes back
  empty; the matching ones are deleted, the others made visible again. Limits: a message another
  reader holds in flight during the scan is not seen (run it again); SQS allows 120,000 in-flight
  messages per queue, so a larger queue needs several runs.

A body that is not a JSON object (a quarantined event that was not valid JSON) cannot be
matched and stays.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

SQS_HIDE_SECONDS = 300
"""How long a scanned SQS message stays invisible: longer than a scan takes."""


def holds(body: bytes | str, user_ids: frozenset[str], anonymous_ids: frozenset[str]) -> bool:
    """Whether a stored body (an event, or SQS's ``{"event": ...}`` document) is of the ids."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    if isinstance(document, dict) and isinstance(document.get("event"), dict):
        document = document["event"]  # the SQS shape
    if not isinstance(document, dict):
        return False

    def text(value: Any) -> str | None:
        if value is None or value == "":
            return None
        return value if isinstance(value, str) else json.dumps(value)

    return (
        text(document.get("userId")) in user_ids
        or text(document.get("anonymousId")) in anonymous_ids
    )


async def _delete_from_jetstream(url: str, users: frozenset[str], anonymous: frozenset[str]) -> int:
    import nats
    from nats.js.errors import NotFoundError

    from services.stream.jetstream import stream_credentials

    parts = urlsplit(url)
    stream = parts.path.strip("/")
    servers = [f"nats://{server}" for server in parts.netloc.split(",")]
    nc = await nats.connect(servers, **stream_credentials(), allow_reconnect=False)
    deleted = 0
    try:
        js = nc.jetstream(timeout=5)
        state = (await js.stream_info(stream)).state
        sequence = state.first_seq
        while state.messages and sequence <= state.last_seq:
            try:
                message = await js.get_msg(stream, sequence, subject=">", next=True)
            except NotFoundError:
                break
            found = int(message.seq or sequence)
            if holds(message.data or b"", users, anonymous):
                await js.delete_msg(stream, found)
                deleted += 1
            sequence = found + 1
    finally:
        await nc.close()
    return deleted


def _delete_from_sqs(queue: Any, users: frozenset[str], anonymous: frozenset[str]) -> int:
    client, url = queue._client, queue.queue_url()
    deleted, kept = 0, []
    while True:
        received = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=SQS_HIDE_SECONDS,
            WaitTimeSeconds=1,
        ).get("Messages", [])
        if not received:
            break
        for message in received:
            if holds(message["Body"], users, anonymous):
                client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                deleted += 1
            else:
                kept.append(message["ReceiptHandle"])
    for handle in kept:
        client.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return deleted


def delete_from_dead_letters(
    url: str, user_ids: Sequence[str], anonymous_ids: Sequence[str]
) -> dict[str, int]:
    users, anonymous = frozenset(user_ids), frozenset(anonymous_ids)
    if url.startswith("sqs://"):
        from services.stream.side_channels import SqsQueue

        queue = SqsQueue(url)
        asyncio.run(queue.start())
        return {"messages_deleted": _delete_from_sqs(queue, users, anonymous)}
    return {"messages_deleted": asyncio.run(_delete_from_jetstream(url, users, anonymous))}
