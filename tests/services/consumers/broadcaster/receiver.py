"""A real HTTP server on a free loopback port that plays the third party (a webhook endpoint,
Mixpanel, Amplitude, GA4): it records every request and answers as it is told.

Answers come from *rules*, checked in order: a rule matches a request by path prefix and an
optional predicate, answers with a fixed status/headers/body or a function of the request, and
can be limited to its next ``times`` matches. Without a matching rule the answer is the
service's success answer for that path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers import LOOPBACK


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what we answered
    at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Rule:
    path: str
    answer: Answer | Callable[[Received], Answer | None]
    times: int | None = None
    when: Callable[[Received], bool] | None = None
    used: int = 0


def success(path: str, body: bytes) -> Answer:
    if path.startswith("/import"):
        count = len(json.loads(body))
        answer = {"code": 200, "num_records_imported": count, "status": "OK"}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
    if path.startswith(("/engage", "/groups")):
        return 200, {"Content-Type": "application/json"}, b'{"error": null, "status": 1}'
    if path.startswith("/2/httpapi"):
        count = len(json.loads(body)["events"])
        answer = {"code": 200, "events_ingested": count, "payload_size_bytes": len(body)}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
    if path.startswith("/mp/collect"):
        return 204, {}, b""
    return 200, {"Content-Type": "application/json"}, b'{"ok": true}'


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.rules: list[Rule] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------

    def answer(
        self,
        status: int = 200,
        *,
        path: str = "/",
        headers: dict[str, str] | None = None,
        body: bytes | dict[str, Any] = b"",
        times: int | None = None,
        when: Callable[[Received], bool] | None = None,
    ) -> Rule:
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        rule = Rule(path, (status, dict(headers or {}), payload), times, when)
        with self._lock:
            self.rules.append(rule)
        return rule

    def answer_with(
        self, function: Callable[[Received], Answer | None], *, path: str = "/"
    ) -> Rule:
        """``function`` answers (or returns None to fall through to the next rule)."""
        rule = Rule(path, function)
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            self.rules.remove(rule)

    def delivered(self, path: str = "/") -> list[Received]:
        """Requests under ``path`` that we answered with a 2xx."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path) and 200 <= r.status < 300]

    def all(self, path: str = "/") -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path)]

    def wait_for(self, condition: Callable[[], bool], deadline: float = 30.0) -> None:
        """Poll ``condition`` until true: a wait for progress, not a timed assertion."""
        give_up = time.monotonic() + deadline
        while not condition():
            if time.monotonic() > give_up:
                raise AssertionError(
                    f"condition not reached within {deadline}s; received "
                    f"{[(r.path, r.status) for r in self.all()][-20:]}"
                )
            time.sleep(0.02)

    # --- server -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                headers = {k.lower(): v for k, v in self.headers.items()}
                probe = Received("POST", parts.path, query, headers, body, 0, time.monotonic())
                status, answer_headers, answer_body = receiver._decide(probe)
                with receiver._lock:
                    receiver.requests.append(
                        Received("POST", parts.path, query, headers, body, status, time.monotonic())
                    )
                self.send_response(status)
                for name, value in answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer_body)))
                self.end_headers()
                self.wfile.write(answer_body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _decide(self, request: Received) -> Answer:
        with self._lock:
            rules = list(self.rules)
        for rule in rules:
            if not request.path.startswith(rule.path):
                continue
            if rule.when is not None and not rule.when(request):
                continue
            with self._lock:
                if rule.times is not None and rule.used >= rule.times:
                    continue
                rule.used += 1
            if callable(rule.answer):
                answer = rule.answer(request)
                if answer is None:
                    continue
                return answer
            return rule.answer
        return success(request.path, request.body)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class EventFactory:
    """Enriched events as the collector writes them (services/events/model.py)."""

    source: str = "web"
    counter: int = 0
    base: dict[str, Any] = field(default_factory=dict)

    def make(self, kind: str = "track", **fields: Any) -> dict[str, Any]:
        self.counter += 1
        event: dict[str, Any] = {
            "type": kind,
            "messageId": f"m-{self.counter:05d}",
            "receivedAt": "2026-11-27T20:19:03.512Z",
            "timestamp": "2026-11-27T20:19:03.000Z",
            "userId": f"user-{self.counter % 3}",
            "anonymousId": f"anon-{self.counter % 3}",
            "liftoff": {"source": self.source, "schema": 1},
            "context": {"ip": "203.0.113.9", "locale": "en-US"},
        }
        if kind == "track":
            event["event"] = "Order Completed"
            event["properties"] = {"revenue": 12.5, "currency": "EUR"}
        if kind == "group":
            event["groupId"] = "acme"
            event["traits"] = {"plan": "pro"}
        if kind == "alias":
            event["previousId"] = "old"
        event.update(self.base)
        event.update(fields)
        return event

    def data(self, kind: str = "track", **fields: Any) -> bytes:
        return json.dumps(self.make(kind, **fields)).encode()
