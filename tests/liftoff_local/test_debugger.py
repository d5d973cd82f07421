"""The debugger's server side (liftoff_local/debugger.py) on an in-process tracking API: the
page's files and their headers, who may open them, the live stream (backlog, new entries,
resuming after a disconnection, filters, reset, its bounds) and the page's colours.

The page itself runs in Chromium in test_debugger_browser.py."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from liftoff_local import debugger
from liftoff_local.debugger import PAGE_DIR, Debugger
from liftoff_local.tracking import Entry, TrackingView
from liftoff_local.tracking_api import ServerLimits, TrackingApi
from tests.servers import LOOPBACK, free_port


def at(sequence: int, milliseconds: int = 0) -> str:
    """When entry `sequence` arrived: one a second (a quarantined one half a second later)."""
    return f"2026-12-07T10:{sequence // 60:02d}:{sequence % 60:02d}.{milliseconds:03d}Z"


def track(sequence: int, source: str, name: str, **fields: Any) -> Entry:
    event = {
        "type": "track",
        "event": name,
        "liftoff": {"source": source},
        "receivedAt": at(sequence),
        **fields,
    }
    return Entry.of(sequence, f"events.{source}.track", json.dumps(event).encode(), {})


def quarantined(sequence: int, body: bytes, reason: str, **headers: str) -> Entry:
    return Entry.of(
        sequence,
        "deadletter.collector",
        body,
        {
            "Liftoff-Reason": reason,
            "Liftoff-Consumer": "collector",
            "Liftoff-Source": "web",
            "Liftoff-Received-At": at(sequence, 500),
            **headers,
        },
    )


@dataclass
class Server:
    api: TrackingApi
    debugger: Debugger
    port: int

    @property
    def events(self) -> TrackingView:
        return self.api.events

    @property
    def quarantine(self) -> TrackingView:
        return self.api.quarantine


def serve(
    events: TrackingView | None = None,
    quarantine: TrackingView | None = None,
    limits: ServerLimits | None = None,
) -> Server:
    events, quarantine = events or TrackingView(), quarantine or TrackingView()
    api = TrackingApi(
        events,
        quarantine,
        lambda: (events.reset(), quarantine.reset()),
        LOOPBACK,
        free_port(),
        limits or ServerLimits(),
    )
    found = Debugger(api, {"stack": "test", "sources": ["web", "backend"]})
    api.start()
    return Server(api, found, api.port)


@pytest.fixture
def server() -> Iterator[Server]:
    events, quarantine = TrackingView(), TrackingView()
    events.add(track(1, "web", "Signed Up", userId="u-1", properties={"plan": "pro"}))
    events.add(track(2, "backend", "Order Completed", anonymousId="a-2"))
    quarantine.add(
        quarantined(
            1,
            b'{"type": "track", "event": "No User"}',
            "event 0: `userId` or `anonymousId` is required",
            **{"Liftoff-Code": "missing_identity", "Liftoff-Field": "userId"},
            **{"Liftoff-Index": "0", "Liftoff-Route": "/v1/batch"},
        )
    )
    running = serve(events, quarantine)
    yield running
    running.api.stop()


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    answer = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return answer


class Stream:
    """A server-sent event stream read the way EventSource does (one event per blank line)."""

    def __init__(self, port: int, path: str = "/debugger/live", **headers: str) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=5)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()
        self.last_id = ""

    def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        self.sock.settimeout(timeout)
        event, data = "message", []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode().rstrip("\n")
            if text == "":
                if data:
                    return event, json.loads("\n".join(data))
                event = "message"
                continue
            field, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                self.last_id = value

    def until(self, wanted: str, timeout: float = 5.0) -> Any:
        give_up = time.monotonic() + timeout
        while True:
            left = give_up - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {wanted} event within {timeout} s")
            event, data = self.next(left)
            if event == wanted:
                return data

    def entries(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        return self.until("entries", timeout)["entries"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def keys(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{row['k']}{row['seq']}" for row in rows]


# --- the page and who may open it ----------------------------------------------------------


def test_the_page_and_its_files_come_with_protective_headers(server: Server) -> None:
    for path, kind in [
        ("/debugger", "text/html"),
        ("/debugger/", "text/html"),
        ("/debugger/debugger.js", "text/javascript"),
        ("/debugger/debugger.css", "text/css"),
        ("/debugger/icon.svg", "image/svg+xml"),
    ]:
        status, headers, body = request(server.port, "GET", path)
        assert status == 200 and headers["content-type"].startswith(kind), path
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "connect-src 'self'" in policy
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert body
    status, _, body = request(server.port, "GET", "/debugger/nothing.js")
    assert status == 404 and json.loads(body)["error"]


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """Offline, and no CDN: every URL in the page's files is its own (or a namespace)."""
    for name in ("index.html", "debugger.js", "debugger.css", "icon.svg"):
        text = (PAGE_DIR / name).read_text()
        for url in re.findall(r"https?://[^\s'\"`)]+", text):
            # The SVG namespace, and the collector's address in the example shown as text.
            assert url.startswith(("http://www.w3.org/2000/svg", "http://127.0.0.1:")), url
        assert not re.search(r"['\"(]//\w", text), f"{name}: a protocol-relative URL"
        assert "url(" not in text and "@import" not in text, name
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
        assert "eval(" not in text and "new Function" not in text, name
    html = (PAGE_DIR / "index.html").read_text()
    for link in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert link.startswith(("/debugger/", "#")), link


