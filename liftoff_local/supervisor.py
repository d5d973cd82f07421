"""Brings the local data path up in order, shows its state, and stops it on Ctrl-C.

Order: nats-server → ensure-stream → PostgreSQL → ensure-database → object store → archiver,
loader, broadcasters → collector (last, so nothing is accepted before every consumer is ready;
stopping runs the other way round, so the consumers finish what the collector accepted).
Every platform process is ``python -m services <command>`` with the environment the
Kubernetes target gives it (components/*/kubernetes.py); credentials reach them as files.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from liftoff_local import credentials, debugger, environments, tracking, tracking_api
from liftoff_local.binaries import PostgresBinaries, nats_server_version
from liftoff_local.credentials import generate_key
from liftoff_local.environments import ADMIN_USER, S3_REGION, LocalPlace, LocalProcess
from liftoff_local.objectstore import read_key_pair
from liftoff_local.processes import (
    LOOPBACK,
    Child,
    StartFailed,
    ephemeral_ports,
    http_ok,
    port_accepts,
    run_once,
    why_not_bindable,
)
from liftoff_local.stack import LocalPlan
from services.stream.address import DEAD_LETTER_STREAM, EVENTS_STREAM
from services.stream.jetstream import credentials_in

REPO_ROOT = Path(__file__).resolve().parent.parent
STREAM = EVENTS_STREAM
STREAM_SUBJECTS = "events.>"
DEAD_LETTER_SUBJECTS = "deadletter.>"
QUARANTINE_SUBJECT = "deadletter.collector"
ANALYTICS_JS_DIR = REPO_ROOT / "services" / "static" / "analytics-next"
WRITE_KEYS_FILE = "write-keys.json"


class SetupError(Exception):
    """A problem with the local setup the user can fix; the message says how."""


@dataclass(frozen=True)
class Ports:
    """Fixed offsets from one base port, so a restart keeps every address."""

    base: int

    @property
    def collector(self) -> int:
        return self.base

    @property
    def tracking(self) -> int:
        return self.base + 1

    @property
    def s3(self) -> int:
        return self.base + 2

    @property
    def nats(self) -> int:
        return self.base + 3

    @property
    def postgres(self) -> int:
        return self.base + 4

    def health(self, index: int) -> int:
        return self.base + 10 + index

    def all(self, consumers: int) -> dict[int, str]:
        named = {
            self.collector: "collector",
            self.tracking: "tracking API",
            self.s3: "object store",
            self.nats: "nats-server",
            self.postgres: "PostgreSQL",
        }
        named.update({self.health(i): f"consumer health #{i + 1}" for i in range(consumers)})
        return named


@dataclass(frozen=True)
class Options:
    data_dir: Path
    ports: Ports
    nats_server: str
    postgres: PostgresBinaries | None
    listen: str = LOOPBACK
    tls: bool = False
    """Serve the collector over HTTPS with a self-signed certificate (generated once)."""
    destination_urls: Mapping[str, str] = field(default_factory=dict)
    status_interval: float = 2.0


# --- data directory ----------------------------------------------------------------------------


class DataDir:
    """Everything local lives here (git-ignored); a lock file keeps a second instance out."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock: TextIO | None = None

    def lock(self) -> None:
        # Events, passwords and keys are nobody else's business; as root, PostgreSQL runs as
        # `postgres`, which must still be able to pass through to its own directory (so must
        # every directory created here on the way, e.g. `.liftoff/`).
        mode = 0o711 if os.geteuid() == 0 else 0o700
        for directory in [*reversed(self.root.absolute().parents), self.root.absolute()]:
            if not directory.exists():
                directory.mkdir()
                directory.chmod(mode)
        self.root.chmod(mode)
        handle = (self.root / "liftoff-local.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise SetupError(
                f"another liftoff local (pid {holder}) is already running with data in "
                f"{self.root}: stop it (Ctrl-C), or pass --data-dir (and --base-port) for a "
                "second one"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def wipe(self) -> None:
        """Everything but the lock and secrets/ (write keys, passwords, key pairs, the TLS
        certificate, destination credentials): an app configured with the write keys keeps
        working after --fresh; --new-keys is the way to new write keys."""
        for path in self.root.iterdir():
            if path.name in ("liftoff-local.lock", "secrets"):
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()

    def forget_write_keys(self) -> None:
        self.path("secrets", WRITE_KEYS_FILE).unlink(missing_ok=True)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def secret_file(self, name: str, make: Any = None) -> Path:
        """A file under secrets/ (mode 0600), created once by `make()` and kept."""
        directory = self.path("secrets")
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / name
        if not path.exists() and make is not None:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(make())
        return path


def write_keys(data: DataDir, sources: list[str]) -> dict[str, str]:
    """Source → write key; generated once per source and kept (new sources get a new key)."""
    path = data.secret_file(WRITE_KEYS_FILE, lambda: "{}")
    keys = json.loads(path.read_text())
    changed = False
    for source in sources:
        if source not in keys:
            keys[source] = generate_key()
            changed = True
    if changed:
        path.write_text(json.dumps(keys, sort_keys=True))
    return {source: keys[source] for source in sources}


def destination_secrets(data: DataDir, redirected: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Destination credentials for this run (destination → {field: value}).

    `secrets/destinations.json` holds what the user put there: real credentials, used as
    they are (that destination then sends to its real API unless redirected). A destination
    redirected with --destination-url and without one gets a generated credential, kept in
    `secrets/destinations-generated.json` (a local receiver verifies webhook signatures with
    it) and used only while it is redirected: nothing leaves the machine on a made-up key.
    """
    given = _json_file(data.secret_file("destinations.json", lambda: "{}\n"))
    path = data.secret_file("destinations-generated.json", lambda: "{}")
    generated = _json_file(path)
    changed = False
    credentials: dict[str, dict[str, str]] = {}
    for name, secret_field in redirected.items():
        if given.get(name, {}).get(secret_field):
            continue
        if not generated.get(name, {}).get(secret_field):
            generated.setdefault(name, {})[secret_field] = generate_key()
            changed = True
        credentials[name] = {secret_field: generated[name][secret_field]}
    if changed:
        path.write_text(json.dumps(generated, indent=2, sort_keys=True))
    return {**credentials, **given}


def _json_file(path: Path) -> dict[str, dict[str, str]]:
    try:
        document = json.loads(path.read_text() or "{}")
    except ValueError:
        document = None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise SetupError(f"{path} must be a JSON object: destination name → {{field: value}}")
    return document


# --- the supervisor ----------------------------------------------------------------------------


class Supervisor:
    def __init__(
        self, plan: LocalPlan, options: Options, data: DataDir, out: TextIO = sys.stdout
    ) -> None:
        self.plan = plan
        self.options = options
        self.out = out
        self.data = data
        """Locked (and wiped with --fresh) by the caller before anything is written."""
        self.children: list[Child] = []
        self.consumers: list[str] = []
        self.keys: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self._notes: list[str] = []
        self._place: LocalPlace | None = None

    # environment shared by every platform process: the user's, minus anything that would
    # change what a service reads (a stray PGHOST or AWS profile in the shell).
    def _base_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LIFTOFF_", "PG", "AWS_", "NATS_"))
        }
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _log(self, name: str) -> Path:
        return self.data.path("logs", f"{name}.log")

    def _services(self, command: str) -> list[str]:
        return [sys.executable, "-m", "services", command]

    # --- start ------------------------------------------------------------------------------

    def start(self) -> None:
        self._check_ports()
        self.keys = write_keys(self.data, self.plan.sources)
        self._place = self._make_place()
        self._start_nats()
        if self.plan.warehouse.enabled:
            self._start_postgres()
        self._start_object_store()
        self._start_consumers()
        self._start_collector()
        self._write_info()

    def _check_ports(self) -> None:
        ports = self.options.ports.all(len(self._consumer_names()))
        span = max(ports) - self.options.ports.base
        low, high = ephemeral_ports()
        problems = []
        for port, role in ports.items():
            host = self.options.listen if role == "collector" else LOOPBACK
            problem = why_not_bindable(port, host)
            if problem:
                problems.append(f"{port} ({role}: {problem})")
        below = f"keep N+{span} below {low}, where this machine's ephemeral ports begin"
        if problems:
            raise SetupError(
                f"port(s) not available: {'; '.join(problems)}. Free them, or pass "
                f"--base-port N to use ports N..N+{span} instead ({below})"
            )
        if max(ports) >= low and self.options.ports.base <= high:
            self._note(
                f"ports {self.options.ports.base}-{max(ports)} overlap this machine's ephemeral "
                f"range ({low}-{high}): outgoing connections can take them while liftoff local "
                f"is stopped, and a restart then fails; pass --base-port N ({below})"
            )

    def _consumer_names(self) -> list[str]:
        names = ["archiver"]
        if self.plan.warehouse.enabled:
            names.append("loader")
        names += [d.consumer_name for d in self.plan.destinations if d.secret is not None]
        return names

    def _make_place(self) -> LocalPlace:
        """Where everything is on this machine: ports, and the files under secrets/ (made
        once and kept; a destination's credential is written for this run)."""
        ports = self.options.ports
        destination_files = {}
        for local in self.plan.destinations:
            if local.secret is None:
                continue
            path = self.data.secret_file(f"destination-{local.destination.name}.json")
            path.write_text(json.dumps({local.secret_field: local.secret}))
            path.chmod(0o600)
            destination_files[local.destination.name] = str(path)
        tls = tuple(map(str, self._certificate())) if self.options.tls else None
        return LocalPlace(
            nats_port=ports.nats,
            postgres_port=ports.postgres,
            s3_port=ports.s3,
            collector_port=ports.collector,
            first_health_port=ports.health(0),
            stream_credentials_file=str(self.stream_credentials_file),
            s3_credentials_file=str(credentials.s3_credentials(self.data.secret_file)),
            admin_password_file=str(self.data.secret_file("postgres-admin-password", generate_key)),
            warehouse_password_file=str(self.data.secret_file("warehouse-password", generate_key)),
            write_keys_file=str(self.data.path("secrets", WRITE_KEYS_FILE)),
            destination_secrets_files=destination_files,
            destination_urls=dict(self.options.destination_urls),
            listen=self.options.listen,
            tls=(tls[0], tls[1]) if tls else None,
            suppression_key_file=str(
                self.data.secret_file("suppression-key", lambda: generate_key(48))
            ),
        )

    @property
    def place(self) -> LocalPlace:
        assert self._place is not None, "start() makes the place first"
        return self._place

    def _env(self, process: LocalProcess) -> dict[str, str]:
        return {**self._base_env(), **process.environment}

    def _launch(self, child: Child, deadline: float = 60.0) -> Child:
        self.children.append(child)
        child.start(deadline)
        return child

    @property
    def stream_url(self) -> str:
        return self.place.stream_url

    @property
    def stream_credentials_file(self) -> Path:
        return credentials.nats_credentials(self.data.secret_file)

    def _start_nats(self) -> None:
        port = self.options.ports.nats
        argv = [
            self.options.nats_server,
            "-a",
            LOOPBACK,
            "-p",
            str(port),
            "-js",
            "-sd",
            str(self.data.path("nats")),
            "-n",
            "liftoff-local",
        ]
        argv += ["-c", str(credentials.nats_config(self.data.secret_file, self.sync_always()))]
        self._launch(
            Child(
                "nats-server",
                argv,
                self._log("nats-server"),
                self._base_env(),
                is_ready=lambda: port_accepts(port),
            )
        )
        setup = environments.ensure_stream(self.plan, self.place)
        run_once(
            setup.name,
            self._services(setup.command),
            self._env(setup),
            self._log(setup.name),
            cwd=REPO_ROOT,
        )

    def note_postgres_version(self) -> None:
        binaries, wanted = self.options.postgres, self.plan.config.postgres.version
        if binaries is not None and str(binaries.major) != wanted:
            self._note(
                f"postgres: the stack deploys PostgreSQL {wanted}; locally the system's "
                f"PostgreSQL {binaries.major} runs ({binaries.bin_dir}; LIFTOFF_POSTGRES_BIN "
                "picks another)"
            )

    def sync_always(self) -> bool:
        """Whether nats-server fsyncs before every acknowledgement (`sync_interval: always`,
        which nats-server < 2.10 does not have): what the stack's durability asks for, and
        for an AWS stack what Kinesis gives (an acknowledged record is durable)."""
        version = nats_server_version(self.options.nats_server)
        shown = ".".join(map(str, version))
        aws = self.plan.config.target == "aws"
        if aws:
            self._note("stream: the stack's Kinesis stream runs locally as JetStream (EVENTS)")
        if not aws and self.plan.stream.durability != "always":
            return False
        if version >= (2, 10):
            return True
        asked = "Kinesis's durability" if aws else "liftoff:stream.durability 'always'"
        self._note(
            f"stream: this nats-server ({shown}) cannot fsync before each acknowledgement "
            f"({asked}; sync_interval: always needs nats-server 2.10 or newer): it writes to "
            "disk periodically, so an acknowledged event can be lost if the machine crashes "
            "(not if a process does)"
        )
        return False

    def _postgres_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise SetupError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user to run it "
                "as: run liftoff local as a normal user, or create the user"
            ) from None
        return "postgres"

    def _start_postgres(self) -> None:
        binaries = self.options.postgres
        assert binaries is not None
        self.note_postgres_version()
        user = self._postgres_user()
        root = self.data.path("postgres")
        pgdata = root / "data"
        admin_password = Path(self.place.admin_password_file)
        if not (pgdata / "PG_VERSION").exists():
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(pgdata, ignore_errors=True)
            password_copy = root / "initdb-password"
            shutil.copyfile(admin_password, password_copy)
            if user is not None:
                entry = pwd.getpwnam(user)
                for path in (root, password_copy):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            try:
                run_once(
                    "initdb",
                    [
                        str(binaries.initdb),
                        "-D",
                        str(pgdata),
                        "-U",
                        ADMIN_USER,
                        "-A",
                        "scram-sha-256",
                        f"--pwfile={password_copy}",
                        "-E",
                        "UTF8",
                        "--locale=C",
                    ],
                    self._base_env(),
                    self._log("initdb"),
                    user=user,
                )
            except StartFailed as error:
                hint = ""
                if user is not None:
                    hint = (
                        f"\n  (initdb runs as the '{user}' user: every directory above {root} "
                        "must be readable by it; choose another place with --data-dir)"
                    )
                raise SetupError(f"{error}{hint}") from None
            finally:
                password_copy.unlink(missing_ok=True)
        port = self.options.ports.postgres
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",  # TCP on loopback only
            "max_connections=50",
        ]
        argv = [str(binaries.postgres), "-D", str(pgdata), "-p", str(port)]
        for setting in settings:
            argv += ["-c", setting]
        self._launch(
            Child(
                "postgres",
                argv,
                self._log("postgres"),
                self._base_env(),
                is_ready=lambda: _postgres_ready(port, admin_password.read_text()),
                stop_signal=signal.SIGINT,
                user=user,
            )
        )
        setup = environments.ensure_database(self.plan, self.place)
        run_once(
            setup.name,
            self._services(setup.command),
            self._env(setup),
            self._log(setup.name),
            cwd=REPO_ROOT,
        )

    def _start_object_store(self) -> None:
        port = self.options.ports.s3
        key_pair = Path(self.place.s3_credentials_file)
        argv = [
            sys.executable,
            "-m",
            "liftoff_local.objectstore",
            "--port",
            str(port),
            "--dir",
            str(self.data.path("s3")),
            "--credentials",
            str(key_pair),
        ]
        self._launch(
            Child(
                "object-store",
                argv,
                self._log("object-store"),
                self._base_env(),
                is_ready=lambda: port_accepts(port),
                cwd=REPO_ROOT,
            )
        )
        import boto3

        key_id, secret = read_key_pair(key_pair)
        client = boto3.Session(region_name=S3_REGION).client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=self.plan.archive_bucket)

    @property
    def s3_endpoint(self) -> str:
        return self.place.s3_endpoint

    def _start_consumers(self) -> None:
        for consumer in environments.consumers(self.plan, self.place):
            health = consumer.health_port
            self._launch(
                Child(
                    consumer.name,
                    self._services(consumer.command),
                    self._log(consumer.name),
                    self._env(consumer),
                    is_ready=functools.partial(http_ok, f"http://{LOOPBACK}:{health}/readyz"),
                    cwd=REPO_ROOT,
                )
            )
            self.consumers.append(consumer.name)

    def _start_collector(self) -> None:
        collector = environments.collector_process(self.plan, self.place)
        self._ensure_analytics_js()
        self._launch(
            Child(
                collector.name,
                self._services(collector.command),
                self._log(collector.name),
                self._env(collector),
                is_ready=lambda: http_ok(f"{self.collector_url}/readyz"),
                cwd=REPO_ROOT,
            )
        )

    def _certificate(self) -> tuple[Path, Path]:
        """A self-signed certificate for 127.0.0.1 and localhost, made once by openssl."""
        cert, key = self.data.path("secrets", "tls.crt"), self.data.path("secrets", "tls.key")
        if cert.is_file() and key.is_file():
            return cert, key
        self.data.secret_file("tls.key")  # the secrets directory, private
        try:
            run_once(
                "openssl",
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "825",
                    "-subj",
                    "/CN=liftoff local",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout",
                    str(key),
                    "-out",
                    str(cert),
                ],
                self._base_env(),
                self._log("openssl"),
            )
        except FileNotFoundError:
            raise SetupError("--tls needs the openssl command (apt-get install openssl)") from None
        return cert, key

    def _ensure_analytics_js(self) -> None:
        """The collector serves analytics.js from services/static/analytics-next (its default
        in a checkout, git-ignored), built once by the image's own build step; without the npm
        registry the library routes answer 404 and a note says why."""
        if (ANALYTICS_JS_DIR / "standalone.js").is_file():
            return
        from services.collector import analytics_js_build as build

        cache = REPO_ROOT / "build" / "npm"
        if not (cache / f"analytics-next-{build.VERSION}.tgz").is_file():
            print(
                f"analytics.js: downloading {build.PACKAGE} {build.VERSION} from "
                f"{build.tarball_url()} (about 1 MB, once: the tarball is kept in build/npm/, "
                f"the library in {ANALYTICS_JS_DIR.relative_to(REPO_ROOT)}/)",
                file=self.out,
                flush=True,
            )
        try:
            run_once(
                "analytics.js",
                [
                    sys.executable,
                    str(REPO_ROOT / "services" / "collector" / "analytics_js_build.py"),
                    str(ANALYTICS_JS_DIR),
                    "--cache",
                    str(cache),
                ],
                self._base_env(),
                self._log("analytics-js-build"),
                timeout=30,  # offline (no npm registry) must not hold the start up for long
            )
        except (StartFailed, subprocess.TimeoutExpired) as error:
            first = str(error).splitlines()[0]
            self._note(f"analytics.js is not served (building it from npm failed: {first})")

    # --- what the user sees ---------------------------------------------------------------

    @property
    def collector_url(self) -> str:
        host = LOOPBACK if self.options.listen in ("0.0.0.0", "::") else self.options.listen
        scheme = "https" if self.options.tls else "http"
        return f"{scheme}://{host}:{self.options.ports.collector}"

    @property
    def warehouse_url(self) -> str | None:
        if not self.plan.warehouse.enabled:
            return None
        password = self.data.path("secrets", "warehouse-password").read_text()
        database = self.plan.warehouse.database
        return (
            f"postgresql://{database}:{password}@{LOOPBACK}:{self.options.ports.postgres}/"
            f"{database}"
        )

    def _write_info(self) -> None:
        self.info = {
            "pid": os.getpid(),
            "stack": self.plan.stack,
            "stackFile": str(self.plan.stack_file),
            "collectorUrl": self.collector_url,
            "writeKeys": self.keys,
            "warehouseUrl": self.warehouse_url,
            "archive": {
                "bucket": self.plan.archive_bucket,
                "endpoint": self.s3_endpoint,
                "directory": str(self.data.path("s3", self.plan.archive_bucket)),
                "credentialsFile": self.place.s3_credentials_file,
            },
            "trackingUrl": f"http://{LOOPBACK}:{self.options.ports.tracking}",
            "debuggerUrl": f"http://{LOOPBACK}:{self.options.ports.tracking}{debugger.PATH}",
            "streamUrl": self.stream_url,
            "streamCredentialsFile": str(self.stream_credentials_file),
            "consumers": self.consumers,
            "logs": str(self.data.path("logs")),
        }
        path = self.data.path("local.json")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self.info, handle, indent=2)
        # `set -a; . <data>/regulation.env; python -m services regulation ...` (README,
        # "Privacy: suppression and deletion"): file paths and addresses, no secret.
        regulation = environments.regulation_environment(self.plan, self.place)
        if regulation is not None:
            lines = [f"{name}={shlex.quote(value)}\n" for name, value in regulation.items()]
            self.data.path("regulation.env").write_text("".join(lines))

    def banner(self, seconds: float) -> str:
        info = self.info
        keys = "  ".join(f"{source}={key}" for source, key in info["writeKeys"].items())
        lines = [
            f"liftoff local: stack {self.plan.stack} ({self.plan.stack_file}), "
            f"data in {self.data.root}",
            f"  collector     {info['collectorUrl']}   (Segment HTTP API: /v1/track, /v1/batch, …)",
            f"  write keys    {keys}",
        ]
        if info["warehouseUrl"]:
            # The password stays in its file (and local.json, for scripts): never on a screen.
            shown = _without_password(info["warehouseUrl"])
            lines.append(f"  warehouse     {shown}   (table events; full URL in local.json)")
        archive = info["archive"]
        lines += [
            f"  archive       s3://{archive['bucket']} at {archive['endpoint']}  "
            f"(files: {archive['directory']}; key pair: {archive['credentialsFile']})",
            f"  tracking API  {info['trackingUrl']}/events   /quarantine   POST /reset",
            f"  debugger      {info['debuggerUrl']}   (events live, in a browser)",
            f"  stream        {info['streamUrl']}   (login: {info['streamCredentialsFile']})",
            f"  consumers     {', '.join(self.consumers)}",
            f"  logs          {info['logs']}/",
            *(f"  note: {note}" for note in self.notes),
            f"ready in {seconds:.1f} s; Ctrl-C stops everything",
        ]
        return "\n".join(lines)

    def _note(self, text: str) -> None:
        self._notes.append(text)

    @property
    def notes(self) -> tuple[str, ...]:
        return self.plan.notes + tuple(self._notes)

    # --- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        # Reverse start order: the collector first (nothing new accepted), then the consumers
        # finish their in-flight batches, then the stores.
        for child in reversed(self.children):
            child.stop()
        self.children = []

    def exited(self) -> Child | None:
        return next((c for c in self.children if not c.running), None)


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    user_password, at, place = rest.rpartition("@")
    return f"{scheme}://{user_password.split(':', 1)[0]}:…{at}{place}" if at else url


