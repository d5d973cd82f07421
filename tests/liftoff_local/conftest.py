"""Running `python -m liftoff_local` as a subprocess, the way a user does."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import LOOPBACK, REPO_ROOT

START_DEADLINE = 120.0


def free_base_port(span: int = 16) -> int:
    """A base port with `span` free ports after it (liftoff local uses fixed offsets)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - span)  # below the ephemeral port range
        if all(_free(base + offset) for offset in range(span)):
            return base
    raise RuntimeError("no run of free ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@dataclass
class LocalRun:
    """One `liftoff local` process; `info` is its local.json once ready."""

    process: subprocess.Popen[bytes]
    output: Path
    data_dir: Path
    seconds_to_ready: float = 0.0

    @property
    def info(self) -> dict:
        return json.loads((self.data_dir / "local.json").read_text())

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, deadline: float = START_DEADLINE) -> LocalRun:
        began = time.monotonic()
        while "ready in" not in self.text():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"liftoff local exited {self.process.returncode}:\n{self.text()}"
                )
            if time.monotonic() - began > deadline:
                self.stop()
                raise AssertionError(f"liftoff local not ready after {deadline} s:\n{self.text()}")
            time.sleep(0.1)
        self.seconds_to_ready = time.monotonic() - began
        return self

    def stop(self, grace: float = 90.0) -> int:
        """Ctrl-C (SIGINT) and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(
                    f"liftoff local did not stop on Ctrl-C:\n{self.text()}"
                ) from None
        return self.process.returncode


def start_local(
    arguments: Sequence[str], output: Path, data_dir: Path, env: dict[str, str] | None = None
) -> LocalRun:
    handle = output.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "liftoff_local", "--data-dir", str(data_dir), *arguments],
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    handle.close()
    return LocalRun(process, output, data_dir)


def run_local(
    arguments: Sequence[str], data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A run expected to fail fast (bad setup): its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "liftoff_local", "--data-dir", str(data_dir), *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture
def local_runs() -> Iterator[list[LocalRun]]:
    runs: list[LocalRun] = []
    yield runs
    for run in runs:
        with contextlib.suppress(Exception):
            run.stop()


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory the `postgres` user can traverse (pytest's tmp_path is root-only, and as
    root liftoff local runs PostgreSQL as `postgres`, like a user's own data directory)."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="liftoff-local-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def process_tree(root: int) -> set[int]:
    """`root` and every process below it (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return tree


def listening_sockets(root: int) -> dict[int, str]:
    """Port → address of every TCP socket the process tree of `root` listens on (Linux)."""
    inodes: set[str] = set()
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    found: dict[int, str] = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found[int(port, 16)] = _address(address, width)
    return found


def _address(hex_address: str, width: int) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    return str(ipaddress.ip_address(packed)) if len(packed) == width else hex_address
