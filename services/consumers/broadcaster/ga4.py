"""``ga4``: Google Analytics 4 Measurement Protocol,
``POST /mp/collect?measurement_id=&api_secret=``.
Secret ``apiSecret``; settings ``measurementId``, optional ``region`` (``eu`` →
region1.google-analytics.com, else www.google-analytics.com).

One request carries one client: ``{"client_id", "user_id"?, "events": [{"name", "params",
"timestamp_micros"}]}`` — at most 25 events and under 130 kB per request (the documented
limits). ``client_id`` is the anonymousId (else the userId); ``user_id`` the userId.

- ``track`` → the event name in snake_case (``Order Completed`` → ``order_completed``). GA4
  requires names of at most 40 letters, digits and ``_`` starting with a letter, not reserved
  (``session_start``, ``first_visit``, ...) and without the ``firebase_``, ``ga_``, ``google_``,
  ``gtag.`` prefixes: a name that cannot be made to fit is parked with the reason (renaming it
  silently would mix it up with another event).
- ``page`` → ``page_view`` (``page_location``, ``page_title``, ``page_referrer``); ``screen`` →
  ``screen_view`` (``screen_name``).
- ``params``: the event's ``properties`` whose names fit the same rule (others dropped), scalar
  values only (strings cut to 100 characters; nested objects dropped; an ``items`` list of
  objects kept for ecommerce events), at most 25.
- Time: ``timestamp_micros`` from ``timestamp``. GA4 accepts events at most 72 hours old; an
  older event is parked (GA4 would drop it silently).
- ``identify`` / ``group`` / ``alias`` → skipped: the Measurement Protocol records events only.

GA4 answers 2xx even for payloads it discards (it has no per-event errors); 429 and 5xx are
retried, other 4xx park the request's events.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

from services.consumers.broadcaster.model import (
    DestinationType,
    JsonObject,
    Request,
    Unit,
    Unsendable,
    as_object,
    compact_json,
    context_value,
    event_time,
    id_text,
    unit,
)

HOSTS = {"us": "https://www.google-analytics.com", "eu": "https://region1.google-analytics.com"}
MAX_AGE = timedelta(hours=72)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_EVENT_NAMES = frozenset(
    """ad_activeview ad_click ad_exposure ad_impression ad_query ad_reward adunit_exposure
    app_background app_clear_data app_exception app_install app_remove app_store_refund
    app_store_subscription_cancel app_store_subscription_convert app_store_subscription_renew
    app_update app_upgrade dynamic_link_app_open dynamic_link_app_update dynamic_link_first_open
    error firebase_campaign firebase_in_app_message_action firebase_in_app_message_dismiss
    firebase_in_app_message_impression first_open first_visit in_app_purchase
    notification_dismiss notification_foreground notification_open notification_receive
    notification_send os_update session_start user_engagement""".split()  # noqa: SIM905
)
MAX_PARAMS = 25
MAX_VALUE_CHARS = 100


def snake_case(name: str) -> str:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    return re.sub(r"[^A-Za-z0-9]+", "_", spaced).strip("_").lower()


def event_name(name: str) -> str:
    """The GA4 name for a track event's name; raises Unsendable when none fits the rules."""
    converted = snake_case(name)
    if not _NAME.match(converted):
        raise Unsendable(
            f"event name {name[:60]!r} cannot be a GA4 event name ({converted[:60]!r}: "
            "at most 40 letters, digits or '_', starting with a letter)"
        )
    if converted in RESERVED_EVENT_NAMES or converted.startswith(_RESERVED_PREFIXES):
        raise Unsendable(f"event name {name[:60]!r} maps to {converted!r}, reserved by GA4")
    return converted


def _param_name(key: str) -> str | None:
    name = snake_case(key)
    if not _NAME.match(name) or name.startswith(_RESERVED_PREFIXES):
        return None
    return name


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, bool | int | float):
        return value
    return None


def params_of(properties: JsonObject, preset: JsonObject | None = None) -> JsonObject:
    params: JsonObject = dict(preset or {})
    for key, value in properties.items():
        if len(params) >= MAX_PARAMS:
            break
        name = _param_name(key) if isinstance(key, str) else None
        if name is None or name in params:
            continue
        if name == "items" and isinstance(value, list):
            items = [
                {k: v for k, v in ((k, _scalar(v)) for k, v in item.items()) if v is not None}
                for item in value[:200]
                if isinstance(item, dict)
            ]
            if items:
                params["items"] = items
            continue
        scalar = _scalar(value)
        if scalar is not None:
            params[name] = scalar
    return params


class GA4(DestinationType):
    type_name = "ga4"
    max_units = 25
    max_bytes = 130_000

    def __init__(
        self,
        measurement_id: str,
        api_secret: str,
        region: str = "us",
        api_url: str | None = None,
        now: Any = None,
    ) -> None:
        base = (api_url or HOSTS.get(region, HOSTS["us"])).rstrip("/")
        query = urlencode({"measurement_id": measurement_id, "api_secret": api_secret})
        self.url = f"{base}/mp/collect?{query}"
        self._now = now or (lambda: datetime.now(UTC))

    def overhead(self, channel: Hashable) -> int:
        client_id, user_id = cast(tuple[str, str | None], channel)
        return len(compact_json(_envelope(client_id, user_id, []))) + 2

    def units(self, index: int, event: JsonObject) -> list[Unit]:
        kind = event["type"]
        if kind not in ("track", "page", "screen"):
            return []
        moment = event_time(event)
        if self._now() - moment > MAX_AGE:
            raise Unsendable(
                f"event time {event['timestamp']} is more than 72 hours ago: GA4 would drop it"
            )
        properties = as_object(event.get("properties"))
        if kind == "track":
            name, preset = event_name(event["event"]), {}
        elif kind == "page":
            name = "page_view"
            preset = {
                "page_location": properties.get("url") or context_value(event, "page", "url"),
                "page_title": properties.get("title") or context_value(event, "page", "title"),
                "page_referrer": properties.get("referrer")
                or context_value(event, "page", "referrer"),
            }
        else:
            name, preset = "screen_view", {"screen_name": event.get("name")}
        preset = {k: _scalar(v) for k, v in preset.items() if _scalar(v) not in (None, "")}
        body = {
            "name": name,
            "params": params_of(properties, preset),
            "timestamp_micros": round(moment.timestamp() * 1_000_000),
        }
        user = id_text(event.get("userId"))
        client = id_text(event.get("anonymousId")) or user
        return [unit(index, (client, user), body)]

    def skip_reason(self, event: JsonObject) -> str:
        return f"{event.get('type')} events are not sent to GA4 (Measurement Protocol takes events)"

    def encode(self, channel: Hashable, units: list[Unit]) -> Request:
        client_id, user_id = cast(tuple[str, str | None], channel)
        body = compact_json(_envelope(client_id, user_id, [u.body for u in units]))
        headers = {"Content-Type": "application/json"}
        return Request(channel, units, self.url, body, headers, "ga4 /mp/collect")


def _envelope(client_id: str, user_id: str | None, events: list[JsonObject]) -> JsonObject:
    envelope: JsonObject = {"client_id": client_id}
    if user_id is not None:
        envelope["user_id"] = user_id
    envelope["events"] = events
    return envelope


def destination(name: str, settings: Mapping[str, str], secret: str, api_url: str | None) -> GA4:
    """The registry's constructor (:mod:`services.consumers.broadcaster.destinations`)."""
    return GA4(settings["measurementId"], secret, settings.get("region", "us"), api_url)
