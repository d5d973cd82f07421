"""Destination deletion APIs, against a local HTTP receiver standing in for each: the request
shapes their docs give, the webhook's signature, one call per second, 429 honoured."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.consumers.broadcaster.signing import verify
from services.regulations import command
from services.regulations.contract import parse
from services.regulations.destinations import MIN_INTERVAL_SECONDS
from tests.services.consumers.broadcaster.receiver import Receiver
from tests.services.regulations.test_deletion import KEY

pytestmark = pytest.mark.servers

SECRETS = {
    "amp": {"apiKey": "amp-key", "secretKey": "amp-secret"},
    "mp": {"projectToken": "mp-token", "oauthToken": "mp-oauth"},
    "ga": {"accessToken": "ga-token"},
    "hook": {"signingSecret": "hook-secret"},
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def test_delete_calls_each_destination_api(
    receiver: Receiver, warehouse: dict[str, str], tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps(SECRETS))
    destinations = [
        {"name": "amp", "type": "amplitude", "settings": {"apiUrl": receiver.url}},
        {"name": "mp", "type": "mixpanel", "settings": {"apiUrl": receiver.url}},
        {"name": "ga", "type": "ga4", "settings": {"apiUrl": receiver.url, "propertyId": "123"}},
        {"name": "hook", "type": "webhook", "settings": {"url": f"{receiver.url}/hook"}},
    ]
    # Mixpanel is busy once: its Retry-After is honoured, then the call succeeds.
    receiver.answer(429, path="/api/app", headers={"Retry-After": "1"}, times=1)
    settings = parse(
        {
            **warehouse,
            "LIFTOFF_SUPPRESSION_URL": "nats://127.0.0.1:1/unused",
            "LIFTOFF_SUPPRESSION_KEY": KEY,
            "LIFTOFF_REGULATION_DESTINATIONS": json.dumps(destinations),
            "LIFTOFF_REGULATION_SECRETS_FILE": str(secrets),
        }
    )
    assert command.run(settings, action="delete", user_ids=["u1"], anonymous_ids=["a1"]) == 0

    (amplitude,) = receiver.all("/api/2/deletions/users")
    assert amplitude.json == {
        "user_ids": ["u1"],
        "requester": "liftoff",
        "ignore_invalid_id": "True",
    }
    assert (
        amplitude.headers["authorization"]
        == "Basic " + base64.b64encode(b"amp-key:amp-secret").decode()
    )

    busy, mixpanel = receiver.all("/api/app/data-deletions/v3.0/")
    assert busy.status == 429 and mixpanel.status == 200
    assert mixpanel.at - busy.at >= 1.0  # Retry-After
    assert mixpanel.query == {"token": "mp-token"}
    assert mixpanel.headers["authorization"] == "Bearer mp-oauth"
    assert mixpanel.json == {"distinct_ids": ["u1", "a1"], "compliance_type": "GDPR"}

    ga4 = receiver.all("/analytics/v3/userDeletion/userDeletionRequests:upsert")
    assert [r.json["id"] for r in ga4] == [
        {"type": "USER_ID", "userId": "u1"}, {"type": "CLIENT_ID", "userId": "a1"},
    ]  # fmt: skip
    assert all(
        r.json["propertyId"] == "123" and r.json["kind"] == "analytics#userDeletionRequest"
        for r in ga4
    )
    # Rate-limited: the sender starts the second call a full interval after the first, but the
    # receiver sees the first arrive late when its connection is slow to set up (0.89 s apart
    # once on a loaded machine); a client that did not pace would send both within milliseconds.
    assert ga4[1].at - ga4[0].at >= MIN_INTERVAL_SECONDS * 0.5

    (hook,) = receiver.all("/hook")
    assert hook.json == {
        "type": "delete",
        "requestId": 1,
        "userIds": ["u1"],
        "anonymousIds": ["a1"],
    }
    assert verify(
        "hook-secret",
        hook.body,
        hook.headers["x-liftoff-timestamp"],
        hook.headers["x-liftoff-signature"],
    )

    (request,) = command.record.status(command.connect(settings))
    assert {t: v["status"] for t, v in request["targets"].items()} == {
        "warehouse": "done", "destination:amp": "done", "destination:mp": "done",
        "destination:ga": "done", "destination:hook": "done",
    }  # fmt: skip


def test_a_refusing_destination_fails_its_target_only(
    receiver: Receiver, warehouse: dict[str, str], tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps(SECRETS))
    receiver.answer(401, path="/hook", body={"error": "bad signature"})
    destinations = [
        {"name": "hook", "type": "webhook", "settings": {"url": f"{receiver.url}/hook"}}
    ]
    settings = parse(
        {
            **warehouse,
            "LIFTOFF_SUPPRESSION_URL": "nats://127.0.0.1:1/unused",
            "LIFTOFF_SUPPRESSION_KEY": KEY,
            "LIFTOFF_REGULATION_DESTINATIONS": json.dumps(destinations),
            "LIFTOFF_REGULATION_SECRETS_FILE": str(secrets),
        }
    )
    assert command.run(settings, action="delete", user_ids=["u1"]) == 1
    (request,) = command.record.status(command.connect(settings))
    assert request["targets"]["warehouse"]["status"] == "done"
    target = request["targets"]["destination:hook"]
    assert target["status"] == "failed" and "401" in target["reason"]
