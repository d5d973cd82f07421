"""Real servers for tests and benchmarks: started on free loopback ports, stopped by PID.

Each server is a :class:`ServerProcess` (argv + readiness check + log file). Add a new kind
(PostgreSQL, ...) by writing a small factory like :func:`nats_server` that builds one; the base
class gives start / stop / restart / kill and failure messages that include the log tail.
Nothing here uses fixed ports or services already running on the machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

LOOPBACK = "127.0.0.1"
STARTUP_DEADLINE_SECONDS = 30.0
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
POSTGRES_EXPORTER = (
    shutil.which("prometheus-postgres-exporter") or "/usr/bin/prometheus-postgres-exporter"
)
REPO_ROOT = Path(__file__).resolve().parent.parent
NATS_SERVER_MINIMUM = (2, 12, 3)
"""The release line after the JetStream data-loss fixes Jepsen reported; the chart deploys it."""
NATS_SERVER = os.environ.get("LIFTOFF_NATS_SERVER") or str(REPO_ROOT / ".tools/bin/nats-server")
"""``.ci/install-nats-server`` puts it there; ``LIFTOFF_NATS_SERVER=/path`` picks another."""


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


def _stopped(pid: int) -> bool:
    """Every thread of the process is in the stopped state ('T' in /proc)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "T":
                    return False
    except OSError:
        return True  # gone: nothing left to answer
    return True


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
    user: str | None = None
    """Run as this OS user (needs root; PostgreSQL refuses to run as root)."""
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
                **_as_user(self.user),
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

    def pause(self) -> None:
        """SIGSTOP: the process hangs with its sockets open (a stalled VM or GC pause)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)
            # kill() only queues the signal: wait until every thread is really stopped, or a
            # request sent right after pause() may still be answered.
            give_up = time.monotonic() + 5
            while time.monotonic() < give_up and not _stopped(self.process.pid):
                time.sleep(0.005)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

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


def _as_user(user: str | None) -> dict[str, object]:
    if user is None or os.geteuid() != 0:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


# --- NATS JetStream -----------------------------------------------------------------------------


@functools.cache
def nats_server_version(binary: str = NATS_SERVER) -> tuple[int, ...]:
    """The version ``binary --version`` reports; :class:`ServerFailed` when it is missing or
    older than :data:`NATS_SERVER_MINIMUM` (tests must not silently run a server the platform
    never deploys)."""
    try:
        output = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise ServerFailed(
            f"nats-server not runnable at {binary} ({error}): run `bash .ci/install-nats-server` "
            "or set LIFTOFF_NATS_SERVER=/path/to/nats-server"
        ) from error
    text = output.strip().rsplit(" ", 1)[-1].lstrip("v")
    version = tuple(int(part) for part in text.split("-")[0].split(".") if part.isdigit())
    if version < NATS_SERVER_MINIMUM:
        minimum = ".".join(map(str, NATS_SERVER_MINIMUM))
        raise ServerFailed(f"{binary} is nats-server {text}; tests need >= {minimum}")
    return version


def nats_server(
    workdir: Path,
    *,
    sync_always: bool = False,
    port: int | None = None,
    binary: str = NATS_SERVER,
    user_password: tuple[str, str] | None = None,
) -> ServerProcess:
    """``nats-server -js`` on a free loopback port, storing under ``workdir/jetstream``.

    ``sync_always`` adds a config file with ``jetstream { sync_interval: always }`` (fsync on
    every write before the acknowledgement), the durability the chart deploys.
    ``user_password``: clients must log in with them."""
    nats_server_version(binary)
    port = port or free_port()
    store = workdir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    argv = [binary, "-a", LOOPBACK, "-p", str(port), "-js", "-sd", str(store)]
    if user_password is not None:
        argv += ["--user", user_password[0], "--pass", user_password[1]]
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


def nats_cluster(
    workdir: Path, size: int = 3, *, sync_always: bool = True, binary: str = NATS_SERVER
) -> list[ServerProcess]:
    """``size`` JetStream servers clustered over routes on loopback ports, each with its own
    store, as the chart deploys them (``sync_interval: always`` unless told otherwise).
    Each server's ``name`` starts with its ``server_name`` (``n0``, ``n1`` ...), which is what
    JetStream reports as a stream's leader."""
    nats_server_version(binary)
    client_ports = [free_port() for _ in range(size)]
    route_ports = [free_port() for _ in range(size)]
    routes = ", ".join(f"nats-route://{LOOPBACK}:{port}" for port in route_ports)
    servers = []
    for index, (port, route_port) in enumerate(zip(client_ports, route_ports, strict=True)):
        home = workdir / f"n{index}"
        (home / "jetstream").mkdir(parents=True, exist_ok=True)
        sync = "\n  sync_interval: always" if sync_always else ""
        config = home / "nats.conf"
        config.write_text(
            f"server_name: n{index}\nlisten: {LOOPBACK}:{port}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(home / 'jetstream'))}{sync}\n}}\n"
            f"cluster {{\n  name: liftoff\n  listen: {LOOPBACK}:{route_port}\n"
            f"  routes: [{routes}]\n}}\n"
        )
        servers.append(
            ServerProcess(
                name=f"n{index}:nats-server:{port}",
                argv=[binary, "-c", str(config)],
                port=port,
                log_path=home / "nats-server.log",
                is_ready=functools.partial(port_accepts, port),
            )
        )
    return servers


