"""Dead letters: where a consumer parks an event that can never succeed, with the reason.

``LIFTOFF_DEAD_LETTER_URL`` chooses the target:

- ``nats://host:port[,host:port]/DEADLETTER`` — JetStream stream ``DEADLETTER`` (subjects
  ``deadletter.>``; ``ensure-stream`` creates it). One message per parked event on subject
  ``deadletter.<consumer-name>``. The body is the original message bytes, unchanged (so a
  replay tool can republish it as is); the headers carry the rest:

  ========================  ======================================================
  ``Liftoff-Reason``        why it was parked (one line, at most 1000 characters)
  ``Liftoff-Consumer``      the consumer name (``archiver``, ``loader``, ...)
  ``Liftoff-Attempts``      deliveries so far
  ``Liftoff-Subject``       the original subject (JetStream) or partition key (Kinesis)
  ``Liftoff-Position``      ``<stream partition>:<sequence>``, e.g. ``EVENTS:42``
  ``Liftoff-Message-Id``    the event's messageId when it has one
  ``Nats-Msg-Id``           ``<consumer>:<position>``: parking the same message twice
                            (a crash between park and ack) is deduplicated by the server
  ========================  ======================================================

- ``sqs://<queue-name>`` — an SQS queue (boto3; honours ``AWS_ENDPOINT_URL``). Message body =
  JSON ``{"reason", "consumer", "attempts", "event", "position", "subject", "messageId"}`` where
  ``event`` is the original JSON object (or, when it was not valid JSON, the original text)
  and ``position`` is ``{"partition", "sequence"}`` (sequence as a decimal string).

Dead letters are at-least-once: a message redelivered after a crash between park and ack (or a
Lambda batch retried as a whole) is parked again. On JetStream ``Nats-Msg-Id`` makes the server
drop the repeat within its duplicate window; on SQS the ``position`` identifies repeats.

``park`` returns only after the target acknowledged the message; otherwise it raises
:class:`DeadLetterUnavailable` and the event is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.consumers import Delivery
from services.side_channels import BackgroundJetStream, SqsQueue

log = logging.getLogger("liftoff.deadletter")

DEAD_LETTER_STREAM = "DEADLETTER"
DEAD_LETTER_SUBJECT_PREFIX = "deadletter"


class DeadLetterUnavailable(Exception):
    pass


class DeadLetter(Protocol):
    async def start(self) -> None: ...

    async def park(self, delivery: Delivery, reason: str, consumer: str) -> None: ...

    async def close(self) -> None: ...


def sqs_body(delivery: Delivery, reason: str, consumer: str) -> str:
    event: Any
    try:
        event = json.loads(delivery.data)
    except ValueError:
        event = delivery.data.decode("utf-8", errors="replace")
    return json.dumps(
        {
            "reason": reason,
            "consumer": consumer,
            "attempts": delivery.attempts,
            "event": event,
            "messageId": delivery.message_id or None,
            "subject": delivery.subject,
            "position": {
                "partition": delivery.position.partition,
                "sequence": str(delivery.position.sequence),
            },
        }
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]


class JetStreamDeadLetter(BackgroundJetStream):
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        super().__init__(url, timeout, "dead-letter", log)

    async def park(self, delivery: Delivery, reason: str, consumer: str) -> None:
        import nats.errors

        js = self.jetstream()
        if js is None:
            raise DeadLetterUnavailable("not connected to NATS")
        headers = {
            "Liftoff-Reason": _one_line(reason),
            "Liftoff-Consumer": consumer,
            "Liftoff-Attempts": str(delivery.attempts),
            "Liftoff-Subject": delivery.subject,
            "Liftoff-Position": str(delivery.position),
            "Nats-Msg-Id": f"{consumer}:{delivery.position}",
        }
        if delivery.message_id:
            headers["Liftoff-Message-Id"] = delivery.message_id
        try:
            await js.publish(
                f"{DEAD_LETTER_SUBJECT_PREFIX}.{consumer}",
                delivery.data,
                stream=self.stream,
                headers=headers,
                timeout=self.timeout,
            )
        except (TimeoutError, nats.errors.Error) as error:
            raise DeadLetterUnavailable(f"dead-letter publish failed: {error!r}") from error


class SqsDeadLetter(SqsQueue):
    def _send(self, body: str) -> None:
        self._client.send_message(QueueUrl=self.queue_url(), MessageBody=body)

    async def park(self, delivery: Delivery, reason: str, consumer: str) -> None:
        import botocore.exceptions

        body = sqs_body(delivery, reason, consumer)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._send, body)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise DeadLetterUnavailable(f"SQS send failed: {error}") from error


def open_dead_letter(url: str) -> DeadLetter:
    scheme = urlsplit(url).scheme
    if scheme == "nats":
        return JetStreamDeadLetter(url)
    if scheme == "sqs":
        return SqsDeadLetter(url)
    raise ValueError(f"unsupported dead-letter URL {url!r}: use nats://.../DEADLETTER or sqs://")


async def ensure_dead_letter_stream(
    url: str, retention_hours: float = 336.0, replicas: int = 1
) -> str:
    """Create or update the JetStream dead-letter stream named in ``url`` (subjects
    ``deadletter.>``, file storage, 14 days by default); idempotent, like ``ensure-stream``."""
    from services.streams import StreamSettings
    from services.streams.jetstream import ensure_stream

    parts = urlsplit(url)
    stream_url = f"nats://{parts.netloc}{parts.path}?subject_prefix={DEAD_LETTER_SUBJECT_PREFIX}"
    settings = StreamSettings(
        retention_hours=retention_hours, replicas=replicas, duplicate_window_seconds=120.0
    )
    return await ensure_stream(stream_url, settings)
