"""Peak memory of the collector, NATS and the archiver under two hostile requests.

    .venv/bin/python benchmarks/hostile_memory.py [--code DIR]

Real processes on loopback: nats-server -js (EVENTS + DEADLETTER), moto (S3), the collector
and the archiver (`python -m services collector|archiver` from ``--code``: this tree by
default, or an export of an older commit for "before", e.g.
``git archive d932cdf | tar -x -C /tmp/base``). Each process's peak RSS is reset
(``/proc/<pid>/clear_refs``) before a case and read (``VmHWM``) after it, so memory a process
gives back once a request is over still counts.

1. **Batch context amplification**: one ~500 KB request whose batch-level ``context`` (~430
   KB, nested 975 deep) would be merged into each of its 1,000 tiny events. Then the
   archiver is given until it has caught up (or ``--settle`` seconds).
2. **Trailer flood**: four parallel chunked requests whose trailer section never ends (32 MiB
   each).

Prints, per case: the answer, the bytes the EVENTS stream gained, and each process's RSS
before and its peak during the case, in MB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats

from services.stream.base import StreamSettings
from services.stream.dead_letters import ensure_dead_letter_stream
from services.stream.jetstream import ensure_stream
from tests.servers import (
    AWS_TEST_ENV,
    LOOPBACK,
    ServerProcess,
    free_port,
    http_ok,
    moto_endpoint,
    moto_server,
    nats_server,
    nats_url,
)

WRITE_KEY = "bench-key"
AUTH = b"Basic " + base64.b64encode(f"{WRITE_KEY}:".encode())


def service(code: Path, workdir: Path, command: str, env: dict[str, str]) -> ServerProcess:
    port = free_port()
    health = "LIFTOFF_PORT" if command == "collector" else "LIFTOFF_HEALTH_PORT"
    ready = "/healthz" if command == "collector" else "/readyz"
    return ServerProcess(
        name=f"{command}:{port}",
        argv=[sys.executable, "-m", "services", command],
        port=port,
        log_path=workdir / f"{command}.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}{ready}"),
        env={
            **os.environ,
            "PYTHONPATH": str(code),
            "LIFTOFF_LOG_LEVEL": "WARNING",
            health: str(port),
            **env,
        },
        cwd=code,
    )


def reset_peak(process: ServerProcess) -> int:
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")
    return memory_kib(process, "VmRSS")


def memory_kib(process: ServerProcess, field: str) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def amplification_body() -> bytes:
    deep = b'{"a":' * 975 + b"1" + b"}" * 975
    context = b'{"blob":"' + b"x" * 420_000 + b'","deep":' + deep + b"}"
    events = [{"type": "track", "event": "e", "userId": f"u{i}"} for i in range(1000)]
    body = b'{"context":' + context + b',"batch":' + json.dumps(events).encode() + b"}"
    assert len(body) < 500 * 1024
    return body


def post(port: int, body: bytes, timeout: float = 120) -> tuple[str, float]:
    request = (
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: " + AUTH + b"\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, text = answer.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode()[9:] if head else "closed"
    return f"{status} {text[:70].decode(errors='replace')}", time.monotonic() - started


def flood_trailers(port: int, outcomes: list[str], size: int = 32 * 1024 * 1024) -> None:
    head = (
        b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: " + AUTH + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'c\r\n{"batch":[]}\r\n0\r\nX-Flood: '
    )
    with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
        sock.sendall(head)
        chunk = b"a" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            answer = sock.recv(64)
        except OSError:
            outcomes.append("closed")
            return
        outcomes.append(answer.split(b"\r\n")[0].decode()[9:] if answer else "closed")


async def stream_bytes(server: str, stream: str) -> int:
    nc = await nats.connect(server)
    try:
        return (await nc.jetstream(timeout=10).stream_info(stream)).state.bytes
    finally:
        await nc.close()


async def archiver_pending(server: str) -> int:
    nc = await nats.connect(server)
    try:
        info = await nc.jetstream(timeout=10).consumer_info("EVENTS", "archiver")
        return (info.num_pending or 0) + (info.num_ack_pending or 0)
    except Exception:
        return -1  # not bound yet
    finally:
        await nc.close()


def measure(processes: dict[str, ServerProcess], case: Any) -> dict[str, Any]:
    before = {name: reset_peak(process) for name, process in processes.items()}
    outcome = case()
    peak = {name: memory_kib(process, "VmHWM") for name, process in processes.items()}
    return {"outcome": outcome, "before": before, "peak": peak}


def run(code: Path, settle: float) -> list[tuple[str, dict[str, Any]]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="liftoff-hostile-") as tmp:
        workdir = Path(tmp)
        with nats_server(workdir / "nats") as broker, moto_server(workdir / "moto") as moto:
            server = nats_url(broker)
            url = f"{server}/EVENTS?publish_timeout=10"
            asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1)))
            asyncio.run(ensure_dead_letter_stream(f"{server}/DEADLETTER", 1))
            endpoint = moto_endpoint(moto)
            import boto3

            os.environ.update({**AWS_TEST_ENV, "AWS_ENDPOINT_URL": endpoint})
            boto3.client("s3").create_bucket(Bucket="archive")
            common = {"LIFTOFF_STREAM_URL": url, **AWS_TEST_ENV, "AWS_ENDPOINT_URL": endpoint}
            collector = service(
                code,
                workdir,
                "collector",
                {**common, "LIFTOFF_WRITE_KEYS": json.dumps({"web": WRITE_KEY})},
            )
            archiver = service(
                code,
                workdir,
                "archiver",
                {
                    **common,
                    "LIFTOFF_ARCHIVE_BUCKET": "archive",
                    "LIFTOFF_DEAD_LETTER_URL": f"{server}/DEADLETTER",
                },
            )
            with collector, archiver:
                processes = {"collector": collector, "nats": broker, "archiver": archiver}

                def amplification() -> str:
                    stored_before = asyncio.run(stream_bytes(server, "EVENTS"))
                    answer, seconds = post(collector.port, amplification_body())
                    stored = asyncio.run(stream_bytes(server, "EVENTS")) - stored_before
                    give_up = time.monotonic() + settle
                    while asyncio.run(archiver_pending(server)) != 0 and time.monotonic() < give_up:
                        time.sleep(0.5)
                    return f"{answer} in {seconds:.1f} s; EVENTS +{stored / 1e6:.1f} MB"

                def trailers() -> str:
                    outcomes: list[str] = []
                    threads = [
                        threading.Thread(target=flood_trailers, args=(collector.port, outcomes))
                        for _ in range(4)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    return ", ".join(sorted(outcomes))

                results.append(("batch context amplification", measure(processes, amplification)))
                results.append(("trailer flood (4 x 32 MiB)", measure(processes, trailers)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--settle", type=float, default=120.0)
    args = parser.parse_args()
    print(f"code: {args.code.resolve()}")
    for name, result in run(args.code.resolve(), args.settle):
        print(f"\n{name}: {result['outcome']}")
        print(f"{'process':<10} {'RSS before MB':>14} {'peak MB':>9}")
        for process, before in result["before"].items():
            print(f"{process:<10} {before / 1024:14.0f} {result['peak'][process] / 1024:9.0f}")


if __name__ == "__main__":
    main()
