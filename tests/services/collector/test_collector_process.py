"""`python -m services collector` as a real HTTP server process, and a real Segment SDK."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from segment.analytics import Client as SegmentClient
from segment.analytics.request import APIError

from services.stream.base import StreamSettings
from services.stream.jetstream import ensure_stream
from tests.servers import ServerProcess, collector_server, nats_server, nats_url
from tests.services.stream.under_test import WRITE_KEYS_JSON, read_jetstream

pytestmark = pytest.mark.servers


@pytest.fixture
def collector(
    tmp_path: Path, shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> Iterator[ServerProcess]:
    url, _ = jetstream
    with collector_server(tmp_path, url, WRITE_KEYS_JSON) as server:
        yield server


def base_url(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_real_http_round_trip(
    collector: ServerProcess, shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    _, stream = jetstream
    events = [{"type": "track", "event": "E", "userId": f"u{i}"} for i in range(100)]
    with httpx.Client(base_url=base_url(collector), auth=("web-key-1", "")) as client:
        response = client.post("/v1/batch", json={"batch": events})
        ready = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert ready.status_code == 200
    stored = asyncio.run(read_jetstream(nats_url(shared_nats), stream))
    assert [m.event["userId"] for m in stored] == [f"u{i}" for i in range(100)]

    log_text = collector.log_path.read_text()
    assert "web-key-1" not in log_text  # write keys never reach the logs
    assert all(json.loads(line) for line in log_text.splitlines())  # structured JSON lines


def test_metrics_sum_every_worker_process(
    tmp_path: Path, shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    """With two workers, any scrape reports the requests both served (multiprocess mode)."""
    url, _ = jetstream
    with (
        collector_server(tmp_path, url, WRITE_KEYS_JSON, workers=2) as server,
        httpx.Client(base_url=base_url(server), auth=("web-key-1", "")) as client,
    ):
        for i in range(40):
            # A new connection per request, so both workers serve some of them. A 503 (a worker
            # not yet connected, an acknowledgement late on a loaded machine) is retried, as an
            # SDK does; the 200s are what the counters must sum.
            for _ in range(50):
                answer = httpx.post(
                    f"{base_url(server)}/v1/track",
                    json={"event": "E", "userId": f"u{i}"},
                    auth=("web-key-1", ""),
                )
                if answer.status_code != 503:
                    break
                time.sleep(0.1)
            assert answer.status_code == 200, answer.text
        for _ in range(6):
            lines = httpx.get(f"{base_url(server)}/metrics").text.splitlines()
            assert 'liftoff_collector_requests_total{route="/v1/track",status="200"} 40.0' in lines
            assert 'liftoff_collector_events_accepted_total{source="web"} 40.0' in lines
            assert (
                'liftoff_collector_request_duration_seconds_count{route="/v1/track"} 40.0' in lines
            )
        assert client.get("/healthz").status_code == 200


def test_analytics_python_sdk_end_to_end(
    collector: ServerProcess, shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    _, stream = jetstream
    errors: list[Exception] = []
    sdk = SegmentClient(
        "web-key-1",
        host=base_url(collector),
        gzip=True,
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
    )
    sdk.identify("user-1", {"email": "a@example.com"})
    sdk.track("user-1", "Order Completed", {"total": 9.99})
    sdk.page("user-1", "Docs", "Install")
    sdk.screen("user-1", "App", "Home")
    sdk.group("user-1", "acme", {"plan": "enterprise"})
    sdk.alias("anon-1", "user-1")
    sdk.flush()
    sdk.join()
    assert errors == []

    stored = asyncio.run(read_jetstream(nats_url(shared_nats), stream))
    assert [m.event["type"] for m in stored] == [
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
    ]
    track = stored[1].event
    assert track["event"] == "Order Completed"
    assert track["properties"] == {"total": 9.99}
    assert track["context"]["library"]["name"] == "analytics-python"
    assert track["liftoff"]["source"] == "web"
    assert track["sentAt"] and track["originalTimestamp"]  # the SDK sends both
    assert stored[1].headers["Nats-Msg-Id"] == track["messageId"]  # the SDK's own messageId


def test_sdk_sees_a_rejected_write_key(collector: ServerProcess) -> None:
    sdk = SegmentClient("wrong-key", host=base_url(collector), sync_mode=True)
    with pytest.raises(APIError) as caught:
        sdk.track("user-1", "E")
    assert caught.value.status == 401
    assert caught.value.code == "invalid_write_key"


def test_collector_started_before_its_broker_becomes_ready_when_it_comes(tmp_path: Path) -> None:
    broker = nats_server(tmp_path / "nats")  # port chosen, not started yet
    url = f"{nats_url(broker)}/LATE?publish_timeout=2"
    with (
        collector_server(tmp_path, url, WRITE_KEYS_JSON) as server,
        httpx.Client(base_url=base_url(server), auth=("web-key-1", "")) as client,
    ):
        body = {"batch": [{"type": "identify", "userId": "u"}]}
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/batch", json=body).status_code == 503
        with broker:
            asyncio.run(ensure_stream(url, StreamSettings()))
            for _ in range(400):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            assert client.post("/v1/batch", json=body).status_code == 200


def test_sigterm_shuts_down_cleanly(collector: ServerProcess) -> None:
    process = collector.process
    assert process is not None
    collector.stop()
    # uvicorn finishes in-flight requests and the lifespan shutdown, then re-raises SIGTERM
    # so that the exit status still says "terminated by SIGTERM".
    assert process.returncode == -signal.SIGTERM
    assert "Application shutdown complete" in collector.log_tail()
    assert "Traceback" not in collector.log_path.read_text()


def children_of(pid: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry.name))
    return children


def serving_process(client: socket.socket, server_port: int, candidates: set[int]) -> int | None:
    """Which of `candidates` holds the server side of `client`'s TCP connection."""
    client_port = client.getsockname()[1]
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            inode = fields[9]
    if inode is None:
        return None
    for pid in candidates:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def test_two_worker_processes_serve_one_port(
    tmp_path: Path, shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    url, stream = jetstream
    request = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic d2ViLWtleS0xOg==\r\n"
    with collector_server(tmp_path, url, WRITE_KEYS_JSON, workers=2) as server:
        assert server.pid is not None
        workers = children_of(server.pid)
        served_by: set[int] = set()
        held: list[socket.socket] = []
        sent = 0
        try:
            # Until both workers have answered (the kernel wakes whichever accepts first: 20
            # in a row to one worker is unlikely, 100 more so), at least 20 requests.
            for i in range(100):
                if i >= 20 and len(served_by) == 2:
                    break
                body = json.dumps(
                    {"batch": [{"type": "identify", "userId": f"u{i}", "messageId": f"m{i}"}]}
                ).encode()
                # Each worker connects to NATS on its own; a 503 before it has is retried.
                for _ in range(200):
                    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                    sock.sendall(request + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    status = sock.recv(4096).split(b" ", 2)[1]
                    if status != b"503":
                        break
                    sock.close()
                    time.sleep(0.05)
                assert status == b"200"
                # The connection is still open: the process holding its other end answered.
                served_by.add(serving_process(sock, server.port, workers))  # type: ignore[arg-type]
                held.append(sock)
                sent += 1
        finally:
            for sock in held:
                sock.close()
    # Two processes, both workers of the one server, answered (one worker would be one PID).
    assert len(workers) >= 2
    assert len(served_by) == 2 and served_by <= workers, (served_by, workers)
    stored = asyncio.run(read_jetstream(nats_url(shared_nats), stream))
    assert sorted(m.event["messageId"] for m in stored) == sorted(f"m{i}" for i in range(sent))
