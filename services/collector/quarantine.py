"""The collector's quarantine: invalid events of an otherwise valid request, kept with the reason.

SDKs do not retry a 4xx, so refusing a whole batch for one bad event would lose its valid
neighbours. The collector accepts the valid events and puts each invalid one here; the 200 is
sent only after the quarantine (like the stream) acknowledged it. ``LIFTOFF_DEAD_LETTER_URL``
chooses the target, as for the consumers' dead letters (:mod:`services.stream.dead_letters`):

- ``nats://host:port/DEADLETTER`` (the default on JetStream: the stream's servers) — one
  message per event on subject ``deadletter.collector``; body = the event's JSON exactly as
  sent (minus a ``writeKey``); headers ``Liftoff-Reason``, ``Liftoff-Consumer: collector``,
  ``Liftoff-Source``,
  ``Liftoff-Route`` (the path it was posted to: single-event paths take the type from it),
  ``Liftoff-Index`` (its index in the request), ``Liftoff-Code``, ``Liftoff-Field`` (when
  known), ``Liftoff-Message-Id`` (when it had a valid one), ``Liftoff-Received-At``, and
  ``Nats-Msg-Id: collector:<hash of source, index, body>`` so a client's retry of the same
  request is deduplicated by the server.
- ``sqs://<queue-name>`` (AWS) — one message per event, the consumers' dead-letter JSON shape:
  ``{"reason", "consumer": "collector", "attempts": 1, "event", "messageId", "subject": null,
  "position": null}`` plus ``"source"``, ``"route"``, ``"index"``, ``"code"``, ``"field"``,
  ``"receivedAt"``; when the event is not UTF-8 JSON (or too large once escaped), ``"event"``
  is null and ``"eventBase64"`` holds its exact bytes.

Batch-level ``context``, ``integrations`` and ``sentAt`` are not part of the quarantined body
(it is the event exactly as sent); a replay fills ``context.ip`` from nothing and corrects no
clock skew.

``python -m services quarantine list|replay`` reads and replays the JetStream quarantine.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.collector.contract import QuarantineSettings
from services.events.records import Rejected
from services.stream.dead_letters import DEAD_LETTER_SUBJECT_PREFIX, by_scheme
from services.stream.side_channels import BackgroundJetStream, SqsQueue

log = logging.getLogger("liftoff.quarantine")

CONSUMER = "collector"
SUBJECT = f"{DEAD_LETTER_SUBJECT_PREFIX}.{CONSUMER}"
SQS_BATCH = 10  # SendMessageBatch's limit
SQS_MAX_BODY = 1_000_000  # SQS: 1 MiB per message and per SendMessageBatch request


class QuarantineUnavailable(Exception):
    """The quarantine did not acknowledge every event: the request must be retried (503)."""


class Quarantine(Protocol):
    async def start(self) -> None: ...

    async def put(
        self, source: str, route: str, received_at: str, rejected: Sequence[Rejected]
    ) -> None:
        """Return once every event is acknowledged; raise QuarantineUnavailable otherwise."""

    async def close(self) -> None: ...


def dedupe_id(source: str, item: Rejected) -> str:
    digest = hashlib.sha256(f"{source}\0{item.index}\0".encode() + item.raw).hexdigest()
    return f"{CONSUMER}:{digest[:40]}"


def _header_value(text: str) -> str:
    # NATS header values are one line of printable ASCII (ADR-4).
    line = " ".join(text.split())[:1000]
    return line.encode("ascii", "backslashreplace").decode("ascii")


def nats_headers(source: str, route: str, received_at: str, item: Rejected) -> dict[str, str]:
    headers = {
        "Liftoff-Reason": _header_value(item.reason),
        "Liftoff-Consumer": CONSUMER,
        "Liftoff-Source": source,
        "Liftoff-Route": route,
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


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON text, but no float holds it
        raise ValueError(f"{text} does not fit a 64-bit float")
    return value


def strict_event(raw: bytes) -> tuple[bool, Any]:
    """(True, the event decoded) when it reads back as strict JSON (UTF-8, numbers a float
    holds), else (False, None). Re-encoded, what it decoded to is strict JSON again: Python's
    json would otherwise turn 1e999 into Infinity, which JSON.parse and jq refuse."""
    try:
        return True, json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, out of range, too deep
        return False, None


def event_as_json(raw: bytes) -> Any:
    """A stored event for a listing: decoded when it is strict JSON, else its text (bytes that
    are not UTF-8 escaped), so the listing itself is always strict JSON."""
    decoded, event = strict_event(raw)
    return event if decoded else raw.decode("utf-8", errors="backslashreplace")


def sqs_body(source: str, route: str, received_at: str, item: Rejected) -> str:
    """The SQS message: the event as JSON when it is, else exactly its bytes in base64. Always
    ASCII (json.dumps escapes the rest): SQS refuses some characters, and a refused quarantine
    write would answer 503 to every retry of the request."""
    exact: str | None = None
    decoded, event = strict_event(item.raw)
    if not decoded:  # not JSON, not UTF-8, a number no float holds, nested past json's bound
        exact = base64.b64encode(item.raw).decode()
    document = {
        "reason": item.reason,
        "consumer": CONSUMER,
        "attempts": 1,
        "event": event,
        "messageId": item.message_id,
        "subject": None,
        "position": None,
        "source": source,
        "route": route,
        "index": item.index,
        "code": item.code,
        "field": item.field,
        "receivedAt": received_at,
    }
    if exact is not None:
        document["eventBase64"] = exact
    body = json.dumps(document)
    if len(body) > SQS_MAX_BODY:
        # Escaped non-ASCII text can grow 6x; base64 of the at most 500 KB body fits.
        document["event"] = None
        document["eventBase64"] = base64.b64encode(item.raw).decode()
        body = json.dumps(document)
    return body


class JetStreamQuarantine(BackgroundJetStream):
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        # In the background, like the event stream: the collector starts even if NATS is not up.
        super().__init__(url, timeout, "quarantine", log)

    async def put(
        self, source: str, route: str, received_at: str, rejected: Sequence[Rejected]
    ) -> None:
        js = self.jetstream()
        if js is None:
            raise QuarantineUnavailable("not connected to NATS")
        try:
            await asyncio.gather(
                *(
                    js.publish(
                        SUBJECT,
                        item.raw,
                        stream=self.stream,
                        headers=nats_headers(source, route, received_at, item),
                        timeout=self.timeout,
                    )
                    for item in rejected
                )
            )
        except Exception as error:  # timeouts, no stream, connection lost: all retryable
            raise QuarantineUnavailable(f"quarantine publish failed: {error!r}") from error


class SqsQuarantine(SqsQueue):
    def __init__(self, url: str, client: Any = None) -> None:
        super().__init__(url, client, read_timeout=5)

    def _send(self, bodies: list[str]) -> None:
        queue_url = self.queue_url()
        for chunk in _sqs_batches(bodies):
            entries = [{"Id": str(n), "MessageBody": body} for n, body in enumerate(chunk)]
            answer = self._client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            if answer.get("Failed"):
                failure = answer["Failed"][0]
                raise QuarantineUnavailable(
                    f"SQS refused {len(answer['Failed'])} of {len(entries)} messages: "
                    f"{failure.get('Code')}"
                )

    async def put(
        self, source: str, route: str, received_at: str, rejected: Sequence[Rejected]
    ) -> None:
        import botocore.exceptions

        bodies = [sqs_body(source, route, received_at, item) for item in rejected]
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._send, bodies)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise QuarantineUnavailable(f"SQS send failed: {error}") from error


def _sqs_batches(bodies: list[str]) -> list[list[str]]:
    """At most 10 messages and SQS_MAX_BODY bytes per SendMessageBatch."""
    batches: list[list[str]] = []
    size = 0
    for body in bodies:
        if not batches or len(batches[-1]) == SQS_BATCH or size + len(body) > SQS_MAX_BODY:
            batches.append([])
            size = 0
        batches[-1].append(body)
        size += len(body)
    return batches


def open_quarantine(url: str) -> Quarantine:
    stores: dict[str, Callable[[str], Quarantine]] = {
        "nats": JetStreamQuarantine,
        "sqs": SqsQuarantine,
    }
    return by_scheme(url, stores, "quarantine")


# --- reading and replaying the JetStream quarantine (python -m services quarantine ...) -------


@dataclass(frozen=True)
class QuarantinedEvent:
    sequence: int
    headers: dict[str, str]
    raw: bytes

    def as_json(self) -> dict[str, Any]:
        h = self.headers
        return {
            "sequence": self.sequence,
            "source": h.get("Liftoff-Source"),
            "route": h.get("Liftoff-Route"),
            "index": header_index(h),
            "code": h.get("Liftoff-Code"),
            "field": h.get("Liftoff-Field"),
            "reason": h.get("Liftoff-Reason"),
            "messageId": h.get("Liftoff-Message-Id"),
            "receivedAt": h.get("Liftoff-Received-At"),
            # Kept byte for byte; shown decoded when strict JSON, else as text.
            "event": event_as_json(self.raw),
        }


def header_index(headers: dict[str, str]) -> int | None:
    """``Liftoff-Index`` as the integer it is everywhere else (None when absent)."""
    value = headers.get("Liftoff-Index", "")
    return int(value) if value.isascii() and value.isdigit() else None


async def read_quarantine(
    url: str, *, limit: int | None = None, sequences: Sequence[int] = ()
) -> list[QuarantinedEvent]:
    """The collector's quarantined events (subject ``deadletter.collector``), oldest first."""
    import nats
    import nats.js.errors

    from services.stream.jetstream import stream_credentials

    parts = urlsplit(url)
    stream = parts.path.strip("/")
    nc = await nats.connect(
        f"nats://{parts.netloc}", **stream_credentials(), allow_reconnect=False, connect_timeout=5
    )
    try:
        js = nc.jetstream(timeout=5)
        found: list[QuarantinedEvent] = []
        if sequences:
            for sequence in sequences:
                try:
                    message = await js.get_msg(stream, sequence)
                except nats.js.errors.NotFoundError:
                    continue
                if message.subject == SUBJECT:
                    found.append(_quarantined(message))
            return found
        sequence = 1
        while limit is None or len(found) < limit:
            try:
                message = await js.get_msg(stream, sequence, subject=SUBJECT, next=True)
            except nats.js.errors.NotFoundError:
                break
            found.append(_quarantined(message))
            sequence = (message.seq or sequence) + 1
        return found
    finally:
        await nc.close()