NAVIGATION = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}


def test_a_link_from_another_site_opens_the_page_and_nothing_else(server: Server) -> None:
    """A teammate clicks a shared link (in chat, an issue): the page opens; its data, files
    and the reset are same-origin only, as for the tracking API."""
    port = server.port
    document = {**NAVIGATION, "Sec-Fetch-Dest": "document"}
    assert request(port, "GET", "/debugger?event=Signed%20Up", document)[0] == 200
    assert request(port, "GET", "/debugger", {**document, "Sec-Fetch-Site": "same-site"})[0] == 200
    for method, path, headers in [
        ("GET", "/debugger/live", document),  # only the page opens by a link
        ("GET", "/events", document),
        ("GET", "/debugger", {**NAVIGATION, "Sec-Fetch-Dest": "iframe"}),  # framed
        ("GET", "/debugger", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}),
        ("GET", "/debugger/live", {"Origin": "https://evil.example"}),  # EventSource
        ("GET", "/debugger/live", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}),
        ("POST", "/reset", {**document, "Origin": "https://evil.example"}),  # a form
        ("POST", "/reset", document),
    ]:
        status, _, body = request(port, method, path, headers)
        assert status == 403 and "cross-origin" in json.loads(body)["error"], (path, headers)
    status, _, body = request(port, "GET", "/debugger", {"Host": f"evil.example:{port}"})
    assert status == 403 and "rebinding" in json.loads(body)["error"]
    assert len(server.events) == 2, "nothing was reset"


