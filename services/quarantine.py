"""The collector's quarantine: invalid events of an otherwise valid request, kept with the reason.

SDKs do not retry a 4xx, so refusing a whole batch for one bad event would lose its valid
neighbours. The collector accepts the valid events and puts each invalid one here; the 200 is
sent only after the quarantine (like the stream) acknowledged it. ``LIFTOFF_DEAD_LETTER_URL``
chooses the target, as for the consumers' dead letters (:mod:`services.deadletter`):

- ``nats://host:port/DEADLETTER`` (the default on JetStream: the stream's servers) — one message
  per event on subject ``deadletter.collector``; body = the event's JSON exactly as sent; headers
  ``Liftoff-Reason``, ``Liftoff-Consumer: collector``, ``Liftoff-Source``, ``Liftoff-Index``
  (its index in the request), ``Liftoff-Code``, ``Liftoff-Field`` (when known),
  ``Liftoff-Message-Id`` (when it had a valid one), ``Liftoff-Received-At``, and
  ``Nats-Msg-Id: collector:<hash of source, index, body>`` so a client's retry of the same
  request is deduplicated by the server.
- ``sqs://<queue-name>`` (AWS) — one message per event, the consumers' dead-letter JSON shape:
  ``{"reason", "consumer": "collector", "attempts": 1, "event", "messageId", "subject": null,
  "position": null}`` plus ``"source"``, ``"index"``, ``"code"``, ``"field"``, ``"receivedAt"``.

``python -m services quarantine list|replay`` reads and replays the JetStream quarantine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.deadletter import DEAD_LETTER_SUBJECT_PREFIX
from services.segment import Rejected

log = logging.getLogger("liftoff.quarantine")

CONSUMER = "collector"
SUBJECT = f"{DEAD_LETTER_SUBJECT_PREFIX}.{CONSUMER}"
SQS_BATCH = 10  # SendMessageBatch's limit


class QuarantineUnavailable(Exception):
    """The quarantine did not acknowledge every event: the request must be retried (503)."""


class Quarantine(Protocol):
    async def start(self) -> None: ...

    async def put(self, source: str, received_at: str, rejected: Sequence[Rejected]) -> None:
        """Return once every event is acknowledged; raise QuarantineUnavailable otherwise."""

    async def close(self) -> None: ...


def dedupe_id(source: str, item: Rejected) -> str:
    digest = hashlib.sha256(f"{source}\0{item.index}\0".encode() + item.raw).hexdigest()
    return f"{CONSUMER}:{digest[:40]}"


def _header_value(text: str) -> str:
    # NATS header values are one line of printable ASCII (ADR-4).
    line = " ".join(text.split())[:1000]
    return line.encode("ascii", "backslashreplace").decode("ascii")


def nats_headers(source: str, received_at: str, item: Rejected) -> dict[str, str]:
    headers = {
        "Liftoff-Reason": _header_value(item.reason),
        "Liftoff-Consumer": CONSUMER,
        "Liftoff-Source": source,
        "Liftoff-Index": str(item.index),
        "Liftoff-Code": item.code,
        "Liftoff-Received-At": received_at,
        "Nats-Msg-Id": dedupe_id(source, item),
    }
    if item.field:
        headers["Liftoff-Field"] = _header_value(item.field)
    if item.message_id:
        headers["Liftoff-Message-Id"] = item.message_id
    return headers


def sqs_body(source: str, received_at: str, item: Rejected) -> str:
    event: Any
    try:
        event = json.loads(item.raw)
    except ValueError:  # not JSON, or not UTF-8: kept as text (undecodable bytes replaced)
        event = item.raw.decode("utf-8", errors="replace")
    return json.dumps(
        {
            "reason": item.reason,
            "consumer": CONSUMER,
            "attempts": 1,
            "event": event,
            "messageId": item.message_id,
            "subject": None,
            "position": None,
            "source": source,
            "index": item.index,
            "code": item.code,
            "field": item.field,
            "receivedAt": received_at,
        }
    )


class JetStreamQuarantine:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        from services.streams.jetstream import JetStreamAddress

        parts = urlsplit(url)
        address = JetStreamAddress.parse(f"nats://{parts.netloc}{parts.path}")
        self.servers = address.servers
        self.stream = address.stream
        self.timeout = timeout
        self._nc: Any = None
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import nats

        async def quiet(error: Exception) -> None:
            log.debug("quarantine NATS error", extra={"fields": {"error": repr(error)}})

        async def connect() -> None:
            self._nc = await nats.connect(
                servers=self.servers,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                error_cb=quiet,
            )

        # In the background, like the event stream: the collector starts even if NATS is not up.
        self._connecting = asyncio.create_task(connect(), name="quarantine-connect")

    async def put(self, source: str, received_at: str, rejected: Sequence[Rejected]) -> None:
        if self._nc is None or not self._nc.is_connected:
            raise QuarantineUnavailable("not connected to NATS")
        js = self._nc.jetstream(timeout=self.timeout)
        try:
            await asyncio.gather(
                *(
                    js.publish(
                        SUBJECT,
                        item.raw,
                        stream=self.stream,
                        headers=nats_headers(source, received_at, item),
                        timeout=self.timeout,
                    )
                    for item in rejected
                )
            )
        except Exception as error:  # timeouts, no stream, connection lost: all retryable
            raise QuarantineUnavailable(f"quarantine publish failed: {error!r}") from error

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


class SqsQuarantine:
    def __init__(self, url: str, client: Any = None) -> None:
        parts = urlsplit(url)
        self.queue_name = (parts.netloc + parts.path).strip("/")
        if not self.queue_name:
            raise ValueError(f"expected sqs://<queue-name>, got {url!r}")
        self._client = client
        self._queue_url: str | None = None

    async def start(self) -> None:
        if self._client is None:
            import boto3
            import botocore.config

            self._client = boto3.client(
                "sqs",
                config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=3,
                    read_timeout=5,
                ),
            )

    def _send(self, bodies: list[str]) -> None:
        if self._queue_url is None:
            self._queue_url = self._client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        for start in range(0, len(bodies), SQS_BATCH):
            entries = [
                {"Id": str(n), "MessageBody": body}
                for n, body in enumerate(bodies[start : start + SQS_BATCH])
            ]
            answer = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            if answer.get("Failed"):
                failure = answer["Failed"][0]
                raise QuarantineUnavailable(
                    f"SQS refused {len(answer['Failed'])} of {len(entries)} messages: "
                    f"{failure.get('Code')}"
                )

    async def put(self, source: str, received_at: str, rejected: Sequence[Rejected]) -> None:
        import botocore.exceptions

        bodies = [sqs_body(source, received_at, item) for item in rejected]
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._send, bodies)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise QuarantineUnavailable(f"SQS send failed: {error}") from error

    async def close(self) -> None:
        pass


def open_quarantine(url: str) -> Quarantine:
    scheme = urlsplit(url).scheme
    if scheme == "nats":
        return JetStreamQuarantine(url)
    if scheme == "sqs":
        return SqsQuarantine(url)
    raise ValueError(f"unsupported quarantine URL {url!r}: use nats://.../DEADLETTER or sqs://")
