"""Destination deletion APIs: each request shaped as its API documents it, rate-limited.

``LIFTOFF_REGULATION_DESTINATIONS`` lists the destinations to call, ``[{"name", "type",
"settings"}]`` (types and settings below; ``settings.apiUrl`` replaces the API's base URL, as
for the broadcaster), and ``LIFTOFF_REGULATION_SECRETS_FILE`` holds their deletion credentials,
``{"<name>": {"<field>": "..."}}``: these are not the ingestion credentials the broadcaster
holds (deletion APIs want an account's secret or an OAuth token), so they are given only to
the regulation command.

=========  =====================================================================================
type       call (checked against)
=========  =====================================================================================
amplitude  ``POST {https://amplitude.com | https://analytics.eu.amplitude.com}/api/2/deletions/
           users``, HTTP Basic ``apiKey:secretKey``, JSON ``{"user_ids": [...], "requester":
           "liftoff", "ignore_invalid_id": "True"}`` — Amplitude "User Privacy API"
           (Analytics APIs docs); at most 100 ids per request. Amplitude deletes by user id
           only: anonymous ids (device ids) are not sent.
mixpanel   ``POST {https://mixpanel.com | https://eu.mixpanel.com}/api/app/data-deletions/v3.0/
           ?token=<projectToken>``, ``Authorization: Bearer <oauthToken>``, JSON
           ``{"distinct_ids": [...], "compliance_type": "GDPR"}`` — Mixpanel "GDPR API"
           (Data Deletions v3.0); at most 1999 distinct ids per request (user and anonymous
           ids: the broadcaster sends either as ``distinct_id``).
ga4        ``POST https://analytics.googleapis.com/analytics/v3/userDeletion/
           userDeletionRequests:upsert``, ``Authorization: Bearer <accessToken>`` (OAuth 2,
           scope ``analytics.user.deletion``), JSON ``{"kind": "analytics#userDeletionRequest",
           "id": {"type": "USER_ID" | "CLIENT_ID", "userId": "..."}, "propertyId": "<id>"}`` —
           Google Analytics "User Deletion API" reference; one id per request.
webhook    ``POST <url>``, JSON ``{"type": "delete", "requestId", "userIds", "anonymousIds"}``
           signed exactly like the webhook's events (``X-Liftoff-Timestamp`` /
           ``X-Liftoff-Signature``, :mod:`services.consumers.broadcaster.signing`).
=========  =====================================================================================

Every destination is called at most once per ``MIN_INTERVAL_SECONDS`` (1 s): under what each
API allows; a 429 is retried after its ``Retry-After``, up to :data:`MAX_ATTEMPTS` times. Any
other non-2xx fails the destination's target with the status and the start of the answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from services.regulations.contract import DELETION_TYPES, DeletionDestination

MIN_INTERVAL_SECONDS = 1.0
MAX_ATTEMPTS = 5
TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Call:
    url: str
    body: bytes
    headers: Mapping[str, str]


Calls = Callable[
    [Mapping[str, str], Mapping[str, str], int, Sequence[str], Sequence[str]], Iterator[Call]
]


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _base(settings: Mapping[str, str], hosts: Mapping[str, str]) -> str:
    return (settings.get("apiUrl") or hosts[settings.get("region", "us")]).rstrip("/")


def _amplitude(settings: Mapping[str, str], secret: Mapping[str, str], request: int,
               users: Sequence[str], anonymous: Sequence[str]) -> Iterator[Call]:  # fmt: skip
    import base64

    url = _base(
        settings, {"us": "https://amplitude.com", "eu": "https://analytics.eu.amplitude.com"}
    )
    basic = base64.b64encode(f"{secret['apiKey']}:{secret['secretKey']}".encode()).decode()
    for chunk in _chunks(users, 100):
        body = {"user_ids": chunk, "requester": "liftoff", "ignore_invalid_id": "True"}
        yield Call(
            f"{url}/api/2/deletions/users",
            _json(body),
            {"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
        )


def _mixpanel(settings: Mapping[str, str], secret: Mapping[str, str], request: int,
              users: Sequence[str], anonymous: Sequence[str]) -> Iterator[Call]:  # fmt: skip
    from urllib.parse import quote

    url = _base(settings, {"us": "https://mixpanel.com", "eu": "https://eu.mixpanel.com"})
    token = quote(secret["projectToken"], safe="")
    for chunk in _chunks([*users, *anonymous], 1999):
        yield Call(
            f"{url}/api/app/data-deletions/v3.0/?token={token}",
            _json({"distinct_ids": chunk, "compliance_type": "GDPR"}),
            {"Authorization": f"Bearer {secret['oauthToken']}", "Content-Type": "application/json"},
        )


def _ga4(settings: Mapping[str, str], secret: Mapping[str, str], request: int,
         users: Sequence[str], anonymous: Sequence[str]) -> Iterator[Call]:  # fmt: skip
    base = settings.get("apiUrl", "https://analytics.googleapis.com").rstrip("/")
    url = f"{base}/analytics/v3/userDeletion/userDeletionRequests:upsert"
    headers = {
        "Authorization": f"Bearer {secret['accessToken']}",
        "Content-Type": "application/json",
    }
    for kind, ids in (("USER_ID", users), ("CLIENT_ID", anonymous)):
        for identifier in ids:
            body = {
                "kind": "analytics#userDeletionRequest",
                "id": {"type": kind, "userId": identifier},
                "propertyId": settings["propertyId"],
            }
            yield Call(url, _json(body), headers)


def _webhook(settings: Mapping[str, str], secret: Mapping[str, str], request: int,
             users: Sequence[str], anonymous: Sequence[str]) -> Iterator[Call]:  # fmt: skip
    from services.consumers.broadcaster.signing import sign

    body = _json({"type": "delete", "requestId": request, "userIds": list(users),
                  "anonymousIds": list(anonymous)})  # fmt: skip
    headers = {"Content-Type": "application/json", **sign(secret["signingSecret"], body)}
    yield Call(settings.get("apiUrl") or settings["url"], body, headers)


CALLS: dict[str, Calls] = {
    "amplitude": _amplitude,
    "mixpanel": _mixpanel,
    "ga4": _ga4,
    "webhook": _webhook,
}


def _retry_after(value: str | None) -> float:
    try:
        return min(60.0, max(MIN_INTERVAL_SECONDS, float(value or "")))
    except ValueError:  # absent, or an HTTP date
        return MIN_INTERVAL_SECONDS


def request_deletion(
    destination: DeletionDestination,
    secret: Mapping[str, str],
    request_id: int,
    user_ids: Sequence[str],
    anonymous_ids: Sequence[str],
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Call the destination's deletion API for the ids; the calls made (status of each)."""
    missing = [name for name in DELETION_TYPES[destination.type].secrets if not secret.get(name)]
    if missing:
        raise ValueError(f"the secrets file has no {missing} for destination {destination.name!r}")
    statuses: list[int] = []
    last = float("-inf")
    import httpx

    with client or httpx.Client(timeout=TIMEOUT_SECONDS) as http:
        calls = CALLS[destination.type]
        for call in calls(destination.settings, secret, request_id, user_ids, anonymous_ids):
            for _attempt in range(MAX_ATTEMPTS):
                sleep(max(0.0, last + MIN_INTERVAL_SECONDS - time.monotonic()))
                last = time.monotonic()
                answer = http.post(call.url, content=call.body, headers=dict(call.headers))
                if answer.status_code != 429:
                    break
                sleep(_retry_after(answer.headers.get("retry-after")))
            if not 200 <= answer.status_code < 300:
                raise RuntimeError(
                    f"{destination.type} answered {answer.status_code}: {answer.text[:200]}"
                )
            statuses.append(answer.status_code)
    return {"calls": len(statuses), "statuses": sorted(set(statuses))}
