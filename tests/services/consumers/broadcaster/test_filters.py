"""Destination filters (services/consumers/broadcaster/filters.py): the grammar the stack and the
broadcaster share, and what each destination receives through a real Broadcaster and receiver."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.consumers.broadcaster.destinations import DestinationDocument, decode
from services.consumers.broadcaster.filters import FilterProblem, Filters, sampled
from services.consumers.broadcaster.filters import decode as decode_filters
from tests.services.consumers.broadcaster.conftest import deliver, spec
from tests.services.consumers.broadcaster.receiver import EventFactory, Receiver


def sent_ids(receiver: Receiver) -> list[str]:
    return [e["messageId"] for r in receiver.delivered() for e in r.json["batch"]]


def sent(receiver: Receiver) -> list[dict[str, Any]]:
    return [e for r in receiver.delivered() for e in r.json["batch"]]


def test_the_integrations_object_and_consent_decide_what_each_destination_receives(
    receiver: Receiver, events: EventFactory
) -> None:
    consent = {"consent": {"categoryPreferences": {"Analytics": True, "Advertising": False}}}
    stream = [
        events.make(messageId="plain"),
        events.make(messageId="all-off", integrations={"All": False}),
        events.make(messageId="all-off-but-me", integrations={"All": False, "hook-a": True}),
        events.make(messageId="off-by-type", integrations={"Webhooks": False}),
        events.make(messageId="on-by-name", integrations={"Webhooks": False, "hook-a": {}}),
        events.make(messageId="consented", context=consent),
        events.make(
            messageId="ads-refused",
            context={"consent": {"categoryPreferences": {"Analytics": True}}},
        ),
    ]
    filters = {"consent": ["Analytics"]}
    destination = spec("webhook", receiver.url, name="hook-a", filters=filters)
    outcomes = deliver(destination, [json.dumps(e).encode() for e in stream])
    assert sent_ids(receiver) == [
        "plain",
        "all-off-but-me",
        "on-by-name",
        "consented",
        "ads-refused",
    ]
    assert [o.reason for o in outcomes if o.status == "skipped"] == [
        "filtered out (integrations)",
        "filtered out (integrations)",
    ]

    receiver.requests.clear()
    advertising = spec("webhook", receiver.url, name="hook-b", filters={"consent": ["Advertising"]})
    deliver(advertising, [json.dumps(e).encode() for e in stream])
    # No consent object: sent (Segment's rule), unless consentMissing says drop.
    assert sent_ids(receiver) == ["plain"]
    receiver.requests.clear()
    strict = {"consent": ["Analytics"], "consentMissing": "drop", "integrations": "ignore"}
    deliver(spec("webhook", receiver.url, filters=strict), [json.dumps(e).encode() for e in stream])
    assert sent_ids(receiver) == ["consented", "ads-refused"]


def test_drop_conditions_sampling_and_fields(receiver: Receiver, events: EventFactory) -> None:
    stream = [
        events.make(messageId="paid", properties={"plan": "pro", "email": "a@b", "n": 1}),
        events.make(messageId="free", properties={"plan": "free", "email": "c@d"}),
        events.make(messageId="debug", event="Debug Ping"),
        events.make("page", messageId="page"),
        events.make("identify", messageId="who", traits={"email": "e@f", "age": 3}),
        events.make(messageId="flag-true", properties={"plan": True}),
    ]
    filters = {
        "drop": [
            {"type": ["page"]},
            {"event": ["Debug Ping"]},
            {"field": "properties.plan", "in": ["free", 1]},
            {"type": ["identify"], "field": "traits.age", "exists": False},
        ],
        "allowFields": ["properties.plan", "traits.email"],
        "blockFields": ["context.ip"],
    }
    outcomes = deliver(
        spec("webhook", receiver.url, filters=filters), [json.dumps(e).encode() for e in stream]
    )
    assert [o.status for o in outcomes] == [
        "delivered", "skipped", "skipped", "skipped", "delivered", "delivered",
    ]  # fmt: skip
    received = {e["messageId"]: e for e in sent(receiver)}
    assert received["paid"]["properties"] == {"plan": "pro"}
    assert received["who"]["traits"] == {"email": "e@f"}
    assert received["flag-true"]["properties"] == {"plan": True}  # true is not 1
    assert all("ip" not in e["context"] and e["context"]["locale"] for e in received.values())
    assert all(e["userId"] and e["liftoff"] for e in received.values())


def test_allowed_nested_fields_keep_only_themselves() -> None:
    filters = decode_filters({"allowFields": ["properties.address.city", "properties.plan"]})
    event = {
        "type": "track",
        "properties": {"address": {"city": "Lyon", "street": "x"}, "plan": {"a": 1}, "n": 2},
        "traits": {"email": "a@b"},
    }
    assert filters.shape(event)["properties"] == {"address": {"city": "Lyon"}, "plan": {"a": 1}}
    assert filters.shape(event)["traits"] == {}
    scalar = {**event, "properties": {"address": "Lyon, France"}}
    assert filters.shape(scalar)["properties"] == {}  # nothing under it to allow
    assert event["properties"]["address"]["street"] == "x"  # the event itself is left alone


def test_sampling_is_deterministic_by_message_id_and_near_its_share(
    receiver: Receiver, events: EventFactory
) -> None:
    stream = [events.data() for _ in range(400)]
    destination = spec("webhook", receiver.url, filters={"samplePercent": 25})
    first = [o.status for o in deliver(destination, stream)]
    second = [o.status for o in deliver(destination, stream)]
    assert first == second
    assert 60 <= first.count("delivered") <= 140
    kept = {
        json.loads(d)["messageId"] for d, s in zip(stream, first, strict=True) if s == "delivered"
    }
    assert kept == {
        json.loads(d)["messageId"] for d in stream if sampled(json.loads(d)["messageId"], 25)
    }


def test_the_filtered_counter_counts_by_reason(receiver: Receiver, events: EventFactory) -> None:
    import httpx

    from services.consumers.broadcaster.delivery import Broadcaster
    from tests.services.consumers.broadcaster.conftest import SECRETS, run

    destination = spec(
        "webhook", receiver.url, filters={"drop": [{"type": ["page"]}]}, sources=["web"]
    )
    stream = [
        events.data("page"),
        events.data("page"),
        events.data(integrations={"All": False}),
        events.data(liftoff={"source": "ios", "schema": 1}),
        events.data(),
    ]

    async def main() -> Broadcaster:
        async with httpx.AsyncClient(timeout=5) as client:
            broadcaster = Broadcaster(
                destination.name,
                destination.build(SECRETS["webhook"]),
                client,
                event_filter=destination.event_filter,
            )
            await broadcaster.deliver(stream)
            return broadcaster

    counters = run(main()).counters
    text = counters.render()
    for reason, count in (("drop", 2), ("integrations", 1), ("source", 1)):
        line = (
            "liftoff_broadcaster_filtered_total"
            f'{{destination="webhook-test",reason="{reason}"}} {float(count)}'
        )
        assert line in text, text


@pytest.mark.parametrize(
    ("filters", "path"),
    [
        ([], ""),
        ({"sample": 5}, ".sample"),
        ({"samplePercent": 0}, ".samplePercent"),
        ({"samplePercent": True}, ".samplePercent"),
        ({"drop": []}, ".drop"),
        ({"drop": [{}]}, ".drop[0]"),
        ({"drop": [{"type": ["click"]}]}, ".drop[0].type[0]"),
        ({"drop": [{"in": ["x"]}]}, ".drop[0].in"),
        ({"drop": [{"field": "properties.a"}]}, ".drop[0]"),
        ({"drop": [{"field": "properties.a", "in": [{"x": 1}]}]}, ".drop[0].in"),
        ({"drop": [{"field": "properties.a", "exists": "yes"}]}, ".drop[0].exists"),
        ({"allowFields": ["context.ip"]}, ".allowFields[0]"),
        ({"blockFields": ["userId"]}, ".blockFields[0]"),
        ({"blockFields": ["properties..a"]}, ".blockFields[0]"),
        ({"integrations": "obey"}, ".integrations"),
        ({"consentMissing": "maybe"}, ".consentMissing"),
        ({"consent": [""]}, ".consent[0]"),
    ],
)
def test_a_bad_filter_is_refused_naming_its_path(filters: Any, path: str) -> None:
    with pytest.raises(FilterProblem) as caught:
        decode_filters(filters)
    assert caught.value.path == path


def test_the_document_round_trips_and_leaves_out_default_filters() -> None:
    plain = DestinationDocument("hook", "webhook", {"url": "https://x"})
    assert "filters" not in json.loads(plain.encode())  # no restart for stacks without filters
    filters = {
        "integrations": "ignore",
        "consent": ["Analytics"],
        "consentMissing": "drop",
        "drop": [{"type": ["page"], "field": "properties.plan", "in": ["free"]}],
        "samplePercent": 12.5,
        "allowFields": ["properties.plan"],
        "blockFields": ["context.ip"],
    }
    document = decode({**json.loads(plain.encode()), "filters": filters})
    assert document.filters.encode() == filters
    assert decode(json.loads(document.encode())) == document
    assert decode_filters(document.filters.encode()) == document.filters != Filters()
    with pytest.raises(ValueError, match=r"filters\.samplePercent=500"):
        decode({**json.loads(plain.encode()), "filters": {"samplePercent": 500}})
