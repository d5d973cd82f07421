"""``python -m services broadcaster`` processes on a real ``nats-server -js``, each forwarding to a
local HTTP receiver that plays the destination."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.consumers.broadcaster import signing
from services.stream.dead_letters import ensure_dead_letter_stream
from tests.servers import ServerProcess, consumer_process, nats_url
from tests.services.consumers.broadcaster.conftest import SECRETS, run
from tests.services.consumers.broadcaster.receiver import EventFactory, Received, Receiver
from tests.services.consumers.conftest import consumer_state, publish, read_dead_letters

pytestmark = pytest.mark.servers

FAST_RETRIES = {
    "LIFTOFF_BROADCAST_BACKOFF_BASE_SECONDS": "0.05",
    "LIFTOFF_BROADCAST_BACKOFF_MAX_SECONDS": "0.5",
    "LIFTOFF_BROADCAST_RETRY_AFTER_MAX_SECONDS": "1",
    "LIFTOFF_BROADCAST_BATCH_MAX_SECONDS": "0.2",
    "LIFTOFF_CONSUMER_ACK_WAIT_SECONDS": "5",
    "LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS": "1",
}


@pytest.fixture
def dead_letter_url(shared_nats: ServerProcess) -> str:
    url = f"{nats_url(shared_nats)}/DEADLETTER"
    run(ensure_dead_letter_stream(url, retention_hours=1))
    return url


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.stop()


def broadcaster(
    workdir: Path,
    stream_url: str,
    dead_letter_url: str,
    destination: dict[str, Any],
    **extra: str,
) -> ServerProcess:
    secrets = workdir / f"{destination['name']}-secrets.json"
    field = {"webhook": "signingSecret", "mixpanel": "projectToken"}[destination["type"]]
    secrets.write_text(json.dumps({field: SECRETS[destination["type"]]}))
    env = {
        "LIFTOFF_STREAM_URL": stream_url,
        "LIFTOFF_DEAD_LETTER_URL": dead_letter_url,
        "LIFTOFF_DESTINATION": json.dumps(destination),
        "LIFTOFF_DESTINATION_SECRETS_FILE": str(secrets),
        **FAST_RETRIES,
        **extra,
    }
    return consumer_process(workdir, "broadcaster", env, name=destination["name"])


def webhook_ids(requests: list[Received]) -> list[str]:
    return [e["messageId"] for r in requests for e in r.json["batch"]]


def mixpanel_ids(requests: list[Received]) -> list[str]:
    return [e["properties"]["$insert_id"] for r in requests for e in r.json]


def test_a_failing_destination_does_not_hold_back_a_healthy_one(
    jetstream: tuple[str, str],
    dead_letter_url: str,
    shared_nats: ServerProcess,
    receiver: Receiver,
    processes: list[ServerProcess],
    tmp_path: Path,
) -> None:
    stream_url, _ = jetstream
    events = EventFactory()
    first = [events.make() for _ in range(30)]
    poison = events.make(messageId="poison-1")
    second = [events.make() for _ in range(30)]
    good_ids = {e["messageId"] for e in first + second}
    bad_on_the_stream: list[Any] = [b"not json at all", {**events.make(), "messageId": ""}]
    bad_on_the_stream[1] = json.dumps(bad_on_the_stream[1]).encode()

    # The healthy destination rejects one event for good (HTTP 400) and takes everything else.
    receiver.answer(
        400,
        path="/healthy",
        body=b'{"error": "poison"}',
        when=lambda r: "poison-1" in webhook_ids([r]),
    )
    # The failing destination (Mixpanel's /import) answers 500 and 429 until it recovers.
    recovered = threading.Event()
    calls = {"n": 0}

    def failing(request: Received) -> tuple[int, dict[str, str], bytes] | None:
        if recovered.is_set():
            return None  # fall through: Mixpanel's success answer
        calls["n"] += 1
        if calls["n"] % 2:
            return 500, {}, b'{"error": "internal"}'
        return 429, {"Retry-After": "1"}, b'{"error": "rate limited"}'

    receiver.answer_with(failing, path="/import")

    healthy = {
        "name": "healthy",
        "type": "webhook",
        "settings": {"url": f"{receiver.url}/healthy"},
        "sources": [],
        "events": [],
    }
    flaky = {"name": "flaky", "type": "mixpanel", "settings": {"apiUrl": receiver.url}}
    for destination, extra in ((healthy, {}), (flaky, {"LIFTOFF_BROADCAST_MAX_ATTEMPTS": "100"})):
        process = broadcaster(tmp_path, stream_url, dead_letter_url, destination, **extra)
        processes.append(process)
        process.start()
    # A new destination starts at the stream's end: the events come once both are bound.
    run(publish(stream_url, [*bad_on_the_stream, *first, poison]))
    run(publish(stream_url, second))

    # The healthy destination gets every good event while the other one is still failing.
    receiver.wait_for(lambda: good_ids <= set(webhook_ids(receiver.delivered("/healthy"))))
    receiver.wait_for(lambda: {r.status for r in receiver.all("/import")} == {500, 429})
    assert not recovered.is_set() and receiver.delivered("/import") == []
    for request in receiver.all("/healthy"):
        assert signing.verify(
            SECRETS["webhook"],
            request.body,
            request.headers["x-liftoff-timestamp"],
            request.headers["x-liftoff-signature"],
            tolerance=600,
        )

    # Once it recovers, the failing destination receives everything (at least once).
    recovered.set()
    receiver.wait_for(
        lambda: good_ids | {"poison-1"} <= set(mixpanel_ids(receiver.delivered("/import")))
    )
    receiver.wait_for(lambda: run(consumer_state(stream_url, "broadcaster-flaky")) == (0, 0))
    receiver.wait_for(lambda: run(consumer_state(stream_url, "broadcaster-healthy")) == (0, 0))
    assert set(mixpanel_ids(receiver.delivered("/import"))) == good_ids | {"poison-1"}
    assert set(webhook_ids(receiver.delivered("/healthy"))) == good_ids

    server = nats_url(shared_nats)
    healthy_parked = run(read_dead_letters(server, "broadcaster-healthy"))
    flaky_parked = run(read_dead_letters(server, "broadcaster-flaky"))
    reasons = sorted(headers["Liftoff-Reason"] for headers, _ in healthy_parked)
    assert len(reasons) == 3, reasons
    assert reasons[0].startswith("HTTP 400")
    assert all(r.startswith("breaks the stream contract") for r in reasons[1:])
    assert [
        h["Liftoff-Message-Id"] for h, _ in healthy_parked if "HTTP 400" in h["Liftoff-Reason"]
    ] == ["poison-1"]
    assert len(flaky_parked) == 2  # only the two bad events: the 500s and 429s were retried
    logs = "".join(process.log_path.read_text() for process in processes)
    assert "will retry" in logs
    assert SECRETS["mixpanel"] not in logs and SECRETS["webhook"] not in logs
    assert "Order Completed" not in logs  # no event bodies in logs

    # What the broadcasters report on /metrics (the contract's dead-letter and destination
    # signals read these): attempts by status class, parks by consumer.
    samples = {}
    for process in processes:
        text = httpx.get(f"http://127.0.0.1:{process.port}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    attempts = "liftoff_broadcast_requests_total"
    assert value(attempts, destination="flaky", result="retry", status_class="5xx") >= 1
    assert value(attempts, destination="flaky", result="retry", status_class="4xx") >= 1  # 429
    assert value(attempts, destination="flaky", result="accepted", status_class="2xx") >= 1
    parked = "liftoff_consumer_events_total"
    assert value(parked, consumer="broadcaster-healthy", outcome="park") == 3
    assert value(parked, consumer="broadcaster-flaky", outcome="park") == 2


def test_sigterm_abandons_the_in_flight_batch_without_acknowledging_it(
    jetstream: tuple[str, str],
    dead_letter_url: str,
    shared_nats: ServerProcess,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    stream_url, _ = jetstream
    events = EventFactory()
    batch = [events.make() for _ in range(5)]
    down = receiver.answer(503, path="/hook", headers={"Retry-After": "1"})
    destination = {"name": "hook", "type": "webhook", "settings": {"url": f"{receiver.url}/hook"}}
    extra = {"LIFTOFF_BROADCAST_MAX_ATTEMPTS": "100"}
    process = broadcaster(tmp_path, stream_url, dead_letter_url, destination, **extra).start()
    run(publish(stream_url, batch))  # once bound: a new destination starts at the stream's end
    try:
        receiver.wait_for(lambda: len(receiver.all("/hook")) >= 2)  # retrying the batch
    finally:
        process.stop()  # SIGTERM
    assert "abandoning the in-flight batch" in process.log_path.read_text()
    assert receiver.delivered("/hook") == []
    # Nothing was acknowledged: a new process (same durable consumer) gets the batch again.
    receiver.remove(down)
    restarted = broadcaster(tmp_path, stream_url, dead_letter_url, destination, **extra).start()
    try:
        ids = {e["messageId"] for e in batch}
        receiver.wait_for(lambda: ids <= set(webhook_ids(receiver.delivered("/hook"))))
        receiver.wait_for(lambda: run(consumer_state(stream_url, "broadcaster-hook")) == (0, 0))
    finally:
        restarted.stop()
    assert run(read_dead_letters(nats_url(shared_nats), "broadcaster-hook")) == []


def test_filters_and_the_integrations_object_decide_what_each_destination_receives(
    jetstream: tuple[str, str],
    dead_letter_url: str,
    receiver: Receiver,
    processes: list[ServerProcess],
    tmp_path: Path,
) -> None:
    """Two broadcaster processes on one stream: each gets what its filters and the events'
    ``integrations`` objects let through; the rest is acknowledged, counted, never retried."""
    stream_url, _ = jetstream
    events = EventFactory()
    stream = [
        events.make(messageId="to-both"),
        events.make(messageId="mixpanel-off", integrations={"Mixpanel": False}),
        events.make(messageId="only-hook", integrations={"All": False, "hook": True}),
        events.make("page", messageId="a-page"),
        events.make(messageId="free", properties={"plan": "free", "email": "x@y"}),
    ]
    hook = {
        "name": "hook",
        "type": "webhook",
        "settings": {"url": f"{receiver.url}/hook"},
        "filters": {
            "drop": [{"field": "properties.plan", "equals": "free"}],
            "blockFields": ["context.ip"],
        },
    }
    mixpanel = {"name": "mp", "type": "mixpanel", "settings": {"apiUrl": receiver.url}}
    for destination in (hook, mixpanel):
        process = broadcaster(tmp_path, stream_url, dead_letter_url, destination)
        processes.append(process)
        process.start()
    run(publish(stream_url, stream))
    for name in ("broadcaster-hook", "broadcaster-mp"):
        receiver.wait_for(lambda name=name: run(consumer_state(stream_url, name)) == (0, 0))
    hook_events = [e for r in receiver.delivered("/hook") for e in r.json["batch"]]
    hook_ids = sorted(e["messageId"] for e in hook_events)
    assert hook_ids == ["a-page", "mixpanel-off", "only-hook", "to-both"]
    assert all("ip" not in e["context"] for e in hook_events)
    mixpanel_got = sorted(mixpanel_ids(receiver.delivered("/import")))
    assert mixpanel_got == ["a-page", "free", "to-both"]
    assert len(receiver.all("/hook")) == len(receiver.delivered("/hook"))  # nothing retried

    def filtered(process: ServerProcess) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{process.port}/metrics").text
        return {
            sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "liftoff_broadcaster_filtered_total"
        }

    assert filtered(processes[0]) == {"drop": 1.0}
    assert filtered(processes[1]) == {"integrations": 2.0}
