"""What each destination type puts on the wire, read back by the receiver (a real HTTP server)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

from services.consumers.broadcaster import signing
from services.consumers.broadcaster.destinations import TYPES
from tests.services.consumers.broadcaster.conftest import SECRETS, deliver, spec
from tests.services.consumers.broadcaster.receiver import EventFactory, Receiver


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def test_every_destination_type_has_its_wire_format_tested_here() -> None:
    """A new type in the registry comes with `test_<type>_...` here (what it sends, read back)."""
    tested = {name.split("_")[1] for name in globals() if name.startswith("test_")}
    assert set(TYPES) <= tested, sorted(set(TYPES) - tested)


# --- webhook -----------------------------------------------------------------------------------


def test_webhook_posts_the_events_unchanged_with_a_verifiable_signature(
    receiver: Receiver, events: EventFactory
) -> None:
    originals = [events.make(), events.make("identify", traits={"email": "a@b.c"})]
    outcomes = deliver(spec("webhook", receiver.url), [json.dumps(e).encode() for e in originals])
    assert statuses(outcomes) == ["delivered", "delivered"]
    (request,) = receiver.all()
    assert request.path == "/hooks/liftoff"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-liftoff-destination"] == "webhook-test"
    assert request.json == {"destination": "webhook-test", "batch": originals}
    timestamp = request.headers["x-liftoff-timestamp"]
    signature = request.headers["x-liftoff-signature"]
    assert signing.verify(SECRETS["webhook"], request.body, timestamp, signature)
    # The recipe, spelled out: HMAC-SHA256 over "<timestamp>.<raw body>".
    import hmac

    expected = hmac.new(
        SECRETS["webhook"].encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert signature == f"sha256={expected}"
    assert not signing.verify("another-secret", request.body, timestamp, signature)
    assert not signing.verify(SECRETS["webhook"], request.body + b" ", timestamp, signature)
    assert not signing.verify(
        SECRETS["webhook"], request.body, timestamp, signature, now=int(timestamp) + 301
    )
    assert SECRETS["webhook"] not in json.dumps(request.headers)


def test_webhook_batches_stay_within_500_events(receiver: Receiver, events: EventFactory) -> None:
    outcomes = deliver(spec("webhook", receiver.url), [events.data() for _ in range(1203)])
    assert set(statuses(outcomes)) == {"delivered"}
    sizes = [len(r.json["batch"]) for r in receiver.all()]
    assert sorted(sizes) == [203, 500, 500]  # requests run concurrently: any arrival order
    ids = sorted(e["messageId"] for r in receiver.all() for e in r.json["batch"])
    assert ids == [f"m-{i:05d}" for i in range(1, 1204)]


# --- Mixpanel ----------------------------------------------------------------------------------


def test_mixpanel_import_format(receiver: Receiver, events: EventFactory) -> None:
    track = events.make(
        messageId="ajs-next-1c7f2d9e8b0a4c3d9e8f7a6b5c4d3e2f1a0b",  # too long for $insert_id
        context={"ip": "198.51.100.7", "page": {"url": "https://x.test/a", "referrer": ""}},
    )
    anonymous_page = events.make("page", name="Home", userId=None, anonymousId="anon-77")
    del anonymous_page["userId"]
    outcomes = deliver(
        spec("mixpanel", receiver.url),
        [json.dumps(track).encode(), json.dumps(anonymous_page).encode()],
    )
    assert statuses(outcomes) == ["delivered", "delivered"]
    (request,) = receiver.all()
    assert (request.path, request.query) == ("/import", {"strict": "1"})
    user, _ = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).split(b":")
    assert user.decode() == SECRETS["mixpanel"]
    first, second = request.json
    assert first["event"] == "Order Completed"
    p = first["properties"]
    assert p["time"] == int(datetime(2026, 11, 27, 20, 19, 3, tzinfo=UTC).timestamp() * 1000)
    assert p["distinct_id"] == track["userId"] == p["$user_id"]
    assert p["$device_id"] == track["anonymousId"]
    assert p["$insert_id"] == hashlib.sha256(track["messageId"].encode()).hexdigest()[:36]
    assert (p["revenue"], p["currency"], p["ip"]) == (12.5, "EUR", "198.51.100.7")
    assert p["$current_url"] == "https://x.test/a"
    assert "$referrer" not in p
    assert p["liftoff_source"] == "web"
    assert second["event"] == "Loaded a Page"
    q = second["properties"]
    assert (q["distinct_id"], q["$device_id"], q["name"]) == ("$device:anon-77", "anon-77", "Home")
    assert q["$insert_id"] == anonymous_page["messageId"]
    assert "$user_id" not in q


def test_mixpanel_profiles_groups_and_skips(receiver: Receiver, events: EventFactory) -> None:
    identify = events.make("identify", traits={"email": "a@b.c", "firstName": "Ada", "tier": 2})
    batch = [
        json.dumps(identify).encode(),
        events.data("identify", traits={}),  # nothing to set
        events.data("group"),
        events.data("alias"),
    ]
    outcomes = deliver(spec("mixpanel", receiver.url, settings={"groupKey": "company"}), batch)
    assert statuses(outcomes) == ["delivered", "skipped", "delivered", "skipped"]
    assert "Simplified ID Merge" in outcomes[3].reason
    (engage,) = receiver.all("/engage")
    assert engage.query == {"verbose": "1"}
    assert engage.json == [
        {
            "$token": SECRETS["mixpanel"],
            "$distinct_id": identify["userId"],
            "$set": {"$email": "a@b.c", "$first_name": "Ada", "tier": 2},
            "$ip": "203.0.113.9",
        }
    ]
    (groups,) = receiver.all("/groups")
    assert groups.json[0]["$group_key"] == "company"
    assert (groups.json[0]["$group_id"], groups.json[0]["$set"]) == ("acme", {"plan": "pro"})
    without_key = deliver(spec("mixpanel", receiver.url), [events.data("group")])
    assert statuses(without_key) == ["skipped"]


def test_mixpanel_partial_import_failure_parks_only_the_failed_records(
    receiver: Receiver, events: EventFactory
) -> None:
    receiver.answer(
        400,
        path="/import",
        body={
            "code": 400,
            "error": "some data points in the request failed validation",
            "num_records_imported": 2,
            "failed_records": [
                {"index": 1, "insert_id": "x", "field": "properties.time", "message": "too old"}
            ],
        },
    )
    outcomes = deliver(spec("mixpanel", receiver.url), [events.data() for _ in range(3)])
    assert statuses(outcomes) == ["delivered", "parked", "delivered"]
    assert "properties.time" in outcomes[1].reason and "too old" in outcomes[1].reason
    assert len(receiver.all()) == 1  # accepted ones are not sent again


def test_mixpanel_engage_status_zero_is_a_rejection(
    receiver: Receiver, events: EventFactory
) -> None:
    receiver.answer(200, path="/engage", body={"status": 0, "error": "bad $set"})
    outcomes = deliver(spec("mixpanel", receiver.url), [events.data("identify", traits={"a": 1})])
    assert outcomes[0].status == "parked" and "bad $set" in outcomes[0].reason


# --- Amplitude ---------------------------------------------------------------------------------


def test_amplitude_http_v2_format(receiver: Receiver, events: EventFactory) -> None:
    track = events.make(userId=7, context={"ip": "198.51.100.7", "os": {"name": "iOS"}})
    batch = [
        json.dumps(track).encode(),
        events.data("identify", traits={"plan": "pro"}),
        events.data("screen", name="Settings"),
        events.data("group"),
        events.data("alias"),
    ]
    outcomes = deliver(spec("amplitude", receiver.url), batch)
    assert statuses(outcomes) == ["delivered"] * 4 + ["skipped"]
    (request,) = receiver.all()
    assert request.path == "/2/httpapi"
    body = request.json
    assert body["api_key"] == SECRETS["amplitude"]
    assert body["options"] == {"min_id_length": 1}
    first, identify, screen, group = body["events"]
    assert first == {
        "user_id": "7",
        "device_id": track["anonymousId"],
        "event_type": "Order Completed",
        "event_properties": {"revenue": 12.5, "currency": "EUR"},
        "time": int(datetime(2026, 11, 27, 20, 19, 3, tzinfo=UTC).timestamp() * 1000),
        "insert_id": track["messageId"],
        "ip": "198.51.100.7",
        "os_name": "iOS",
        "library": "liftoff",
    }
    assert (identify["event_type"], identify["user_properties"]) == (
        "$identify",
        {"$set": {"plan": "pro"}},
    )
    assert (screen["event_type"], screen["event_properties"]) == (
        "Loaded a Screen",
        {"name": "Settings"},
    )
    assert group["groups"] == {"group": "acme"}


def test_amplitude_400_parks_the_listed_events_and_resends_the_rest(
    receiver: Receiver, events: EventFactory
) -> None:
    receiver.answer(
        400,
        path="/2/httpapi",
        times=1,
        body={
            "code": 400,
            "error": "Request missing required field",
            "events_with_invalid_fields": {"time": [1]},
            "events_with_missing_fields": {"event_type": [3]},
        },
    )
    outcomes = deliver(spec("amplitude", receiver.url), [events.data() for _ in range(4)])
    assert statuses(outcomes) == ["delivered", "parked", "delivered", "parked"]
    assert outcomes[1].reason == "amplitude: invalid field time"
    assert outcomes[3].reason == "amplitude: missing field event_type"
    first, second = receiver.all()
    assert first.status == 400
    assert [e["insert_id"] for e in second.json["events"]] == ["m-00001", "m-00003"]


# --- GA4 ---------------------------------------------------------------------------------------


def test_ga4_measurement_protocol_format(receiver: Receiver, events: EventFactory) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    events.base = {"timestamp": now}
    long_value = "x" * 150
    batch = [
        events.data(
            anonymousId="client-1",
            userId="user-1",
            properties={
                "revenue": 12.5,
                "Item Count": 2,
                "nested": {"a": 1},
                "note": long_value,
                "items": [{"item_id": "sku-1", "price": 3, "meta": {"x": 1}}],
            },
        ),
        events.data(
            "page",
            anonymousId="client-1",
            userId="user-1",
            properties={"url": "https://x.test/p", "title": "P"},
        ),
        events.data(anonymousId="client-2", userId="user-2", event="Signed Up"),
        events.data("identify", anonymousId="client-2"),
    ]
    outcomes = deliver(spec("ga4", receiver.url), batch)
    assert statuses(outcomes) == ["delivered", "delivered", "delivered", "skipped"]
    requests = receiver.all()
    assert {r.path for r in requests} == {"/mp/collect"}
    assert requests[0].query == {"measurement_id": "G-TEST123", "api_secret": SECRETS["ga4"]}
    by_client = {r.json["client_id"]: r.json for r in requests}
    one = by_client["client-1"]
    assert one["user_id"] == "user-1"
    purchase, page = one["events"]
    assert purchase["name"] == "order_completed"
    assert purchase["params"] == {
        "revenue": 12.5,
        "item_count": 2,
        "note": "x" * 100,
        "items": [{"item_id": "sku-1", "price": 3}],
    }
    moment = datetime.fromisoformat(now)
    assert purchase["timestamp_micros"] == int(moment.timestamp() * 1_000_000)
    assert page == {
        "name": "page_view",
        "params": {
            "page_location": "https://x.test/p",
            "page_title": "P",
            "url": "https://x.test/p",
            "title": "P",
        },
        "timestamp_micros": int(moment.timestamp() * 1_000_000),
    }
    assert by_client["client-2"]["events"][0]["name"] == "signed_up"


def test_ga4_batches_per_client_within_25_events(receiver: Receiver, events: EventFactory) -> None:
    events.base = {
        "timestamp": datetime.now(UTC).isoformat(),
        "anonymousId": "same-client",
        "userId": "u",
    }
    outcomes = deliver(spec("ga4", receiver.url), [events.data() for _ in range(60)])
    assert set(statuses(outcomes)) == {"delivered"}
    assert sorted(len(r.json["events"]) for r in receiver.all()) == [10, 25, 25]


def test_ga4_parks_what_it_cannot_express(receiver: Receiver, events: EventFactory) -> None:
    events.base = {"timestamp": datetime.now(UTC).isoformat()}
    batch = [
        events.data(event="session start"),  # reserved
        events.data(event="42 things"),  # must start with a letter
        events.data(event="x" * 41),  # too long
        events.data(timestamp="2020-01-01T00:00:00.000Z"),  # older than 72 hours
        events.data(event="Fine Event"),
    ]
    outcomes = deliver(spec("ga4", receiver.url), batch)
    assert statuses(outcomes) == ["parked", "parked", "parked", "parked", "delivered"]
    assert "reserved by GA4" in outcomes[0].reason
    assert "72 hours" in outcomes[3].reason
    (request,) = receiver.all()
    assert [e["name"] for e in request.json["events"]] == ["fine_event"]
