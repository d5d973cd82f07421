"""``amplitude``: Amplitude's HTTP V2 API, ``POST /2/httpapi``. Secret ``apiKey``; setting
``region`` (``us`` → api2.amplitude.com, ``eu`` → api.eu.amplitude.com), optional
``groupType`` (default ``group``).

Body: ``{"api_key", "events": [...], "options": {"min_id_length": 1}}`` — up to 2000 events and
under 1 MB per request (``min_id_length`` 1 so short user ids are not dropped; Amplitude's
default minimum is 5 characters). Each event: ``user_id`` (userId), ``device_id``
(anonymousId), ``event_type``, ``time`` (ms since epoch), ``insert_id`` = messageId (Amplitude
ignores a repeated insert_id for 7 days, so retries do not duplicate), ``event_properties``,
``ip``, ``language``, ``app_version``, ``os_name``, ``os_version``, ``device_manufacturer``,
``device_model`` from ``context``, and ``library: liftoff``.

- ``track`` → ``event_type`` = the event name; ``page``/``screen`` → ``Loaded a Page`` /
  ``Loaded a Screen`` with ``name``/``category`` in event_properties.
- ``identify`` → an ``$identify`` event with ``user_properties: {"$set": traits}`` (also links
  user_id and device_id when both are present).
- ``group`` → an ``$identify`` event with ``groups: {<groupType>: groupId}`` (group properties
  are not sent: the Group Identify API is a separate endpoint).
- ``alias`` → skipped (Amplitude's user-mapping API needs the secret key).

Answers: 400 listing ``events_with_invalid_fields`` / ``events_with_missing_fields`` means none
was ingested: those events are parked and the others sent again (Amplitude's documented
handling); 413 → the request is split; 429 and 5xx are retried with backoff.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping

from services.consumers.broadcaster.model import (
    DestinationType,
    JsonObject,
    Rejected,
    Request,
    ResendWithout,
    Unit,
    Verdict,
    as_object,
    compact_json,
    context_value,
    default_verdict,
    epoch_millis,
    id_text,
    snippet,
    unit,
)

HOSTS = {"us": "https://api2.amplitude.com", "eu": "https://api.eu.amplitude.com"}
PAGE_EVENT = "Loaded a Page"
SCREEN_EVENT = "Loaded a Screen"
_CONTEXT_FIELDS = (
    ("ip", ("ip",)),
    ("language", ("locale",)),
    ("app_version", ("app", "version")),
    ("os_name", ("os", "name")),
    ("os_version", ("os", "version")),
    ("device_manufacturer", ("device", "manufacturer")),
    ("device_model", ("device", "model")),
)


class Amplitude(DestinationType):
    type_name = "amplitude"
    max_units = 2000
    max_bytes = 1_000_000

    def __init__(
        self,
        api_key: str,
        region: str = "us",
        api_url: str | None = None,
        group_type: str = "group",
    ) -> None:
        self._key = api_key
        self.url = (api_url or HOSTS[region]).rstrip("/") + "/2/httpapi"
        self.group_type = group_type

    def overhead(self, channel: Hashable) -> int:
        return len(self._envelope([])) + 2

    def _envelope(self, events: list[JsonObject]) -> bytes:
        return compact_json(
            {"api_key": self._key, "events": events, "options": {"min_id_length": 1}}
        )

    def units(self, index: int, event: JsonObject) -> list[Unit]:
        kind = event["type"]
        if kind == "alias":
            return []
        out: JsonObject = {}
        user, device = id_text(event.get("userId")), id_text(event.get("anonymousId"))
        if user is not None:
            out["user_id"] = user
        if device is not None:
            out["device_id"] = device
        if kind == "track":
            out["event_type"] = event["event"]
            out["event_properties"] = as_object(event.get("properties"))
        elif kind in ("page", "screen"):
            out["event_type"] = PAGE_EVENT if kind == "page" else SCREEN_EVENT
            properties = dict(as_object(event.get("properties")))
            for key in ("name", "category"):
                if isinstance(event.get(key), str):
                    properties[key] = event[key]
            out["event_properties"] = properties
        elif kind == "identify":
            out["event_type"] = "$identify"
            out["user_properties"] = {"$set": as_object(event.get("traits"))}
        else:  # group
            out["event_type"] = "$identify"
            group_id = id_text(event.get("groupId")) or str(event.get("groupId"))
            out["groups"] = {self.group_type: group_id}
        out["time"] = epoch_millis(event)
        out["insert_id"] = event["messageId"]
        for name, path in _CONTEXT_FIELDS:
            value = context_value(event, *path)
            if isinstance(value, str) and value:
                out[name] = value
        out["library"] = "liftoff"
        return [unit(index, "events", out)]

    def skip_reason(self, event: JsonObject) -> str:
        return "alias is not sent to Amplitude (user mapping needs the secret key)"

    def encode(self, channel: Hashable, units: list[Unit]) -> Request:
        body = self._envelope([u.body for u in units])
        headers = {"Content-Type": "application/json", "Accept": "*/*"}
        return Request(channel, units, self.url, body, headers, "amplitude /2/httpapi")

    def verdict(
        self, request: Request, status: int, headers: Mapping[str, str], body: bytes
    ) -> Verdict:
        if status == 400:
            rejected = _rejected_events(body, len(request.units))
            if rejected:
                return ResendWithout(rejected)
        if status in (401, 403):
            return Rejected(f"HTTP {status}: {snippet(body)}", isolate=False)
        return default_verdict(status, headers, body)


def _rejected_events(body: bytes, count: int) -> dict[int, str]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(answer, dict):
        return {}
    rejected: dict[int, str] = {}
    for key, problem in (
        ("events_with_invalid_fields", "invalid"),
        ("events_with_missing_fields", "missing"),
    ):
        fields = answer.get(key)
        for field, positions in fields.items() if isinstance(fields, dict) else ():
            for position in positions if isinstance(positions, list) else ():
                if isinstance(position, int) and 0 <= position < count:
                    rejected.setdefault(position, f"amplitude: {problem} field {field}")
    return rejected


def destination(
    name: str, settings: Mapping[str, str], secret: str, api_url: str | None
) -> Amplitude:
    """The registry's constructor (:mod:`services.consumers.broadcaster.destinations`)."""
    return Amplitude(
        secret, settings.get("region", "us"), api_url, settings.get("groupType", "group")
    )
