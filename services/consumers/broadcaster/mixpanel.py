"""``mixpanel``: Mixpanel's Ingestion API — ``/import`` for events, ``/engage`` and ``/groups``
for profiles. Secret ``projectToken``; settings ``region`` (``us`` → api.mixpanel.com, ``eu`` →
api-eu.mixpanel.com), optional ``groupKey``.

- ``track`` / ``page`` / ``screen`` → ``POST /import?strict=1`` (HTTP Basic auth, the project
  token as user name, empty password), a JSON array of ``{"event", "properties"}`` — up to 2000
  events and 2 MB per request. ``page`` is named ``Loaded a Page``, ``screen`` ``Loaded a
  Screen`` (with ``name``/``category`` properties). Properties: the event's ``properties``, plus
  ``time`` (ms since epoch, from ``timestamp``), ``distinct_id``, ``$insert_id``, ``$device_id``
  (anonymousId), ``$user_id`` (userId), ``ip`` (context.ip), ``$current_url``/``$referrer``
  (context.page), ``mp_lib: liftoff``, ``liftoff_source``. Identity follows Mixpanel's
  Simplified ID Merge: ``distinct_id`` is the userId, else ``$device:<anonymousId>``; an event
  carrying both ``$device_id`` and ``$user_id`` links the two.
- Dedupe: ``$insert_id`` = messageId when it fits Mixpanel's rule (≤ 36 characters, letters,
  digits and ``-``), else the first 36 hex digits of its SHA-256 (stable across retries).
- ``identify`` → ``POST /engage?verbose=1``: ``{"$token", "$distinct_id", "$set": traits}``
  (``email``, ``name``, ``firstName``, ``lastName``, ``phone``, ``avatar``, ``createdAt`` are
  renamed to Mixpanel's ``$email``, ``$name``, ...), 50 updates per request. Skipped when it has
  no traits.
- ``group`` → ``POST /groups?verbose=1``: ``{"$token", "$group_key": settings.groupKey,
  "$group_id", "$set": traits}`` — only when ``groupKey`` is configured, else skipped.
- ``alias`` → skipped: Simplified ID Merge links ids through ``$device_id``/``$user_id`` on
  events; ``$merge`` needs service-account credentials this destination does not hold.

Answers: ``/import`` 400 with ``failed_records`` is a partial success (the rest were ingested):
those events are parked with Mixpanel's message. ``/engage``/``/groups`` answer 200 even when
invalid; with ``verbose=1`` the body says ``{"status": 0, "error": ...}`` → parked (after
splitting, to isolate the bad update).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Hashable, Mapping

from services.consumers.broadcaster.model import (
    Accepted,
    DestinationType,
    JsonObject,
    Rejected,
    Request,
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

HOSTS = {"us": "https://api.mixpanel.com", "eu": "https://api-eu.mixpanel.com"}
_INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
_PROFILE_TRAITS = {
    "email": "$email",
    "name": "$name",
    "firstName": "$first_name",
    "lastName": "$last_name",
    "phone": "$phone",
    "avatar": "$avatar",
    "createdAt": "$created",
}
PAGE_EVENT = "Loaded a Page"
SCREEN_EVENT = "Loaded a Screen"


def insert_id(message_id: str) -> str:
    if _INSERT_ID.match(message_id):
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()[:36]


def distinct_id(event: JsonObject) -> str:
    user = id_text(event.get("userId"))
    if user is not None:
        return user
    return f"$device:{id_text(event.get('anonymousId'))}"


class Mixpanel(DestinationType):
    type_name = "mixpanel"

    def __init__(
        self,
        project_token: str,
        region: str = "us",
        api_url: str | None = None,
        group_key: str | None = None,
    ) -> None:
        self._token = project_token
        self.base = (api_url or HOSTS[region]).rstrip("/")
        self.group_key = group_key
        auth = base64.b64encode(f"{project_token}:".encode()).decode()
        self._import_headers = {
            "Content-Type": "application/json",
            "Authorization": f"Basic {auth}",
        }

    def limits(self, channel: Hashable) -> tuple[int, int]:
        return (2000, 2_000_000) if channel == "import" else (50, 2_000_000)

    def overhead(self, channel: Hashable) -> int:
        return 2

    def units(self, index: int, event: JsonObject) -> list[Unit]:
        kind = event["type"]
        if kind in ("track", "page", "screen"):
            return [unit(index, "import", self._event(event))]
        if kind == "identify":
            traits = as_object(event.get("traits")) or as_object(context_value(event, "traits"))
            if not traits:
                return []
            update = {
                "$token": self._token,
                "$distinct_id": distinct_id(event),
                "$set": {_PROFILE_TRAITS.get(k, k): v for k, v in traits.items()},
            }
            ip = context_value(event, "ip")
            update["$ip"] = ip if isinstance(ip, str) else "0"  # "0": do not geolocate our server
            return [unit(index, "engage", update)]
        if kind == "group" and self.group_key:
            update = {
                "$token": self._token,
                "$group_key": self.group_key,
                "$group_id": id_text(event.get("groupId")) or str(event.get("groupId")),
                "$set": as_object(event.get("traits")),
            }
            return [unit(index, "groups", update)]
        return []

    def skip_reason(self, event: JsonObject) -> str:
        kind = event.get("type")
        if kind == "identify":
            return "identify without traits: no profile update to send"
        if kind == "group":
            return "group events need settings.groupKey"
        return "alias is not sent: Simplified ID Merge links ids through events"

    def _event(self, event: JsonObject) -> JsonObject:
        kind = event["type"]
        properties = dict(as_object(event.get("properties")))
        if kind == "track":
            name = event["event"]
        else:
            name = PAGE_EVENT if kind == "page" else SCREEN_EVENT
            for key in ("name", "category"):
                if isinstance(event.get(key), str):
                    properties[key] = event[key]
        page_url = context_value(event, "page", "url")
        referrer = context_value(event, "page", "referrer")
        ip = context_value(event, "ip")
        if isinstance(page_url, str):
            properties.setdefault("$current_url", page_url)
        if isinstance(referrer, str) and referrer:
            properties.setdefault("$referrer", referrer)
        properties.update(
            {
                "time": epoch_millis(event),
                "distinct_id": distinct_id(event),
                "$insert_id": insert_id(event["messageId"]),
                "ip": ip if isinstance(ip, str) else "0",
                "mp_lib": "liftoff",
                "liftoff_source": event["liftoff"]["source"],
            }
        )
        for key, field in (("$device_id", "anonymousId"), ("$user_id", "userId")):
            value = id_text(event.get(field))
            if value is not None:
                properties[key] = value
        properties.pop("token", None)  # /import authenticates with the header
        return {"event": name, "properties": properties}

    def encode(self, channel: Hashable, units: list[Unit]) -> Request:
        body = compact_json([u.body for u in units])
        if channel == "import":
            url, headers = f"{self.base}/import?strict=1", self._import_headers
        else:
            url, headers = f"{self.base}/{channel}?verbose=1", {"Content-Type": "application/json"}
        return Request(channel, units, url, body, dict(headers), f"mixpanel /{channel}")

    def verdict(
        self, request: Request, status: int, headers: Mapping[str, str], body: bytes
    ) -> Verdict:
        if request.channel == "import" and status == 400:
            failed = _failed_records(body, len(request.units))
            if failed:
                return Accepted(failed)
        if request.channel != "import" and status == 200:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if isinstance(answer, dict) and answer.get("status") == 0:
                return Rejected(f"mixpanel /{request.channel}: {answer.get('error') or 'status 0'}")
        if status in (401, 403):
            return Rejected(f"HTTP {status}: {snippet(body)}", isolate=False)
        return default_verdict(status, headers, body)


def _failed_records(body: bytes, count: int) -> dict[int, str]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    records = answer.get("failed_records") if isinstance(answer, dict) else None
    failed: dict[int, str] = {}
    for record in records if isinstance(records, list) else ():
        if isinstance(record, dict) and isinstance(record.get("index"), int):
            position = record["index"]
            if 0 <= position < count:
                field = record.get("field") or "event"
                failed[position] = f"mixpanel rejected {field}: {record.get('message') or ''}"[:300]
    return failed


def destination(
    name: str, settings: Mapping[str, str], secret: str, api_url: str | None
) -> Mixpanel:
    """The registry's constructor (:mod:`services.consumers.broadcaster.destinations`)."""
    return Mixpanel(secret, settings.get("region", "us"), api_url, settings.get("groupKey"))