def nats_cluster_url(servers: Sequence[ServerProcess]) -> str:
    """``nats://h:p1,h:p2,...`` (the stream URL's host list)."""
    return "nats://" + ",".join(f"{LOOPBACK}:{server.port}" for server in servers)


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


# --- PostgreSQL ---------------------------------------------------------------------------------


def _postgres_bin() -> Path:
    """Where ``initdb`` and ``postgres`` are, found as liftoff local finds them:
    ``LIFTOFF_POSTGRES_BIN``, else the newest ``/usr/lib/postgresql/<major>/bin`` (Debian 12
    ships 15, Ubuntu 24.04 16; several can be installed side by side), else ``initdb`` on
    PATH. None installed: a path that says so, and the tests that need it fail there."""
    from liftoff_local.binaries import MissingBinary, find_postgres

    try:
        return find_postgres().bin_dir
    except MissingBinary:
        return Path("/usr/lib/postgresql/(none installed)/bin")


POSTGRES_BIN = _postgres_bin()


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster (``initdb`` + ``postgres``) on a free loopback port.

    Runs as the ``postgres`` OS user when the tests run as root (PostgreSQL refuses root);
    the data directory is a fresh temp directory owned by that user (pytest's tmp dirs are
    root-only), removed by :meth:`cleanup`. Trust authentication on 127.0.0.1 only; the Unix
    socket lives in the data directory, never in /var/run/postgresql."""

    server: ServerProcess
    root: Path

    @property
    def port(self) -> int:
        return self.server.port

    def dsn(self, database: str = "postgres") -> str:
        return f"host={LOOPBACK} port={self.port} user=postgres dbname={database}"

    def env(self, database: str = "postgres") -> dict[str, str]:
        return {
            "PGHOST": LOOPBACK,
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": database,
            "PGSSLMODE": "disable",
        }

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def start(self) -> Postgres:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def cleanup(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def pg_connect(env: Mapping[str, str], autocommit: bool = True) -> psycopg.Connection:
    """A psycopg connection from libpq's variables as :meth:`Postgres.env` gives them."""
    return psycopg.connect(
        host=env["PGHOST"],
        port=env["PGPORT"],
        user=env["PGUSER"],
        dbname=env["PGDATABASE"],
        autocommit=autocommit,
    )


