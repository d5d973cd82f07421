"""How long `python -m liftoff_local` takes to bring the data path up, and to show a first event.

    .venv/bin/python benchmarks/local_startup.py [--rounds 3] [--stack Pulumi.dev.yaml]

Per round, with the Python requirements and the servers' binaries already installed:

- **fresh**: ``--fresh`` (initdb, stream and database setup, every process started) — from
  launching the command to its "ready" line;
- **restart**: the same data directory again (PostgreSQL and JetStream recover their data);
- **first row**: after "ready", one event sent with curl's shape (POST /v1/track), time until
  its row is visible in the warehouse (the loader's batch age bounds it: 5 s by default).

Prints the median and the spread of each. The machine is shared, so the figures vary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from base64 import b64encode
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_base(span: int = 16) -> int:
    import random

    for _ in range(200):
        base = random.randrange(20000, 32000 - span)  # below the ephemeral port range
        ok = True
        for port in range(base, base + span):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def start(
    stack: Path, data: Path, base: int, fresh: bool, log: Path
) -> tuple[subprocess.Popen, float]:
    arguments = ["--stack", str(stack), "--data-dir", str(data), "--base-port", str(base)]
    began = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "liftoff_local", *arguments, *(["--fresh"] if fresh else [])],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    while "ready in" not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise SystemExit(f"liftoff local exited:\n{log.read_text()}")
        time.sleep(0.02)
    return process, time.monotonic() - began


def first_row(data: Path) -> float:
    info = json.loads((data / "local.json").read_text())
    key = info["writeKeys"][next(iter(info["writeKeys"]))]
    message_id = f"bench-{time.time_ns()}"
    body = json.dumps({"userId": "u", "event": "Bench", "messageId": message_id}).encode()
    request = urllib.request.Request(
        info["collectorUrl"] + "/v1/track",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + b64encode(f"{key}:".encode()).decode(),
        },
    )
    sent = time.monotonic()
    urllib.request.urlopen(request, timeout=10).read()
    with psycopg.connect(info["warehouseUrl"], autocommit=True) as connection:
        while True:
            exists = connection.execute("SELECT to_regclass('events')").fetchone()[0]
            if (
                exists
                and connection.execute(
                    "SELECT 1 FROM events WHERE message_id = %s", (message_id,)
                ).fetchone()
            ):
                return time.monotonic() - sent
            time.sleep(0.02)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stack", type=Path, default=REPO_ROOT / "Pulumi.dev.yaml")
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="liftoff-local-bench-"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres` when this runs as root
    figures: dict[str, list[float]] = {"fresh": [], "restart": [], "first row": []}
    for round_ in range(arguments.rounds):
        data, base = root / "data", free_base()
        process, seconds = start(arguments.stack, data, base, True, root / "fresh.log")
        figures["fresh"].append(seconds)
        figures["first row"].append(first_row(data))
        stop(process)
        process, seconds = start(arguments.stack, data, base, False, root / "restart.log")
        figures["restart"].append(seconds)
        stop(process)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items()))
    print(f"\n{'measure':<12} {'median':>8} {'min':>8} {'max':>8}   ({arguments.rounds} rounds)")
    for name, values in figures.items():
        print(
            f"{name:<12} {statistics.median(values):>7.2f}s {min(values):>7.2f}s "
            f"{max(values):>7.2f}s"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
