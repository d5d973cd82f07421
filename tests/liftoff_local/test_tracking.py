"""The tracking API over HTTP: filters, reset, JSON 4xx for anything a client gets wrong, its
bounds (bytes held and answered, connections, slow clients), and what it refuses from web
pages (a foreign Host, another origin)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from liftoff_local.tracking import Entry, TrackingView
from liftoff_local.tracking_api import ServerLimits, TrackingApi
from tests.servers import LOOPBACK, free_port


def track(sequence: int, source: str, name: str, **fields: Any) -> Entry:
    event = {"type": "track", "event": name, "liftoff": {"source": source}, **fields}
    return Entry.of(sequence, f"events.{source}.track", json.dumps(event).encode(), {})


@pytest.fixture
def api() -> Iterator[tuple[TrackingApi, int]]:
    events, quarantine = TrackingView(), TrackingView()
    events.add(track(1, "web", "Signed Up", userId="u-1", properties={"plan": "pro"}))
    events.add(track(2, "backend", "Signed Up", userId="u-2"))
    page = {"type": "page", "name": "Pricing", "liftoff": {"source": "web"}}
    events.add(Entry.of(3, "events.web.page", json.dumps(page).encode(), {}))
    quarantine.add(
        Entry.of(
            7,
            "deadletter.collector",
            b"not json",
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


def call(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    connection.request(method, path, headers=headers or {})
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


def test_a_foreign_host_is_refused(api: tuple[TrackingApi, int]) -> None:
    """DNS rebinding: a page on evil.example resolves its name to 127.0.0.1 and calls us."""
    _, port = api
    status, body = call(port, "GET", "/events", {"Host": f"evil.example:{port}"})
    assert status == 403 and "evil.example" in body["error"] and "rebinding" in body["error"]
    assert call(port, "GET", "/events", {"Host": f"127.0.0.1:{port + 1}"})[0] == 403
    assert call(port, "GET", "/events", {"Host": f"localhost:{port}"})[0] == 200
    assert call(port, "GET", "/events", {"Host": f"LOCALHOST:{port}"})[0] == 200
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:  # no Host at all
        raw.sendall(b"GET /events HTTP/1.0\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.0 403")


def test_a_cross_origin_reset_is_refused(api: tuple[TrackingApi, int]) -> None:
    """CSRF: a page's form or fetch POSTs text/plain (no preflight) to /reset."""
    server, port = api
    for headers in (
        {"Origin": "https://evil.example", "Content-Type": "text/plain"},
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        status, body = call(port, "POST", "/reset", headers)
        assert status == 403 and "cross-origin" in body["error"], headers
    assert len(server.events) == 3, "nothing was reset"
    assert call(port, "GET", "/events", {"Origin": "https://evil.example"})[0] == 403
    same = {"Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin"}
    assert call(port, "POST", "/reset", same)[0] == 200
    assert len(server.events) == 0


def big_event(sequence: int, size: int) -> Entry:
    return track(sequence, "web", "Big", messageId=f"m-{sequence}", padding="x" * size)


def test_a_view_holds_a_bounded_number_of_bytes() -> None:
    view = TrackingView(max_bytes=100_000)
    for sequence in range(1, 201):
        view.add(big_event(sequence, 2000))
    stats = view.stats()
    assert stats["bytes"] <= 100_000 and stats["held"] == 100_000 // big_event(1, 2000).size
    assert stats["dropped"] == 200 - stats["held"]
    found = view.query({}, 10_000)
    assert found.entries[-1].sequence == 200 and found.dropped == stats["dropped"]
    view.reset()
    assert view.stats()["dropped"] == 0


def test_an_answer_is_bounded_by_bytes_and_says_what_it_left_out() -> None:
    events, quarantine = TrackingView(max_bytes=10_000_000), TrackingView()
    for sequence in range(1, 301):
        events.add(big_event(sequence, 2000))
    events.dropped = 5  # as if the view had let five go
    limits = ServerLimits(answer_bytes=100_000)
    server = TrackingApi(events, quarantine, lambda: None, LOOPBACK, free_port(), limits)
    server.start()
    try:
        connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=5)
        connection.request("GET", "/events?limit=10000")
        body = connection.getresponse().read()
    finally:
        server.stop()
    assert len(body) <= 100_000
    answer = json.loads(body)
    assert 0 < answer["count"] == len(answer["events"]) < 300
    assert answer["omitted"] == 300 - answer["count"] and answer["dropped"] == 5
    assert answer["events"][-1]["sequence"] == 300, "the most recent are kept"
    assert "left out" in answer["note"] and "no longer held" in answer["note"]


def test_what_the_stream_deleted_is_forgotten() -> None:
    view = TrackingView()
    for sequence in range(1, 6):
        view.add(track(sequence, "web", "E"))
    assert view.forget(deleted=[3], first_sequence=2) == 2
    assert [e.sequence for e in view.query({}, 100).entries] == [2, 4, 5]
    assert view.stats()["dropped"] == 0, "deleted from the stream is not dropped by the view"


def test_connections_are_bounded_and_slow_clients_cut_off() -> None:
    limits = ServerLimits(max_connections=2, io_timeout_seconds=0.5, deadline_seconds=2.0)
    events, quarantine = TrackingView(), TrackingView()
    server = TrackingApi(events, quarantine, lambda: None, LOOPBACK, free_port(), limits)
    server.start()
    try:
        idle = [socket.create_connection((LOOPBACK, server.port), timeout=5) for _ in range(2)]
        time.sleep(0.1)
        with socket.create_connection((LOOPBACK, server.port), timeout=5) as third:
            assert third.recv(100).startswith(b"HTTP/1.0 503")
        for connection in idle:  # silent clients: closed after the read timeout
            assert connection.recv(100) in (b"", b"HTTP/1.0 408")
            connection.close()
        assert call(server.port, "GET", "/")[0] == 200
        began = time.monotonic()
        # A byte every 0.2 s (each read well within its timeout): cut off at the deadline.
        slow = socket.create_connection((LOOPBACK, server.port), timeout=5)
        with slow, pytest.raises(OSError):
            for byte in b"GET /events HTTP/1.0\r\n" * 100:
                slow.sendall(bytes([byte]))
                time.sleep(0.2)
                assert time.monotonic() - began < 10, "never cut off"
    finally:
        server.stop()


def test_quarantine_listing_is_strict_json_with_integer_indexes(
    api: tuple[TrackingApi, int],
) -> None:
    server, port = api
    headers = {"Liftoff-Consumer": "collector", "Liftoff-Index": "3", "Liftoff-Source": "web"}
    raw = b'{"userId":"u","event":"e","properties":{"x":1e999}}'
    server.quarantine.add(Entry.of(8, "deadletter.collector", raw, headers))
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    connection.request("GET", "/quarantine?consumer=collector")
    text = connection.getresponse().read()
    connection.close()

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")  # what Node's JSON.parse does with it

    found = json.loads(text, parse_constant=refuse)["quarantined"]
    assert [(e["sequence"], e.get("index")) for e in found] == [(7, None), (8, 3)]
    assert found[1]["event"] == raw.decode()
