"""How long `python -m liftoff_local` takes to bring the data path up, and to show a first event.

    .venv/bin/python benchmarks/local_startup.py [--rounds 3] [--stack Pulumi.dev.yaml]
        [--fresh-clones 2]

Per round, with the Python requirements and the servers' binaries already installed:

- **fresh**: ``--fresh`` (initdb, stream and database setup, every process started) — from
  launching the command to its "ready" line;
- **restart**: the same data directory again (PostgreSQL and JetStream recover their data);
- **first row**: after "ready", one event sent with curl's shape (POST /v1/track), time until
  its row is visible in the warehouse (the loader's batch age bounds it: 5 s by default).

With ``--fresh-clones N``, also N times the README's first run: ``git clone`` of HEAD into a
new directory, then ``python3 -m liftoff_local`` there with the system's python3 (no
``.venv``: it creates one from liftoff_local/requirements.txt; pip's cache is whatever the
machine has) until "ready", and the size of that ``.venv``.

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


def fresh_clone(root: Path, base: int) -> tuple[float, str]:
    """(seconds from `python3 -m liftoff_local` to "ready" in a new clone, size of its .venv)."""
    import os

    clone = root / f"clone-{base}"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO_ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "--detach", head], check=True)
    venv_bins = {str(Path(sys.executable).parent), str(REPO_ROOT / ".venv" / "bin")}
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p not in venv_bins]
    if not shutil.which("nats-server", path=os.pathsep.join(path)):
        path.insert(0, str(REPO_ROOT / ".tools" / "bin"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(path)
    log = root / f"clone-{base}.log"
    began = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["python3", "-m", "liftoff_local", "--base-port", str(base)],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while "ready in" not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise SystemExit(f"liftoff local exited:\n{log.read_text()}")
        time.sleep(0.1)
    seconds = time.monotonic() - began
    stop(process)
    size = subprocess.run(
        ["du", "-sh", str(clone / ".venv")], capture_output=True, text=True
    ).stdout.split()[0]
    return seconds, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stack", type=Path, default=REPO_ROOT / "Pulumi.dev.yaml")
    parser.add_argument("--fresh-clones", type=int, default=0)
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="liftoff-local-bench-"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres` when this runs as root
    figures: dict[str, list[float]] = {"fresh": [], "restart": [], "first row": []}
    if arguments.fresh_clones:
        figures["fresh clone"] = []
    for clone in range(arguments.fresh_clones):
        seconds, size = fresh_clone(root, free_base())
        figures["fresh clone"].append(seconds)
        print(f"fresh clone {clone + 1}: ready after {seconds:.1f} s; its .venv: {size}")
    for round_ in range(arguments.rounds):
        data, base = root / "data", free_base()
        process, seconds = start(arguments.stack, data, base, True, root / "fresh.log")
        figures["fresh"].append(seconds)
        figures["first row"].append(first_row(data))
        stop(process)
        process, seconds = start(arguments.stack, data, base, False, root / "restart.log")
        figures["restart"].append(seconds)
        stop(process)
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in figures.items() if k != "fresh clone")
        )
    print(f"\n{'measure':<12} {'median':>8} {'min':>8} {'max':>8}   ({arguments.rounds} rounds)")
    for name, values in figures.items():
        if not values:
            continue
        print(
            f"{name:<12} {statistics.median(values):>7.2f}s {min(values):>7.2f}s "
            f"{max(values):>7.2f}s"
        )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
