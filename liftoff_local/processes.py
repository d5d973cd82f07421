"""Child processes of liftoff local: started from the supervisor's main thread, each in its own
session with its output in a log file, stopped by PID, and ended by the kernel if the
supervisor itself dies (Linux: PR_SET_PDEATHSIG), so no orphan keeps a port."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

LOOPBACK = "127.0.0.1"


class StartFailed(Exception):
    """A process exited or never became ready; the message carries its log tail."""


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel hands to outgoing connections (Linux's setting; else IANA's,
    which macOS uses)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def why_not_bindable(port: int, host: str = LOOPBACK) -> str | None:
    """None when a server can listen on host:port as ours do (SO_REUSEADDR, bind, listen: a
    TIME-WAIT left by the port's own earlier listener does not count); else what holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # --listen :: is IPv6
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
            return None
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                return error.strerror or str(error)
    if _listening(port):
        return "in use by a listening program"
    low, high = ephemeral_ports()
    return (
        "not listened on, but held by a connection the kernel has not released yet (an "
        f"outgoing connection's TIME-WAIT lasts up to 60 s; ports {low}-{high} are the ones "
        "it hands to outgoing connections)"
    )


def _listening(port: int) -> bool:
    """Whether some socket listens on `port` (Linux: the kernel's table; else: connect)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return port_accepts(port)
    for table in tables:
        with contextlib.suppress(OSError):
            for line in table.read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def http_ok(url: str) -> bool:
    # Loopback readiness checks only: the collector's certificate (--tls) is self-signed.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


class RunAs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def run_as(user: str | None) -> RunAs:
    """Popen arguments that run the child as `user` (PostgreSQL refuses to run as root)."""
    if user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str]
    is_ready: Callable[[], bool] = lambda: True
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, deadline: float = 60.0) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env),
                cwd=self.cwd,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
                preexec_fn=_die_with_parent,
                **run_as(self.user),
            )
        give_up = time.monotonic() + deadline
        while not self.is_ready():
            if not self.running:
                raise StartFailed(f"{self.name} exited during start:\n{self.log_tail()}")
            if time.monotonic() > give_up:
                self.stop()
                raise StartFailed(f"{self.name} not ready after {deadline:g} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self, grace: float = 30.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, self.stop_signal)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def run_once(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    user: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> None:
    """Run a setup command to completion (ensure-stream, ensure-database, initdb)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        result = subprocess.run(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            timeout=timeout,
            preexec_fn=_die_with_parent,
            **run_as(user),
        )
    if result.returncode != 0:
        tail = Child(name, argv, log_path, env).log_tail()
        raise StartFailed(f"{name} failed (exit {result.returncode}):\n{tail}")
