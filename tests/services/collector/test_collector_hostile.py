"""Hostile input from outside, against `python -m services collector` on a real nats-server -js.

Every case: the status and body, nothing published unless answered 200 (and then only the
valid events), the process still healthy and its memory bounded afterwards. Then the HTTP-level
limits (header size, header and body timeouts, connections per worker) and client addresses
(peer, trusted and untrusted proxies, per-source opt-out).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.stream.dead_letters import ensure_dead_letter_stream
from tests.servers import LOOPBACK, ServerProcess, collector_server, nats_server, nats_url
from tests.services.collector.test_collector_quarantine import read_raw
from tests.services.conftest import unique_stream_url
from tests.services.stream.under_test import (
    WRITE_KEYS_JSON,
    jetstream_message_count,
    read_jetstream,
)

pytestmark = pytest.mark.servers

LIMITS = {
    "LIFTOFF_HTTP_HEADER_TIMEOUT_SECONDS": "2",
    "LIFTOFF_HTTP_BODY_TIMEOUT_SECONDS": "2",
    "LIFTOFF_HTTP_MAX_CONNECTIONS": "8",
    "LIFTOFF_IP_COLLECTION_OFF": "ios",
}


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A server of this module: the quarantine (DEADLETTER) stream owns `deadletter.>`.
    with nats_server(tmp_path_factory.mktemp("nats")) as server:
        asyncio.run(ensure_dead_letter_stream(f"{nats_url(server)}/DEADLETTER", 1))
        yield server


@pytest.fixture(scope="module")
def stream(nats: ServerProcess) -> tuple[str, str]:
    return unique_stream_url(nats)


@pytest.fixture(scope="module")
def collector(
    tmp_path_factory: pytest.TempPathFactory, stream: tuple[str, str]
) -> Iterator[ServerProcess]:
    url, _ = stream
    workdir = tmp_path_factory.mktemp("collector")
    with collector_server(workdir, url, WRITE_KEYS_JSON, extra_env=LIMITS) as server:
        yield server


def reset_peak_rss(server: ServerProcess) -> int:
    """Reset the process's peak RSS (VmHWM) to its current RSS; returns that, in KiB."""
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    return peak_rss_kib(server)


def peak_rss_kib(server: ServerProcess) -> int:
    """The process's peak RSS since the last reset: what a flood cost while it lasted."""
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def stored_count(nats: ServerProcess, stream: str) -> int:
    return asyncio.run(jetstream_message_count(nats_url(nats), stream))


def post(server: ServerProcess, path: str, body: bytes, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=f"http://{LOOPBACK}:{server.port}", auth=("web-key-1", "")) as c:
        return c.post(path, content=body, headers={"content-type": "application/json", **headers})


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


