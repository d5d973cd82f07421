"""Legitimate requests answered while ~520 sockets send their headers slowly (slowloris).

    .venv/bin/python benchmarks/slow_connections.py [--code DIR] [--slow 520] [--requests 100]

Starts a real nats-server -js and the real collector process (`python -m services collector`
from ``--code``: this tree by default, or an export of an older commit to measure "before",
e.g. ``git archive d932cdf | tar -x -C /tmp/base``) with its default HTTP limits (512
connections per worker, 10 s header timeout). An attacker holds ``--slow`` connections, each
sending a request line and then one header byte a second, and opens a new one whenever one is
closed; behind a load balancer they would all come from one address. Meanwhile a client sends
``--requests`` legitimate batches, each on a new connection, one every 0.25 s, each allowed
``--timeout`` seconds. Prints how many were answered 200 and their latency (p50, p99; an
unanswered request counts as its timeout), plus how many attacker connections were cut off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.stream.base import StreamSettings
from services.stream.dead_letters import ensure_dead_letter_stream
from services.stream.jetstream import ensure_stream
from tests.servers import (
    LOOPBACK,
    ServerProcess,
    free_port,
    http_ok,
    nats_server,
    nats_url,
)

WRITE_KEY = "bench-key"
AUTH = "Basic " + __import__("base64").b64encode(f"{WRITE_KEY}:".encode()).decode()


def collector_process(code: Path, workdir: Path, stream_url: str) -> ServerProcess:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "LIFTOFF_STREAM_URL": stream_url,
        "LIFTOFF_WRITE_KEYS": json.dumps({"web": WRITE_KEY}),
        "LIFTOFF_HOST": LOOPBACK,
        "LIFTOFF_PORT": str(port),
        "LIFTOFF_LOG_LEVEL": "WARNING",
    }
    return ServerProcess(
        name=f"collector:{port}",
        argv=[sys.executable, "-m", "services", "collector"],
        port=port,
        log_path=workdir / "collector.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/healthz"),
        env=env,
        cwd=code,
    )


class Attacker:
    """Holds `count` slow-header connections on its own event loop thread."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.opened = self.cut_off = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.thread.start()

        async def launch() -> None:
            for index in range(self.count):
                self.tasks.append(asyncio.ensure_future(self._hold(index)))
                await asyncio.sleep(0.002)  # ~1 s to open them all

        asyncio.run_coroutine_threadsafe(launch(), self.loop).result()

    async def _hold(self, index: int) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.opened += 1
            closed = asyncio.ensure_future(reader.read())  # done when the server closes
            try:
                writer.write(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Slow-%d: " % index)
                await writer.drain()
                # One header byte a second, for as long as the server lets it.
                while not (await asyncio.wait({closed}, timeout=1.0))[0]:
                    writer.write(b"a")
                    await writer.drain()
            except OSError:
                pass
            finally:
                self.cut_off += 1
                closed.cancel()
                writer.close()

    def stop(self) -> None:
        async def cancel() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def legitimate_request(port: int, index: int, timeout: float) -> float | None:
    """One batch on a new connection; seconds to a 200, or None."""
    body = json.dumps(
        {"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": f"ok-{index}"}]}
    ).encode()
    request = (
        b"POST /v1/batch HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"
        b"Authorization: " + AUTH.encode() + b"\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    started = time.monotonic()
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            sock.sendall(request)
            answer = sock.recv(64)
    except OSError:
        return None
    return time.monotonic() - started if answer.startswith(b"HTTP/1.1 200") else None


def run(code: Path, slow: int, count: int, timeout: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="liftoff-slow-") as tmp:
        workdir = Path(tmp)
        with nats_server(workdir / "nats") as nats:
            url = f"{nats_url(nats)}/EVENTS?publish_timeout=5"
            asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1)))
            asyncio.run(ensure_dead_letter_stream(f"{nats_url(nats)}/DEADLETTER", 1))
            with collector_process(code, workdir, url) as collector:
                assert legitimate_request(collector.port, -1, 10) is not None, "not serving"
                attacker = Attacker(collector.port, slow)
                attacker.start()
                time.sleep(3)  # every slow connection open and counted
                latencies: list[float | None] = []
                for index in range(count):
                    latencies.append(legitimate_request(collector.port, index, timeout))
                    time.sleep(0.25)
                opened, cut_off = attacker.opened, attacker.cut_off
                attacker.stop()
    answered = [latency for latency in latencies if latency is not None]
    waited = sorted(latency if latency is not None else timeout for latency in latencies)
    return {
        "answered %": 100 * len(answered) / count,
        "p50 ms": 1000 * statistics.median(waited),
        "p99 ms": 1000 * waited[min(len(waited) - 1, int(0.99 * len(waited)))],
        "slow opened": opened,
        "slow cut off": cut_off,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--slow", type=int, default=520)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    figures = run(args.code.resolve(), args.slow, args.requests, args.timeout)
    print(f"code: {args.code.resolve()}  slow connections: {args.slow}  requests: {args.requests}")
    for name, value in figures.items():
        print(f"{name:>14}  {value:10.1f}")


if __name__ == "__main__":
    main()
