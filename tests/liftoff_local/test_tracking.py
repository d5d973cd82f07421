"""The tracking API over HTTP: filters, reset, and JSON 4xx for anything a client gets wrong."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from liftoff_local import tracking
from liftoff_local.tracking import Entry, TrackingApi, TrackingView
from tests.servers import LOOPBACK, free_port


def track(sequence: int, source: str, name: str, **fields: Any) -> Entry:
    event = {"type": "track", "event": name, "liftoff": {"source": source}, **fields}
    return Entry(sequence, f"events.{source}.track", event)


@pytest.fixture
def api() -> Iterator[tuple[TrackingApi, int]]:
    events, quarantine = TrackingView(), TrackingView()
    events.add(track(1, "web", "Signed Up", userId="u-1", properties={"plan": "pro"}))
    events.add(track(2, "backend", "Signed Up", userId="u-2"))
    events.add(
        Entry(
            3, "events.web.page", {"type": "page", "name": "Pricing", "liftoff": {"source": "web"}}
        )
    )
    quarantine.add(
        Entry(
            7,
            "deadletter.collector",
            b"not json".decode(),
            {
                "Liftoff-Reason": "not JSON",
                "Liftoff-Consumer": "collector",
                "Liftoff-Source": "web",
            },
        )
    )
    port = free_port()
    server = TrackingApi(
        events, quarantine, lambda: (events.reset(), quarantine.reset()), LOOPBACK, port
    )
    server.start()
    yield server, port
    server.stop()


def call(port: int, method: str, path: str) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    connection.request(method, path)
    response = connection.getresponse()
    assert response.getheader("Content-Type") == "application/json"
    status, body = response.status, json.loads(response.read())
    connection.close()
    return status, body


def test_filters(api: tuple[TrackingApi, int]) -> None:
    _, port = api
    status, found = call(port, "GET", "/events?event=Signed%20Up&source=web")
    assert status == 200 and found["count"] == 1
    assert found["events"][0]["event"]["properties"] == {"plan": "pro"}
    assert call(port, "GET", "/events?event=Signed%20Up")[1]["count"] == 2
    assert call(port, "GET", "/events?event=Pricing&type=page")[1]["count"] == 1
    assert call(port, "GET", "/events?userId=u-2")[1]["events"][0]["sequence"] == 2
    assert call(port, "GET", "/events?limit=1")[1]["events"][0]["sequence"] == 3
    status, bad = call(port, "GET", "/quarantine?source=web&consumer=collector")
    assert bad["quarantined"] == [
        {
            "sequence": 7,
            "consumer": "collector",
            "reason": "not JSON",
            "source": "web",
            "messageId": None,
            "event": "not json",
        }
    ]


def test_reset_hides_what_came_before(api: tuple[TrackingApi, int]) -> None:
    server, port = api
    assert call(port, "POST", "/reset")[0] == 200
    assert call(port, "GET", "/events")[1]["count"] == 0
    server.events.add(track(2, "web", "Late redelivery"))  # at or before the mark: hidden
    server.events.add(track(4, "web", "New"))
    assert [e["sequence"] for e in call(port, "GET", "/events")[1]["events"]] == [4]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/events?limit=-1", 400),
        ("GET", "/events?limit=abc", 400),
        ("GET", "/events?limit=100000000000000000000", 400),
        ("GET", "/events?colour=blue", 400),
        ("GET", "/events?consumer=collector", 400),
        ("GET", "/nowhere", 404),
        ("POST", "/events", 405),
        ("PUT", "/events", 405),
        ("DELETE", "/reset", 405),
        ("GET", "/events?" + "a=" + "x" * 70000, 414),
    ],
)
def test_client_mistakes_are_json_4xx(
    api: tuple[TrackingApi, int], method: str, path: str, status: int
) -> None:
    got, body = call(api[1], method, path)
    assert got == status
    assert body["error"]


def test_odd_filter_values_match_nothing(api: tuple[TrackingApi, int]) -> None:
    for query in ("event=%FF%FE", "source=%00", "type=" + "%27" * 50):
        status, found = call(api[1], "GET", f"/events?{query}")
        assert status == 200 and found["count"] == 0


def test_quarantine_listing_is_strict_json_with_integer_indexes(
    api: tuple[TrackingApi, int],
) -> None:
    server, port = api
    headers = {"Liftoff-Consumer": "collector", "Liftoff-Index": "3", "Liftoff-Source": "web"}
    raw = b'{"userId":"u","event":"e","properties":{"x":1e999}}'
    server.quarantine.add(Entry(8, "deadletter.collector", tracking._decode(raw), headers))
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    connection.request("GET", "/quarantine?consumer=collector")
    text = connection.getresponse().read()
    connection.close()

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")  # what Node's JSON.parse does with it

    found = json.loads(text, parse_constant=refuse)["quarantined"]
    assert [(e["sequence"], e.get("index")) for e in found] == [(7, None), (8, 3)]
    assert found[1]["event"] == raw.decode()