def postgres_server(
    workdir: Path,
    *,
    port: int | None = None,
    durable: bool = False,
    bin_dir: Path = POSTGRES_BIN,
    password: str | None = None,
) -> Postgres:
    """``initdb`` now; :meth:`Postgres.start` starts it. ``durable=False`` turns fsync off
    (tests never crash Postgres itself; benchmarks pass ``durable=True``). With ``password``
    every login needs a password (scram-sha-256; the superuser's is ``password``) instead of
    trust, for tests about credentials."""
    port = port or free_port()
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="liftoff-pg-"))
    data = root / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    authentication = ["-A", "trust"]
    if password is not None:
        password_file = root / "superuser-password"
        password_file.write_text(password)
        if user is not None:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        authentication = ["-A", "scram-sha-256", f"--pwfile={password_file}"]
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            *authentication,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        **_as_user(user),  # type: ignore[arg-type]
    )
    settings = [
        "listen_addresses=127.0.0.1",
        f"unix_socket_directories={data}",
        "max_connections=50",
        "shared_buffers=128MB",
    ]
    if not durable:
        settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port)]
    for setting in settings:
        argv += ["-c", setting]

    def ready() -> bool:
        if not port_accepts(port):
            return False
        import psycopg

        try:
            psycopg.connect(
                f"host={LOOPBACK} port={port} user=postgres dbname=postgres",
                password=password,
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        name=f"postgres:{port}",
        argv=argv,
        port=port,
        log_path=workdir / "postgres.log",
        is_ready=ready,
        user=user,
    )
    return Postgres(server, root)


# --- a TCP proxy that can play an outage --------------------------------------------------------


class TcpProxy:
    """Forwards a loopback port to ``target_port``. :meth:`down` closes the listener and every
    open connection (clients then get connection refused or reset, exactly as from a dead
    server); :meth:`up` listens again on the same port. The server behind it keeps its state,
    which a restarted moto (in-memory) would not. One thread per direction per connection:
    meant for a handful of client connections."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def up(self) -> TcpProxy:
        with self._lock:
            if self._listener is not None:
                return self
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, self.port))
            listener.listen(128)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [*([listener] if listener else []), *sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    close = down

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: down()
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._sockets.discard(sock)


# --- stream consumers (python -m services archiver|loader|broadcaster) --------------------------


def consumer_process(
    workdir: Path,
    command: str,
    env: Mapping[str, str],
    *,
    health_port: int | None = None,
    name: str | None = None,
) -> ServerProcess:
    """A consumer as a real process; ready when its ``/readyz`` answers 200 (bound to the
    durable consumer). ``env`` adds to the test process's environment."""
    health_port = health_port or free_port()
    label = name or command
    return ServerProcess(
        name=f"{label}:{health_port}",
        argv=[sys.executable, "-m", "services", command],
        port=health_port,
        log_path=workdir / f"{label}.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{health_port}/readyz"),
        env={
            **os.environ,
            "LIFTOFF_HEALTH_PORT": str(health_port),
            "LIFTOFF_LOG_LEVEL": "INFO",
            **env,
        },
        cwd=REPO_ROOT,
    )


# --- Prometheus ---------------------------------------------------------------------------------


def prometheus_server(workdir: Path, config: dict, rules: dict) -> ServerProcess:
    """Prometheus (Debian package) with `config` (scrape configs) and `rules` (rule groups)."""
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
    (workdir / "prometheus.yaml").write_text(
        yaml.safe_dump({**config, "rule_files": [str(workdir / "rules.yaml")]})
    )
    port = free_port()
    return ServerProcess(
        name=f"prometheus:{port}",
        argv=[
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yaml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
        port=port,
        log_path=workdir / "prometheus.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/-/ready"),
        env=dict(os.environ),
    )


def postgres_exporter(
    workdir: Path, data_source_uri: str, user: str, password: str
) -> ServerProcess:
    """postgres_exporter (Debian package) reading its credentials from files, as on Kubernetes."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "username").write_text(user)
    (workdir / "password").write_text(password)
    port = free_port()
    return ServerProcess(
        name=f"postgres-exporter:{port}",
        argv=[POSTGRES_EXPORTER, f"--web.listen-address={LOOPBACK}:{port}"],
        port=port,
        log_path=workdir / "postgres-exporter.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/metrics"),
        env={
            "PATH": os.environ.get("PATH", ""),
            "DATA_SOURCE_URI": data_source_uri,
            "DATA_SOURCE_USER_FILE": str(workdir / "username"),
            "DATA_SOURCE_PASS_FILE": str(workdir / "password"),
        },
    )
