"""``webhook``: the enriched events, unchanged, as a signed JSON batch POSTed to ``settings.url``.

Request::

    POST <settings.url>
    Content-Type: application/json
    User-Agent: liftoff-broadcaster/1
    X-Liftoff-Destination: <destination name>
    X-Liftoff-Timestamp / X-Liftoff-Signature   (see services.consumers.broadcaster.signing)

    {"destination": "<name>", "batch": [<event>, <event>, ...]}

Every event type is sent (subject to the destination's filters), exactly as it is on the stream
(services/events/model.py). At most 500 events and 1 MB of body per request. A 2xx answer delivers
the batch; 408/425/429/5xx are retried (``Retry-After`` honoured); a 400/422 answer is treated
as one bad event: the batch is split until the rejected event is alone, and that one is parked;
other 4xx (401, 403, 404, ...) and redirects park the batch with the answer as the reason.

Delivery is at least once and not ordered across requests (up to
``LIFTOFF_BROADCAST_CONCURRENCY`` requests are in flight): receivers deduplicate on
``messageId`` and order by ``timestamp``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from services.consumers.broadcaster import signing
from services.consumers.broadcaster.model import (
    DestinationType,
    JsonObject,
    Request,
    Unit,
    compact_json,
    unit,
)

USER_AGENT = "liftoff-broadcaster/1"


class Webhook(DestinationType):
    type_name = "webhook"
    max_units = 500
    max_bytes = 1_000_000

    def __init__(self, name: str, url: str, signing_secret: str) -> None:
        self.name = name
        self.url = url
        self._secret = signing_secret
        self._envelope = len(compact_json({"destination": name, "batch": []}))

    def overhead(self, channel: Hashable) -> int:
        return self._envelope

    def units(self, index: int, event: JsonObject) -> list[Unit]:
        return [unit(index, "batch", event)]

    def encode(self, channel: Hashable, units: list[Unit]) -> Request:
        body = compact_json({"destination": self.name, "batch": [u.body for u in units]})
        return Request(
            channel=channel,
            units=units,
            url=self.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Liftoff-Destination": self.name,
            },
            label="webhook POST",
            sign=lambda payload: signing.sign(self._secret, payload),
        )


def destination(
    name: str, settings: Mapping[str, str], secret: str, api_url: str | None
) -> Webhook:
    """The registry's constructor (:mod:`services.consumers.broadcaster.destinations`)."""
    return Webhook(name, api_url or settings["url"], secret)