def _quarantined(message: Any) -> QuarantinedEvent:
    return QuarantinedEvent(message.seq, dict(message.headers or {}), message.data or b"")


async def replay_quarantine(
    quarantine_url: str,
    stream_url: str,
    sequences: Sequence[int] = (),
    body: bytes | None = None,
) -> list[dict[str, Any]]:
    """Validate quarantined events again (``body`` replaces the one event's JSON, e.g. repaired
    by hand); publish those now valid to the event stream and delete them from the quarantine
    only once the stream acknowledged them. Returns one outcome per event."""
    import nats

    from services.stream.base import open_stream
    from services.stream.jetstream import stream_credentials

    events = await read_quarantine(quarantine_url, sequences=sequences)
    if body is not None and len(events) != 1:
        raise ValueError("a replacement body needs exactly one quarantined event (--seq N)")
    stream = open_stream(stream_url)
    await stream.start()
    outcomes: list[dict[str, Any]] = []
    parts = urlsplit(quarantine_url)
    nc = await nats.connect(
        f"nats://{parts.netloc}", **stream_credentials(), allow_reconnect=False, connect_timeout=5
    )
    try:
        await _wait_connected(stream)
        js = nc.jetstream(timeout=5)
        for item in events:
            outcome, records = _validated_again(item, body)
            if records:
                await stream.publish(records)
                await js.delete_msg(parts.path.strip("/"), item.sequence)
            outcomes.append(outcome)
        return outcomes
    finally:
        await nc.close()
        await stream.close()