def test_the_page_may_reset_from_its_own_origin(server: Server) -> None:
    same = {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert request(server.port, "POST", "/reset", same)[0] == 200
    assert len(server.events) == 0


# --- the live stream -----------------------------------------------------------------------


def test_the_stream_sends_what_is_held_then_each_new_entry(server: Server) -> None:
    stream = Stream(server.port)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-store"
    hello = stream.until("hello")
    assert hello["stack"] == "test" and hello["sources"] == ["web", "backend"]
    assert hello["resumed"] is False
    first = stream.entries()
    assert keys(first) == ["e1", "q1", "e2"], "oldest first, by the time they arrived"
    signed_up, no_user, order = first
    assert signed_up["name"] == "Signed Up" and signed_up["userId"] == "u-1"
    assert signed_up["source"] == "web" and signed_up["type"] == "track"
    assert json.loads(signed_up["raw"])["properties"] == {"plan": "pro"}
    assert order["anonymousId"] == "a-2" and "userId" not in order
    assert no_user["raw"] == '{"type": "track", "event": "No User"}', "exactly as stored"
    assert no_user["code"] == "missing_identity" and no_user["field"] == "userId"
    assert no_user["index"] == 0 and no_user["route"] == "/v1/batch"
    assert "userId" in no_user["reason"] and no_user["consumer"] == "collector"
    assert stream.last_id == "2-1-0-0-0"
    stats = stream.until("stats")
    assert stats["views"]["events"]["held"] == 2 and len(stats["perSecond"]) <= 120

    began = time.monotonic()
    server.events.add(track(3, "web", "Clicked", userId="u-3"))
    assert keys(stream.entries(timeout=2)) == ["e3"]
    print(f"a new entry reached the stream's reader in {time.monotonic() - began:.3f} s")
    assert stream.last_id == "3-1-0-0-0"
    stream.close()


def test_a_reader_resumes_where_it_was(server: Server) -> None:
    """After a disconnection (local mode restarted): Last-Event-ID, as EventSource sends it,
    or after= (the page's own retry) — nothing lost, nothing twice."""
    stream = Stream(server.port)
    stream.entries()
    place = stream.last_id
    stream.close()
    server.events.add(track(3, "web", "While away"))
    server.quarantine.add(quarantined(2, b"{", "malformed"))
    resumed = Stream(server.port, Last_Event_ID=place)
    assert resumed.until("hello")["resumed"] is True
    assert keys(resumed.entries()) == ["q2", "e3"]
    resumed.close()
    by_query = Stream(server.port, f"/debugger/live?after={place}")
    assert keys(by_query.entries()) == ["q2", "e3"]
    by_query.close()
    # The header wins over the URL (EventSource keeps the URL it was made with).
    both = Stream(server.port, "/debugger/live?after=0-0-0-0-0", Last_Event_ID="3-2-0-0-0")
    both.until("hello")
    server.events.add(track(4, "web", "Later"))
    assert keys(both.entries()) == ["e4"]
    both.close()
    nonsense = Stream(server.port, Last_Event_ID="<script>")
    assert keys(nonsense.entries()) == ["e1", "q1", "e2", "q2", "e3", "e4"], "from the start"
    nonsense.close()


def test_a_reset_or_a_new_stream_makes_the_page_start_again(server: Server) -> None:
    stream = Stream(server.port)
    stream.entries()
    same = {"Origin": f"http://localhost:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert request(server.port, "POST", "/reset", same)[0] == 200
    assert stream.until("reload") == {"why": "reset"}
    server.events.add(track(5, "web", "After the reset"))
    assert keys(stream.entries()) == ["e5"]
    assert stream.last_id == "5-1-2-1-0", "the marks are part of the place"
    stream.close()
    # A place from before the reset: the page is told to start again.
    old = Stream(server.port, Last_Event_ID="2-1-0-0-0")
    assert old.until("reload") == {"why": "reset"}
    assert keys(old.entries()) == ["e5"]
    old.close()
    # A place past the stream's end: liftoff local started again with --fresh.
    fresh = Stream(server.port, Last_Event_ID="900-1-2-1-0")
    assert fresh.until("reload") == {"why": "new stream"}
    fresh.close()
    # A new stream that already went further than the place: told by when it was created.
    server.events.created = 1765100000000
    other = Stream(server.port, Last_Event_ID="2-1-2-1-1765000000000")
    assert other.until("reload") == {"why": "new stream"}
    assert keys(other.entries()) == ["e5"]
    assert other.last_id == "5-1-2-1-1765100000000"
    other.close()


def test_what_the_stream_deleted_reloads_the_page(server: Server) -> None:
    stream = Stream(server.port)
    stream.entries()
    server.quarantine.forget([1], first_sequence=1)  # `quarantine replay` deleted it
    assert stream.until("reload") == {"why": "deleted"}
    stream.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("show=quarantined", ["q1"]),
        ("show=accepted", ["e1", "e2"]),
        ("source=backend", ["e2"]),
        ("type=track&source=web", ["e1", "q1"]),
        ("event=Signed%20Up", ["e1"]),
        ("event=Signed", []),  # exact, like the tracking API's filters
        ("user=u-1", ["e1"]),
        ("user=a-2", ["e2"]),  # an anonymous id
        ("text=PRO", ["e1"]),  # anywhere in the JSON, whatever the case
        ("text=anonymousId%60%20is%20required", ["q1"]),  # the quarantine's reason
        ("text=%3Cscript%3E", []),
    ],
)
def test_filters(server: Server, query: str, expected: list[str]) -> None:
    stream = Stream(server.port, f"/debugger/live?{query}")
    hello = stream.until("hello")
    assert hello["filters"]
    assert keys(stream.entries()) == expected
    stream.close()


@pytest.mark.parametrize(
    "query",
    [
        "colour=blue",
        "show=everything",
        "backlog=-1",
        "backlog=lots",
        "backlog=10001",
        "text=" + "x" * 201,
    ],
)
def test_a_bad_filter_is_a_400(server: Server, query: str) -> None:
    status, headers, body = request(server.port, "GET", f"/debugger/live?{query}")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]


def test_what_a_page_is_sent_is_bounded_and_says_what_it_left_out() -> None:
    events = TrackingView(max_entries=200)
    for sequence in range(1, 301):
        events.add(track(sequence, "web", "E", messageId=f"m-{sequence}", pad="x" * 1000))
    running = serve(events)
    try:
        stream = Stream(running.port, "/debugger/live?backlog=50")
        message = stream.until("entries")
        # The view holds 101-300; the page asked for 50: the newest 50, and the rest counted.
        assert [row["seq"] for row in message["entries"]] == list(range(251, 301))
        assert message["missed"] == 250
        stream.close()
        # A reader resuming from before what the view still holds is told how many it missed.
        behind = Stream(running.port, "/debugger/live?backlog=1000", Last_Event_ID="40-0-0-0-0")
        message = behind.until("entries")
        assert message["entries"][0]["seq"] == 101 and message["missed"] == 60
        behind.close()
        # Large deliveries come in messages of bounded size.
        big = Stream(running.port)
        sizes = []
        for _ in range(2):
            event, data = big.next()
            while event != "entries":
                event, data = big.next()
            sizes.append(len(json.dumps(data)))
        assert max(sizes) <= debugger.MESSAGE_BYTES * 1.3
        big.close()
    finally:
        running.api.stop()


