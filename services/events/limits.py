"""The limits a Segment request and its events are held to, and the error that names the one a
request or event broke (a 4xx answer)."""

from __future__ import annotations

import re
from typing import Any

MAX_EVENT_BYTES = 32 * 1024


MAX_REQUEST_BYTES = 500 * 1024


MAX_BATCH_EVENTS = 2500


KINESIS_MAX_PARTITION_KEY = 256


MAX_JSON_DEPTH = 64
"""Containers (objects/arrays) nested inside one event, the event object itself being level 1.
Deeper input past ~1000 levels is refused at the request level (the decoder's recursion bound)."""


MAX_PUBLISHED_EVENT_BYTES = 2 * MAX_EVENT_BYTES
"""An event as published: its 32 KiB as sent, plus room for the batch's context merged into it,
the fields the collector adds (messageId, timestamps, receivedAt, context.ip, liftoff: ~0.4 KB)
and identify ``traits`` copied from ``context.traits`` (RudderStack)."""


PUBLISHED_BYTES_PER_BODY_BYTE = 4


PUBLISHED_BYTES_PER_EVENT = 512
"""With PUBLISHED_BYTES_PER_BODY_BYTE, what one request may put on the stream
(:func:`published_bound`): the fields the collector adds cost up to ~0.4 KB an event (a batch
of 2500 minimal events grows ~7x), and a batch context repeated in every event may add up to
3x the body. Past it the request is refused (413) and nothing is published."""


MESSAGE_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,98}[\x21-\x7e])?")
"""1-100 printable ASCII characters, no leading or trailing space: the messageId travels as the
``Nats-Msg-Id`` header, whose value NATS trims and reads as printable ASCII (ADR-4), so ``" m1"``
and ``"m1"`` would silently deduplicate into one event and ``" "`` would never deduplicate."""


class InvalidInput(Exception):
    """A client error: maps to a 4xx answer naming the problem; nothing of the request is sent."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.field = field

    def as_json(self) -> dict[str, Any]:
        # Flat, with top-level "code" and "message": the shape Segment SDKs read errors from.
        answer: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.index is not None:
            answer["index"] = self.index
        if self.field is not None:
            answer["field"] = self.field
        return answer