def _validated_again(
    item: QuarantinedEvent, body: bytes | None
) -> tuple[dict[str, Any], list[Any]]:
    """(the outcome, the records to publish: none when the event is still invalid)."""
    from datetime import UTC, datetime

    from services.collector.ingest import ROUTES
    from services.events.records import validate_events
    from services.events.segment import ParsedBody

    raw = body if body is not None else item.raw
    source = item.headers.get("Liftoff-Source", "")
    event_type = ROUTES.get(item.headers.get("Liftoff-Route", ""), None)
    try:
        parsed = (
            _single(raw, event_type)
            if event_type
            else ParsedBody([raw], None, None, None, None, None)
        )
        validated = validate_events(parsed, event_type, source, datetime.now(UTC))
    except Exception as error:  # InvalidInput for a body that is still unreadable
        return {"sequence": item.sequence, "replayed": False, "reason": str(error)}, []
    if validated.rejected:
        reason = validated.rejected[0].reason
        return {"sequence": item.sequence, "replayed": False, "reason": reason}, []
    records = validated.records
    return {
        "sequence": item.sequence,
        "replayed": True,
        "messageId": records[0].message_id,
    }, records


def _single(raw: bytes, event_type: str) -> Any:
    from services.events.segment import parse_body

    return parse_body(raw, event_type)


async def _wait_connected(stream: Any, deadline: float = 10.0) -> None:
    from services.stream.base import StreamUnavailable

    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while True:
        try:
            await stream.check_ready()
            return
        except StreamUnavailable:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(0.05)


def run(
    settings: QuarantineSettings[str],
    action: str,
    limit: int | None = None,
    sequences: list[int] | None = None,
    body_file: str | None = None,
) -> int:
    """``python -m services quarantine list|replay``: list the quarantined events as JSON lines,
    or replay them (validate again, optionally a repaired body; publish the now-valid ones;
    delete those from the quarantine). Exit 1 when an event could not be replayed."""
    import asyncio
    import json
    from pathlib import Path

    from services.collector.config import quarantine_url
    from services.contract import ConfigError, level_of
    from services.observability import configure_logging
    from services.stream.contract import require_nats_dead_letter, stream_url

    configure_logging(level_of(settings.log_level))
    stream = stream_url(settings.stream, ("nats",))
    url = require_nats_dead_letter(quarantine_url(settings.quarantine_url, stream))
    if action == "list":
        events = asyncio.run(read_quarantine(url, limit=limit, sequences=sequences or ()))
        for event in events:
            print(json.dumps(event.as_json(), sort_keys=True), flush=True)
        return 0
    body = Path(body_file).read_bytes() if body_file else None
    try:
        outcomes = asyncio.run(replay_quarantine(url, stream, sequences or (), body=body))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for outcome in outcomes:
        print(json.dumps(outcome, sort_keys=True), flush=True)
    return 0 if all(o["replayed"] for o in outcomes) else 1