def test_streams_are_bounded_and_leave_the_api_its_connections() -> None:
    running = serve(limits=ServerLimits(max_connections=2))
    streams = []
    try:
        for _ in range(debugger.MAX_STREAMS):
            streams.append(Stream(running.port))
            streams[-1].until("hello")
        refused = Stream(running.port)
        assert refused.status == 503
        refused.close()
        assert running.debugger.streams == debugger.MAX_STREAMS
        # Eight pages streaming and the API, with a pool of 2 connections, still answers.
        for _ in range(3):
            assert request(running.port, "GET", "/events")[0] == 200
        streams.pop().close()
        deadline = time.monotonic() + 5
        while running.debugger.streams == debugger.MAX_STREAMS and time.monotonic() < deadline:
            time.sleep(0.05)
        replacement = Stream(running.port)
        assert replacement.status == 200
        streams.append(replacement)
    finally:
        for stream in streams:
            stream.close()
        running.api.stop()


def test_a_page_that_stops_reading_is_cut_off() -> None:
    """It costs one message at most, then its writes time out: the stream ends and its
    place is free (the page resumes where it was when it reads again)."""
    running = serve(limits=ServerLimits(io_timeout_seconds=0.5))
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((LOOPBACK, running.port))
        sock.sendall(
            f"GET /debugger/live HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n\r\n".encode()
        )
        deadline = time.monotonic() + 5
        while running.debugger.streams == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert running.debugger.streams == 1
        for sequence in range(1, 400):
            running.events.add(track(sequence, "web", "E", pad="y" * 20_000))
        deadline = time.monotonic() + 15
        while running.debugger.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.debugger.streams == 0, "a reader that stopped reading was not cut off"
        sock.close()
    finally:
        running.api.stop()


def test_stopping_the_api_ends_the_streams(server: Server) -> None:
    stream = Stream(server.port)
    stream.entries()
    server.api.stop()
    with pytest.raises((EOFError, OSError)):
        while True:
            stream.next(timeout=5)
    stream.close()


def test_bytes_that_are_not_utf8_are_said_so() -> None:
    quarantine = TrackingView()
    quarantine.add(quarantined(1, b'{"event": "caf\xe9"}', "not valid UTF-8"))
    running = serve(quarantine=quarantine)
    try:
        stream = Stream(running.port)
        (row,) = stream.entries()
        assert row["notUtf8"] is True and row["raw"] == '{"event": "caf\ufffd"}'
        stream.close()
    finally:
        running.api.stop()


# --- the page's colours ----------------------------------------------------------------------

# (text, background) as the stylesheet uses them.
PAIRS = [
    ("fg", "bg"), ("fg", "bg-alt"), ("muted", "bg"), ("muted", "bg-alt"), ("accent", "bg"),
    ("accent", "bg-alt"), ("accent-fg", "accent"), ("danger", "bg"), ("danger", "danger-bg"),
    ("danger", "bg-alt"), ("ok", "bg-alt"), ("warn", "bg-alt"), ("hl-fg", "hl-bg"),
    ("badge-fg", "badge-bg"), ("fg", "badge-bg"), ("fg", "danger-bg"), ("muted", "danger-bg"),
    ("muted", "badge-bg"), ("j-key", "bg"), ("j-str", "bg"), ("j-num", "bg"), ("j-lit", "bg"),
    # the JSON's colours inside the highlighted field
    ("j-key", "hl-bg"), ("j-str", "hl-bg"), ("j-num", "hl-bg"), ("j-lit", "hl-bg"),
]  # fmt: skip


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_have_a_contrast_of_at_least_4_5() -> None:
    """WCAG 2 AA for normal text, in the light and the dark scheme."""
    css = (PAGE_DIR / "debugger.css").read_text()
    light_text, dark_text = css.split("@media (prefers-color-scheme: dark)", 1)
    variables = r"--([\w-]+):\s*(#[0-9a-fA-F]{6})"
    light = dict(re.findall(variables, light_text.split("@media", 1)[0]))
    dark = {**light, **dict(re.findall(variables, dark_text.split("\n}\n", 1)[0]))}
    assert len(light) > 20 and dark["bg"] != light["bg"]
    for scheme, colours in (("light", light), ("dark", dark)):
        for text, background in PAIRS:
            ratio = contrast(colours[text], colours[background])
            assert ratio >= 4.5, f"{scheme}: --{text} on --{background} is {ratio:.2f}:1"
    # Every colour the stylesheet uses is one of these variables (nothing unchecked).
    rules = re.sub(r"--[\w-]+:\s*#[0-9a-fA-F]{6};", "", css)
    assert not re.findall(r"#[0-9a-fA-F]{3,6}\b", rules)
