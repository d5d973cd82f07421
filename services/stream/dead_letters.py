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

The JetStream stream is bounded by bytes as well as age (``ensure-stream``:
``LIFTOFF_DEAD_LETTER_MAX_BYTES``, default :data:`DEFAULT_MAX_BYTES`; on Kubernetes a share of
the JetStream volume). At the bound its *oldest* messages are dropped to make room: a writer is
never refused for lack of room, or a flood of invalid events would turn into 503s for every
request carrying one and stall every consumer that parks. Every consumer process reports the
stream's fill (``liftoff_dead_letter_stream_bytes`` / ``_max_bytes``), and the
``LiftoffDeadLetterStorage`` alert fires before it drops anything. An SQS queue has no byte
bound (14 days at most, 1 MiB per message).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from services.stream.contract import DEFAULT_DEAD_LETTER_MAX_BYTES
from services.stream.side_channels import BackgroundJetStream, SqsQueue

log = logging.getLogger("liftoff.deadletter")

DEAD_LETTER_SUBJECT_PREFIX = "deadletter"
DEFAULT_MAX_BYTES = DEFAULT_DEAD_LETTER_MAX_BYTES


class Position(Protocol):
    @property
    def partition(self) -> str: ...
    @property
    def sequence(self) -> int: ...


class Delivery(Protocol):
    """What a dead letter keeps of a message (the consumers' ``Delivery`` has it)."""

    @property
    def data(self) -> bytes: ...
    @property
    def position(self) -> Position: ...
    @property
    def subject(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def message_id(self) -> str: ...


T = TypeVar("T")


class DeadLetterUnavailable(Exception):
    pass


@dataclass(frozen=True)
class DeadLetterUsage:
    """How full the dead-letter stream is (``max_bytes`` -1: unbounded)."""

    stream: str
    bytes: int
    max_bytes: int
    messages: int


class DeadLetter(Protocol):
    async def start(self) -> None: ...

    async def park(self, delivery: Delivery, reason: str, consumer: str) -> None: ...

    async def usage(self) -> DeadLetterUsage | None:
        """The stream's fill, None where there is none to read (SQS, not connected)."""

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

    async def usage(self) -> DeadLetterUsage | None:
        js = self.jetstream()
        if js is None:
            return None
        info = await js.stream_info(self.stream)
        return DeadLetterUsage(
            self.stream, info.state.bytes, info.config.max_bytes or -1, info.state.messages
        )


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

    async def usage(self) -> DeadLetterUsage | None:
        return None  # an SQS queue has no byte bound to fill


def by_scheme(url: str, stores: dict[str, Callable[[str], T]], what: str) -> T:
    """The store a ``nats://`` or ``sqs://`` URL names (dead letters, the quarantine)."""
    store = stores.get(urlsplit(url).scheme)
    if store is None:
        raise ValueError(f"unsupported {what} URL {url!r}: use nats://.../DEADLETTER or sqs://")
    return store(url)


def open_dead_letter(url: str) -> DeadLetter:
    stores: dict[str, Callable[[str], DeadLetter]] = {
        "nats": JetStreamDeadLetter,
        "sqs": SqsDeadLetter,
    }
    return by_scheme(url, stores, "dead-letter")


async def ensure_dead_letter_stream(
    url: str,
    retention_hours: float = 336.0,
    replicas: int = 1,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """Create or update the JetStream dead-letter stream named in ``url`` (subjects
    ``deadletter.>``, file storage, 14 days and 1 GiB by default, the oldest dropped at the
    byte bound); idempotent, like ``ensure-stream``: an existing stream is updated in place,
    its messages kept (past a lowered bound, the oldest go)."""
    from services.stream.base import StreamSettings
    from services.stream.jetstream import ensure_stream

    parts = urlsplit(url)
    stream_url = f"nats://{parts.netloc}{parts.path}?subject_prefix={DEAD_LETTER_SUBJECT_PREFIX}"
    settings = StreamSettings(
        retention_hours=retention_hours,
        replicas=replicas,
        duplicate_window_seconds=120.0,
        max_bytes=max_bytes,
        discard_oldest=True,
    )
    return await ensure_stream(stream_url, settings)
