"""Real servers for tests and benchmarks: started on free loopback ports, stopped by PID.

Each server is a :class:`ServerProcess` (argv + readiness check + log file). Add a new kind
(PostgreSQL, ...) by writing a small factory like :func:`nats_server` that builds one; the base
class gives start / stop / restart / kill and failure messages that include the log tail.
Nothing here uses fixed ports or services already running on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
STARTUP_DEADLINE_SECONDS = 30.0
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message carries its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class ServerProcess:
    """One server process: ``argv`` run with ``env``; ready when ``is_ready()`` is true."""

    name: str
    argv: Sequence[str]
    port: int
    log_path: Path
    is_ready: Callable[[], bool]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, deadline: float = STARTUP_DEADLINE_SECONDS) -> ServerProcess:
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,  # our own process group: signals reach only us
            )
        self.wait_until_ready(deadline)
        return self

    def wait_until_ready(self, deadline: float = STARTUP_DEADLINE_SECONDS) -> None:
        give_up = time.monotonic() + deadline
        while not self.is_ready():
            if not self.running:
                raise ServerFailed(f"{self.name} exited early:\n{self.log_tail()}")
            if time.monotonic() > give_up:
                self.stop()
                raise ServerFailed(f"{self.name} not ready after {deadline}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM this server's PID, then SIGKILL if it has not exited within ``grace``."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests (no graceful shutdown, no flush)."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- NATS JetStream -----------------------------------------------------------------------------


def nats_server(
    workdir: Path,
    *,
    sync_always: bool = False,
    port: int | None = None,
    binary: str = NATS_SERVER,
) -> ServerProcess:
    """``nats-server -js`` on a free loopback port, storing under ``workdir/jetstream``.

    ``sync_always`` adds a config file with ``jetstream { sync_interval: always }`` (fsync on
    every write). Debian's nats-server 2.9.10 rejects that option (``unknown field``): it needs
    a newer server, passed as ``binary``."""
    port = port or free_port()
    store = workdir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-a", LOOPBACK, "-p", str(port), "-js", "-sd", str(store)]
    if sync_always:
        config = workdir / "nats.conf"
        config.write_text("jetstream {\n  sync_interval: always\n}\n")
        argv = [*argv, "-c", str(config)]
    return ServerProcess(
        name=f"nats-server:{port}",
        argv=argv,
        port=port,
        log_path=workdir / "nats-server.log",
        is_ready=lambda: port_accepts(port),
    )


def nats_url(server: ServerProcess) -> str:
    return f"nats://{LOOPBACK}:{server.port}"


# --- moto (AWS APIs) ----------------------------------------------------------------------------

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def moto_server(workdir: Path, port: int | None = None) -> ServerProcess:
    """moto in server mode, a separate process: Kinesis, Secrets Manager, S3 ... over HTTP."""
    port = port or free_port()
    return ServerProcess(
        name=f"moto:{port}",
        argv=[sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
        port=port,
        log_path=workdir / "moto.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/moto-api/"),
        env={**os.environ, **AWS_TEST_ENV},
    )


def moto_endpoint(server: ServerProcess) -> str:
    return f"http://{LOOPBACK}:{server.port}"


# --- the collector (python -m services collector) -----------------------------------------------


def collector_server(
    workdir: Path,
    stream_url: str,
    write_keys_json: str,
    *,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> ServerProcess:
    port = port or free_port()
    env = {
        **os.environ,
        "LIFTOFF_STREAM_URL": stream_url,
        "LIFTOFF_WRITE_KEYS": write_keys_json,
        "LIFTOFF_HOST": LOOPBACK,
        "LIFTOFF_PORT": str(port),
        "LIFTOFF_WORKERS": str(workers),
        "LIFTOFF_LOG_LEVEL": "INFO",
        **(extra_env or {}),
    }
    return ServerProcess(
        name=f"collector:{port}",
        argv=[sys.executable, "-m", "services", "collector"],
        port=port,
        log_path=workdir / f"collector-{port}.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/healthz"),
        env=env,
        cwd=REPO_ROOT,
    )
