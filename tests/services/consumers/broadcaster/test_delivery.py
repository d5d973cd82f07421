"""Retries, Retry-After, parking, splitting, filtering and shutdown, against the real receiver."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from services.consumers.broadcaster.retry import RetryPolicy, retry_after_seconds
from services.consumers.broadcaster.settings import DestinationSpec
from tests.servers import LOOPBACK, free_port
from tests.services.consumers.broadcaster.conftest import SECRETS, deliver, spec
from tests.services.consumers.broadcaster.receiver import EventFactory, Receiver


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def ids(request) -> list[str]:
    return [e["messageId"] for e in request.json["batch"]]


def test_transient_errors_are_retried_until_delivered(
    receiver: Receiver, events: EventFactory
) -> None:
    receiver.answer(500, times=2)
    receiver.answer(503, times=1)
    outcomes = deliver(spec("webhook", receiver.url), [events.data(), events.data()])
    assert statuses(outcomes) == ["delivered", "delivered"]
    assert [o.attempts for o in outcomes] == [4, 4]
    assert [r.status for r in receiver.all()] == [500, 500, 503, 200]
    # Every attempt carries the same body and its own valid signature.
    assert len({r.body for r in receiver.all()}) == 1


def test_retry_after_seconds_is_honoured(receiver: Receiver, events: EventFactory) -> None:
    receiver.answer(429, headers={"Retry-After": "1"}, times=1)
    outcomes = deliver(spec("mixpanel", receiver.url), [events.data()])
    assert statuses(outcomes) == ["delivered"]
    throttled, retried = receiver.all()
    assert throttled.status == 429
    # Backoff alone would wait at most 0.05 s (FAST policy): the gap is the server's second.
    assert retried.at - throttled.at >= 0.95


def test_retry_after_http_date_is_honoured(receiver: Receiver, events: EventFactory) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    receiver.answer(503, headers={"Retry-After": when}, times=1)
    outcomes = deliver(spec("amplitude", receiver.url), [events.data()])
    assert statuses(outcomes) == ["delivered"]
    throttled, retried = receiver.all()
    assert retried.at - throttled.at >= 0.9  # the date has 1 s resolution


def test_out_of_attempts_parks_with_the_last_error(
    receiver: Receiver, events: EventFactory
) -> None:
    receiver.answer(502)
    policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.02)
    outcomes = deliver(spec("webhook", receiver.url), [events.data()], policy=policy)
    assert outcomes[0].status == "parked"
    assert outcomes[0].reason == "gave up after 3 attempts: HTTP 502"
    assert outcomes[0].attempts == 3
    assert len(receiver.all()) == 3


def test_unreachable_destination_is_retried_then_parked(events: EventFactory) -> None:
    closed = f"http://{LOOPBACK}:{free_port()}"
    policy = RetryPolicy(max_attempts=2, base=0.01, cap=0.02)
    outcomes = deliver(spec("webhook", closed), [events.data()], policy=policy)
    assert outcomes[0].status == "parked"
    assert outcomes[0].reason.startswith("gave up after 2 attempts: connection failed")


def test_a_400_is_isolated_to_the_bad_event_which_is_parked(
    receiver: Receiver, events: EventFactory
) -> None:
    poison = events.make(messageId="poison")
    receiver.answer(
        400,
        body=b'{"error": "field x is invalid"}',
        when=lambda r: "poison" in ids(r),
    )
    batch = [events.data() for _ in range(5)]
    batch.insert(3, json.dumps(poison).encode())
    outcomes = deliver(spec("webhook", receiver.url), batch)
    assert statuses(outcomes) == ["delivered"] * 3 + ["parked"] + ["delivered"] * 2
    assert outcomes[3].reason == 'HTTP 400: {"error": "field x is invalid"}'
    accepted = sorted(i for r in receiver.delivered() for i in ids(r))
    assert accepted == sorted(json.loads(m)["messageId"] for m in batch if b"poison" not in m)
    assert all(r.status == 400 for r in receiver.all() if "poison" in ids(r))


def test_401_parks_the_request_without_splitting(receiver: Receiver, events: EventFactory) -> None:
    receiver.answer(401, body=b"bad key")
    outcomes = deliver(spec("amplitude", receiver.url), [events.data() for _ in range(4)])
    assert statuses(outcomes) == ["parked"] * 4
    assert outcomes[0].reason == "HTTP 401: bad key"
    assert len(receiver.all()) == 1


def test_413_splits_the_request(receiver: Receiver, events: EventFactory) -> None:
    receiver.answer(413, when=lambda r: len(r.json["batch"]) > 2)
    outcomes = deliver(spec("webhook", receiver.url), [events.data() for _ in range(8)])
    assert set(statuses(outcomes)) == {"delivered"}
    assert sorted(len(r.json["batch"]) for r in receiver.delivered()) == [2, 2, 2, 2]


def test_invalid_messages_are_parked_without_blocking_the_batch(
    receiver: Receiver, events: EventFactory
) -> None:
    batch = [
        b"not json",
        b"[1, 2]",
        json.dumps({"type": "track", "messageId": "x"}).encode(),
        events.data(),
    ]
    outcomes = deliver(spec("webhook", receiver.url), batch)
    assert statuses(outcomes) == ["parked", "parked", "parked", "delivered"]
    assert outcomes[0].reason.startswith("invalid event: not a JSON event")
    assert outcomes[2].reason == "invalid event: neither userId nor anonymousId"


def test_filters_by_source_and_event_name(receiver: Receiver, events: EventFactory) -> None:
    ios = EventFactory(source="ios")
    destination = spec("webhook", receiver.url, sources=["web"], events=["Signed Up"])
    batch = [
        events.data(event="Signed Up"),
        events.data(event="Order Completed"),
        events.data("identify"),  # events set: only track events with those names pass
        ios.data(event="Signed Up"),
    ]
    outcomes = deliver(destination, batch)
    assert statuses(outcomes) == ["delivered", "skipped", "skipped", "skipped"]
    (request,) = receiver.all()
    assert [e["event"] for e in request.json["batch"]] == ["Signed Up"]
    everything = deliver(spec("webhook", receiver.url, sources=["ios"]), [ios.data("page")])
    assert statuses(everything) == ["delivered"]


def test_stop_during_backoff_defers_without_delivering(
    receiver: Receiver, events: EventFactory
) -> None:
    receiver.answer(429, headers={"Retry-After": "30"})
    outcomes = deliver(spec("webhook", receiver.url), [events.data()], stop_after=0.5)
    assert outcomes[0].status == "deferred"
    assert len(receiver.all()) == 1


def test_deadline_defers_instead_of_waiting(receiver: Receiver, events: EventFactory) -> None:
    receiver.answer(503, headers={"Retry-After": "10"})
    outcomes = deliver(spec("webhook", receiver.url), [events.data()], deadline_in=2.0)
    assert outcomes[0].status == "deferred"
    assert "deadline" in outcomes[0].reason


def test_logs_carry_no_secrets_or_event_bodies(
    receiver: Receiver, events: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answer(500, times=1)
    receiver.answer(400, times=1)
    caplog.set_level(logging.DEBUG)
    deliver(spec("ga4", receiver.url), [events.data(timestamp=datetime.now(UTC).isoformat())])
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "will retry" in text and "parking" in text
    for secret in SECRETS.values():
        assert secret not in text
    assert "Order Completed" not in text and "203.0.113.9" not in text


# --- pure pieces -------------------------------------------------------------------------------


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(base=1.0, cap=8.0)
    rng = random.Random(1)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # spread, not fixed
    assert policy.delay(3, 42.0, rng) == 42.0
    assert RetryPolicy(retry_after_max=10).delay(1, 3600.0, rng) == 10.0


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 27, 20, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Fri, 27 Nov 2026 20:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Fri, 27 Nov 2026 19:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "Bad Name", "type": "webhook"}, "name="),
        ({"name": "x", "type": "segment"}, "type='segment'"),
        ({"name": "x", "type": "webhook"}, "settings.url is required"),
        ({"name": "x", "type": "ga4", "settings": {"region": "us"}}, "measurementId"),
        ({"name": "x", "type": "mixpanel", "settings": {"region": "mars"}}, "region"),
        ({"name": "x", "type": "mixpanel", "settings": {"url": "http://a"}}, "not mixpanel"),
        ({"name": "x", "type": "amplitude", "events": "Signed Up"}, "events must be a list"),
    ],
)
def test_destination_document_errors_name_the_problem(document: dict, message: str) -> None:
    from services.contract import ConfigError

    with pytest.raises(ConfigError, match="LIFTOFF_DESTINATION") as error:
        DestinationSpec.parse(json.dumps(document))
    assert message in str(error.value)


def test_cli_configuration_errors_name_the_variable_and_never_a_secret(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services import cli

    destination = json.dumps({"name": "mp", "type": "mixpanel"})
    assert cli.main(["broadcaster"], env={}) == 2
    assert "LIFTOFF_DESTINATION is not set" in capsys.readouterr().err
    assert cli.main(["broadcaster"], env={"LIFTOFF_DESTINATION": destination}) == 2
    assert "LIFTOFF_DESTINATION_SECRETS_FILE or" in capsys.readouterr().err
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"apiKey": "do-not-print-me"}))  # the wrong field for mixpanel
    env = {
        "LIFTOFF_DESTINATION": destination,
        "LIFTOFF_DESTINATION_SECRETS_FILE": str(secrets),
        "LIFTOFF_STREAM_URL": "nats://127.0.0.1:4222/EVENTS",  # parsed before the file is read
    }
    assert cli.main(["broadcaster"], env=env) == 2
    err = capsys.readouterr().err
    assert "has no 'projectToken'" in err and "do-not-print-me" not in err