def _postgres_ready(port: int, password: str) -> bool:
    if not port_accepts(port):
        return False
    import psycopg

    try:
        psycopg.connect(
            host=LOOPBACK,
            port=port,
            user=ADMIN_USER,
            password=password,
            dbname="postgres",
            sslmode="disable",
            connect_timeout=2,
        ).close()
    except psycopg.OperationalError:
        return False
    return True


# --- running: status line and tracking API ----------------------------------------------------


class Monitor:
    """Counts for the status line, read from the stream, the consumers and the warehouse."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._warehouse: Any = None

    async def snapshot(self, js: Any) -> dict[str, Any]:
        events = await js.stream_info(STREAM)
        lag = {}
        for name in self.supervisor.consumers:
            try:
                info = await js.consumer_info(STREAM, name)
                lag[name] = info.num_pending + info.num_ack_pending
            except Exception:
                lag[name] = None
        dead = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=DEAD_LETTER_SUBJECTS)
        subjects = dead.state.subjects or {}
        quarantined = subjects.get(QUARANTINE_SUBJECT, 0)
        return {
            "accepted": events.state.last_seq,
            "lag": lag,
            "warehouseRows": await asyncio.to_thread(self._warehouse_rows),
            "quarantined": quarantined,
            "deadLettered": sum(subjects.values()) - quarantined,
        }

    def _warehouse_rows(self) -> int | None:
        url = self.supervisor.warehouse_url
        if url is None:
            return None
        import psycopg

        try:
            if self._warehouse is None or self._warehouse.closed:
                self._warehouse = psycopg.connect(url, autocommit=True, connect_timeout=2)
            # The loader creates the table when it first connects.
            if self._warehouse.execute("SELECT to_regclass('events')").fetchone()[0] is None:
                return 0
            return int(self._warehouse.execute("SELECT count(*) FROM events").fetchone()[0])
        except psycopg.Error:
            self._warehouse = None
            return None

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.close()


def status_line(snapshot: Mapping[str, Any]) -> str:
    lag = " ".join(
        f"{name}={'?' if value is None else value}" for name, value in snapshot["lag"].items()
    )
    rows = snapshot["warehouseRows"]
    return (
        f"accepted {snapshot['accepted']} | lag {lag} | warehouse rows "
        f"{'-' if rows is None else rows} | quarantined {snapshot['quarantined']} | "
        f"dead-lettered {snapshot['deadLettered']}"
    )


async def start_tracking(supervisor: Supervisor) -> tuple[tracking_api.TrackingApi, Any]:
    """The tracking API, fed from both streams over one NATS connection (returned with it)."""
    import nats

    loop = asyncio.get_running_loop()
    marks_store = tracking.ResetMarks(supervisor.data.path("tracking-reset.json"))
    marks = marks_store.load()
    events, quarantine = tracking.TrackingView(), tracking.TrackingView()
    events.mark, quarantine.mark = marks.get(STREAM, 0), marks.get(DEAD_LETTER_STREAM, 0)

    def on_reset() -> None:
        marks_store.save({STREAM: events.reset(), DEAD_LETTER_STREAM: quarantine.reset()})

    api = tracking_api.TrackingApi(
        events, quarantine, on_reset, LOOPBACK, supervisor.options.ports.tracking
    )
    context = {
        "stack": supervisor.plan.stack,
        "sources": supervisor.plan.sources,
        "collectorUrl": supervisor.collector_url,
    }
    debugger.Debugger(api, context)
    nc = await nats.connect(
        supervisor.stream_url.rsplit("/", 1)[0],
        **credentials_in(supervisor.place.stream_credentials_file),
        max_reconnect_attempts=-1,
    )
    js = nc.jetstream()
    await tracking.follow(js, STREAM, STREAM_SUBJECTS, events)
    await tracking.follow(js, DEAD_LETTER_STREAM, DEAD_LETTER_SUBJECTS, quarantine)
    views = {STREAM: events, DEAD_LETTER_STREAM: quarantine}

    def catch_up() -> None:  # called from the API's threads
        future = asyncio.run_coroutine_threadsafe(tracking.caught_up(nc, views), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=5)

    api.catch_up = catch_up
    # Served once it follows both streams (requests meanwhile wait in the listen queue): a
    # page reconnecting after a restart resumes against views that know the streams.
    api.start()
    return api, nc


async def run_until_stopped(supervisor: Supervisor, began: float) -> int:
    """Tracking API + status line until Ctrl-C/SIGTERM or until a process dies. "ready" is
    printed once the tracking API answers with what the streams hold."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    api, nc = await start_tracking(supervisor)
    js = nc.jetstream()
    print(supervisor.banner(time.monotonic() - began), file=supervisor.out, flush=True)
    monitor = Monitor(supervisor)
    interactive = supervisor.out.isatty()
    code = 0
    last_line = ""
    try:
        while not stop.is_set():
            dead = supervisor.exited()
            if dead is not None:
                status = dead.process.returncode if dead.process else None
                how = f"killed by signal {-status}" if status and status < 0 else f"exit {status}"
                print(
                    f"\n{dead.name} exited unexpectedly ({how}); stopping. Its log "
                    f"({dead.log_path}):\n{dead.log_tail()}",
                    file=sys.stderr,
                )
                code = 1
                break
            try:
                snapshot = await monitor.snapshot(js)
                api.status = snapshot  # the debugger page shows it
                line = status_line(snapshot)
            except Exception as error:  # the status line never takes the platform down
                line = f"status unavailable: {error!r}"
            if interactive:
                print(f"\r\033[K{line}", end="", file=supervisor.out, flush=True)
            elif line != last_line:  # a log file gets a line per change, not per tick
                print(line, file=supervisor.out, flush=True)
            last_line = line
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), supervisor.options.status_interval)
    finally:
        if interactive:
            print(file=supervisor.out)
        print("stopping…", file=supervisor.out, flush=True)
        api.stop()
        monitor.close()
        with contextlib.suppress(Exception):
            await nc.close()
    return code