TRACK = b'{"type":"track","event":"ok","userId":"u","messageId":"%s"}'
# (path, body, extra headers, status, code or None, valid events it carries)
CASES: dict[str, tuple[str, bytes, dict[str, str], int, str | None, int]] = {
    "invalid UTF-8 in a batch event's string": (
        "/v1/batch",
        b'{"batch":[' + TRACK % b"h1" + b',{"type":"track","event":"\xff\xfe","userId":"u"}]}',
        {},
        200,
        "invalid_utf8",
        1,
    ),
    "invalid UTF-8 in a key": (
        "/v1/batch",
        b'{"batch":[' + TRACK % b"h2" + b',{"type":"track","event":"e","userId":"u","\xc3":1}]}',
        {},
        200,
        "invalid_utf8",
        1,
    ),
    "invalid UTF-8 in a single event": (
        "/v1/track",
        b'{"event":"\xff","userId":"u"}',
        {},
        400,
        "invalid_utf8",
        0,
    ),
    "nesting 5000 deep": (
        "/v1/batch",
        b'{"batch":[{"type":"track","event":"e","userId":"u","properties":' + nested(5000) + b"}]}",
        {},
        400,
        "nesting_too_deep",
        0,
    ),
    "nesting 100 deep beside a valid event": (
        "/v1/batch",
        b'{"batch":['
        + TRACK % b"h3"
        + b',{"type":"track","event":"e","userId":"u","properties":'
        + nested(100)
        + b"}]}",
        {},
        200,
        "nesting_too_deep",
        1,
    ),
    "timestamp at the calendar's end": (
        "/v1/track",
        b'{"event":"e","userId":"u","timestamp":"9999-12-31T23:59:59-10:00"}',
        {},
        200,
        "invalid_event",
        0,
    ),
    "skew correction off the calendar": (
        "/v1/track",
        b'{"event":"e","userId":"u","timestamp":"0001-01-01T00:00:00Z",'
        b'"sentAt":"9999-12-31T00:00:00Z"}',
        {},
        200,
        "invalid_event",
        0,
    ),
    "batch sentAt off the calendar": (
        "/v1/batch",
        b'{"sentAt":"0001-01-01T00:00:00+05:00","batch":[' + TRACK % b"h4" + b"]}",
        {},
        400,
        "invalid_event",
        0,
    ),
    "messageIds differing by whitespace": (
        "/v1/batch",
        b'{"batch":[' + TRACK % b"h5" + b"," + TRACK % b" h5" + b"," + TRACK % b"   " + b"]}",
        {},
        200,
        "invalid_event",
        1,
    ),
    "two gzip members": (
        "/v1/batch",
        gzip.compress(b'{"batch":[' + TRACK % b"h6" + b",") + gzip.compress(TRACK % b"h7" + b"]}"),
        {"content-encoding": "gzip"},
        200,
        None,
        2,
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_hostile_bodies(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str], case: str
) -> None:
    _, name = stream
    path, body, headers, status, code, valid = CASES[case]
    before = stored_count(nats, name)
    quarantined_before = len(asyncio.run(read_raw(nats_url(nats), "DEADLETTER")))

    response = post(collector, path, body, **headers)

    assert response.status_code == status, response.text
    answer = response.json()
    assert stored_count(nats, name) - before == valid
    quarantined = len(asyncio.run(read_raw(nats_url(nats), "DEADLETTER"))) - quarantined_before
    if status == 200:
        assert answer["success"] is True
        assert quarantined == answer.get("quarantined", 0)
        if code is not None:
            assert {r["code"] for r in answer["rejected"]} == {code}
            assert all(r["reason"] for r in answer["rejected"])
    else:
        assert (answer["success"], answer["code"]) == (False, code)
        assert quarantined == 0
    assert httpx.get(f"http://{LOOPBACK}:{collector.port}/healthz").status_code == 200


def attack(port: int, outcomes: list[str], header_bytes: int = 32 * 1024 * 1024) -> None:
    """Send one request whose header never ends; record how the server answered."""
    with socket.create_connection((LOOPBACK, port), timeout=20) as sock:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        sent = 0
        try:
            while sent < header_bytes:
                sock.sendall(chunk)
                sent += len(chunk)
            answer = sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            outcomes.append("closed")
            return
        outcomes.append(answer.split(b"\r\n")[0].decode() if answer else "closed")


def test_four_connections_sending_32_mib_headers_are_refused_and_memory_stays_bounded(
    collector: ServerProcess,
) -> None:
    before = reset_peak_rss(collector)
    outcomes: list[str] = []
    threads = [threading.Thread(target=attack, args=(collector.port, outcomes)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 4
    assert all(o in ("closed", "HTTP/1.1 431 Request Header Fields Too Large") for o in outcomes)
    # 4 x 32 MiB were sent at it; the default limit is 64 KiB a request. The peak counts: what
    # a connection buffered is given back once it closes.
    assert peak_rss_kib(collector) - before < 32 * 1024
    assert post(collector, "/v1/batch", b'{"batch":[]}').status_code == 200


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, then read until the server closes (bounded by the socket timeout)."""
    with socket.create_connection((LOOPBACK, port), timeout=20) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def error_of(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head.split()[1]), json.loads(body)


def test_headers_that_never_finish_get_408(collector: ServerProcess) -> None:
    answer = exchange(collector.port, b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
    status, error = error_of(answer)
    assert (status, error["success"], error["code"]) == (408, False, "header_timeout")


def test_headers_over_the_limit_get_431(collector: ServerProcess) -> None:
    big = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    status, error = error_of(exchange(collector.port, big))
    assert (status, error["code"]) == (431, "headers_too_large")
    assert "65536" in str(error["message"])


def test_bytes_that_are_not_http_get_a_json_400(collector: ServerProcess) -> None:
    status, error = error_of(exchange(collector.port, b"\x16\x03\x01 not http\r\n\r\n"))
    assert (status, error["code"]) == (400, "malformed_http")


def test_a_connection_that_sends_nothing_is_closed(collector: ServerProcess) -> None:
    assert exchange(collector.port, b"") == b""


def test_a_body_that_never_finishes_is_dropped_and_nothing_published(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    _, name = stream
    before = stored_count(nats, name)
    body = b'{"batch":[' + TRACK % b"slow" + b"]}"
    head = (
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Basic d2ViLWtleS0xOg==\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(body) + 10)
    )
    assert exchange(collector.port, head + body) == b""  # closed without an answer
    assert stored_count(nats, name) == before


def slow_connection(port: int, *, body_pending: bool = False) -> socket.socket:
    """A connection whose request never completes: headers unfinished, or (body_pending)
    headers complete and the body still owed."""
    sock = socket.create_connection((LOOPBACK, port), timeout=20)
    if body_pending:
        sock.sendall(
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d2ViLWtleS0xOg==\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
    else:
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    time.sleep(0.05)  # connected and counted in this order: the first is the oldest
    return sock


def closed_by_server(held: list[socket.socket]) -> list[bool]:
    """Which of `held` the server has answered or closed (looked at once, after 0.3 s)."""
    time.sleep(0.3)
    found = []
    for sock in held:
        sock.setblocking(False)
        try:
            sock.recv(4096)  # an answer or the close
            found.append(True)
        except BlockingIOError:
            found.append(False)  # nothing: still open, still waiting
        except ConnectionResetError:
            found.append(True)
    return found


def test_at_the_limit_the_oldest_connection_still_sending_headers_makes_room(
    collector: ServerProcess,
) -> None:
    # 8 connections (the limit) sending headers slowly: behind a load balancer, one client
    # could hold every slot, and complete requests would never be served.
    held = [slow_connection(collector.port) for _ in range(8)]
    newcomers = [slow_connection(collector.port) for _ in range(3)]
    try:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = exchange(collector.port, request)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        # Each newcomer took the place of the oldest connection still waiting.
        assert closed_by_server(held) == [True] * 4 + [False] * 4
        assert closed_by_server(newcomers) == [False] * 3
    finally:
        for sock in held + newcomers:
            sock.close()


def test_past_the_limit_a_new_connection_is_closed_when_every_slot_holds_a_request(
    collector: ServerProcess,
) -> None:
    held = [slow_connection(collector.port, body_pending=True) for _ in range(8)]
    try:
        extra = exchange(collector.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_by_server(held) == [False] * 8  # none is shed
    finally:
        for sock in held:
            sock.close()
    assert extra == b""
    # The limit is on open connections: once they are gone, new ones are served.
    for _ in range(100):
        if httpx.get(f"http://{LOOPBACK}:{collector.port}/healthz").status_code == 200:
            break
    else:
        raise AssertionError("collector never served again")


# --- context.ip ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxied_collector(
    tmp_path_factory: pytest.TempPathFactory, stream: tuple[str, str]
) -> Iterator[ServerProcess]:
    url, _ = stream
    workdir = tmp_path_factory.mktemp("proxied")
    env = {**LIMITS, "LIFTOFF_TRUSTED_PROXIES": "127.0.0.0/8, 10.0.0.0/8"}
    with collector_server(workdir, url, WRITE_KEYS_JSON, extra_env=env) as server:
        yield server


def ip_stored(
    server: ServerProcess, nats: ServerProcess, name: str, message_id: str, **headers: str
) -> str | None:
    auth = headers.pop("auth", "web-key-1")
    body = json.dumps({"event": "e", "userId": "u", "messageId": message_id}).encode()
    with httpx.Client(base_url=f"http://{LOOPBACK}:{server.port}", auth=(auth, "")) as client:
        response = client.post("/v1/track", content=body, headers=headers)
    assert response.status_code == 200, response.text
    (event,) = [
        m.event
        for m in asyncio.run(read_jetstream(nats_url(nats), name))
        if m.event["messageId"] == message_id
    ]
    return event.get("context", {}).get("ip")


def test_context_ip_from_the_peer_and_never_from_an_untrusted_forwarded_for(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    _, name = stream
    assert ip_stored(collector, nats, name, "ip-peer") == "127.0.0.1"
    spoofed = ip_stored(collector, nats, name, "ip-spoof", **{"x-forwarded-for": "203.0.113.5"})
    assert spoofed == "127.0.0.1"  # no trusted proxies by default: the header is ignored


def test_context_ip_from_a_trusted_proxys_forwarded_for(
    proxied_collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    _, name = stream
    single = ip_stored(
        proxied_collector, nats, name, "ip-xff-1", **{"x-forwarded-for": "203.0.113.5"}
    )
    assert single == "203.0.113.5"
    # A client-written address in front of the proxies' chain is not believed: the nearest
    # address that is not itself a trusted proxy is the client.
    chained = ip_stored(
        proxied_collector,
        nats,
        name,
        "ip-xff-2",
        **{"x-forwarded-for": "192.0.2.66, 203.0.113.5, 10.1.2.3"},
    )
    assert chained == "203.0.113.5"


def test_ip_collection_off_for_a_source(
    proxied_collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    _, name = stream
    assert (
        ip_stored(
            proxied_collector,
            nats,
            name,
            "ip-off",
            auth="ios-key-2",
            **{"x-forwarded-for": "203.0.113.5"},
        )
        is None
    )
