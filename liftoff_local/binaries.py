"""Finding the two servers liftoff local needs from the system: nats-server and PostgreSQL.

Neither has a well-kept Python distribution to depend on (see the README, "liftoff local"), so
the system's binaries are used, and a missing one is reported with the command that installs it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NATS_SERVER_ENV = "LIFTOFF_NATS_SERVER"
POSTGRES_BIN_ENV = "LIFTOFF_POSTGRES_BIN"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_NATS_SERVER = Path("/usr/sbin/nats-server")
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")


class MissingBinary(Exception):
    """A server binary is not installed; the message says how to install it."""


def _install_hint(debian: str, brew: str) -> str:
    if platform.system() == "Darwin":
        return f"install it with `brew install {brew}`"
    return f"install it with `sudo apt-get install {debian}` (Debian/Ubuntu)"


def find_nats_server(env: dict[str, str] | None = None) -> str:
    """`$LIFTOFF_NATS_SERVER`, else `.tools/bin/nats-server` (installed by .ci/run), else
    `nats-server` on PATH, else Debian's /usr/sbin/nats-server."""
    env = dict(os.environ) if env is None else env
    explicit = env.get(NATS_SERVER_ENV, "").strip()
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise MissingBinary(f"{NATS_SERVER_ENV}={explicit!r} is not an executable file")
    for candidate in (
        REPO_ROOT / ".tools" / "bin" / "nats-server",
        shutil.which("nats-server"),
        DEBIAN_NATS_SERVER,
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MissingBinary(
        "nats-server (with JetStream, 2.9 or newer) is not installed: "
        + _install_hint("nats-server", "nats-server")
        + f", or point {NATS_SERVER_ENV} at the binary"
    )


def nats_server_version(binary: str) -> tuple[int, ...]:
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", output)
    return tuple(int(part) for part in match.groups() if part) if match else (0, 0)


@dataclass(frozen=True)
class PostgresBinaries:
    bin_dir: Path
    major: int

    @property
    def initdb(self) -> Path:
        return self.bin_dir / "initdb"

    @property
    def postgres(self) -> Path:
        return self.bin_dir / "postgres"


def find_postgres(env: dict[str, str] | None = None) -> PostgresBinaries:
    """`$LIFTOFF_POSTGRES_BIN` (a directory holding initdb and postgres), else Debian's
    /usr/lib/postgresql/<newest>/bin, else initdb on PATH (Homebrew)."""
    env = dict(os.environ) if env is None else env
    explicit = env.get(POSTGRES_BIN_ENV, "").strip()
    candidates: list[Path] = []
    if explicit:
        candidates = [Path(explicit)]
    else:
        debian = sorted(
            DEBIAN_POSTGRES.glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates = list(debian)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        initdb, postgres = directory / "initdb", directory / "postgres"
        if initdb.is_file() and postgres.is_file():
            return PostgresBinaries(directory, _postgres_major(postgres))
    if explicit:
        raise MissingBinary(
            f"{POSTGRES_BIN_ENV}={explicit!r} does not hold the PostgreSQL server binaries "
            "initdb and postgres"
        )
    raise MissingBinary(
        "the PostgreSQL server (initdb, postgres) is not installed: "
        + _install_hint("postgresql", "postgresql@17")
        + f", or point {POSTGRES_BIN_ENV} at the directory holding initdb and postgres"
    )


def _postgres_major(binary: Path) -> int:
    try:
        output = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return 0
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    return int(match.group(1)) if match else 0
