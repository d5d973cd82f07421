"""The README's Quick start, run literally on a fresh clone of this commit (DESIGN.md §4.9).

A new directory (`git clone` of HEAD), no `.venv`, the system's `python3`; the commands are
read from README.md's Quick start code blocks, with only the port changed (8080 may be taken on
a shared machine). The first event's block runs once as pasted (it must not fail: the `events`
table exists before the first event), then its SQL is re-run, as a user would, until the row
is there. In the venv the first run created from `liftoff_local/requirements.txt` alone, every
module local mode loads is imported and `--help` runs, so a new import of something outside
that file (Pulumi, say) fails here instead of in a new user's first five minutes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.liftoff_local.conftest import free_base_port
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.servers

README_PORT = 8080
READY_DEADLINE = 300.0  # creating the venv: ~40 s on a warm pip cache, minutes on a cold one
ROW_DEADLINE = 30.0
"""How long the SQL is re-run for the row (the README says when it appears)."""
ROW = re.compile(r"Signed Up\s*\|\s*pro\s*\|\s*web\s*\|")


@dataclass(frozen=True)
class QuickStart:
    start: str
    """The command that starts local mode, as the README writes it."""
    first_event: str
    """The block that sends the first event and queries the warehouse, as the README has it."""
    query: str
    """That block's SQL command (re-run until the row is there)."""


def quick_start(readme: str) -> QuickStart:
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    starts = [
        line.split("#", 1)[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.startswith("python3 -m liftoff_local")
    ]
    first_event = next(block for block in blocks if "curl" in block and "psql" in block)
    commands = re.sub(r"\\\n\s*", " ", first_event).splitlines()
    (query,) = [line for line in commands if line.startswith("psql ")]
    return QuickStart(starts[0], first_event, query)


def on_port(command: str, port: int) -> str:
    """The README's command on another port: the one change the test makes."""
    if command.startswith("python3 -m liftoff_local"):
        assert "--base-port" not in command
        return f"{command} --base-port {port}"
    assert command.count(f"127.0.0.1:{README_PORT}") == 1, command
    return command.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")


def user_env(nats_dir: Path | None) -> dict[str, str]:
    """A new user's shell: no virtualenv, no liftoff settings; the system's python3."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIFTOFF_", "PG", "AWS_", "PYTHON", "VIRTUAL_ENV"))
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if not _in_a_venv(p)]
    if nats_dir is not None:
        path.insert(0, str(nats_dir))
    env["PATH"] = os.pathsep.join(path)
    return env


def _in_a_venv(directory: str) -> bool:
    return bool(directory) and (Path(directory).parent / "pyvenv.cfg").exists()


def installed_nats_server_dir() -> Path | None:
    """None when the README's `apt-get install nats-server` is in effect (the system's binary
    is found as a new user's shell finds it); else `.ci/run`'s `.tools/bin`."""
    system = user_env(None)["PATH"]
    if shutil.which("nats-server", path=system) or Path("/usr/sbin/nats-server").exists():
        return None
    return REPO_ROOT / ".tools" / "bin"


@pytest.fixture(scope="module")
def fresh_clone() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="liftoff-fresh-clone-"))
    root.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, which must reach the data
    clone = root / "liftoff"
    head = _git("rev-parse", "HEAD").strip()
    _git("clone", "-q", "--no-checkout", str(REPO_ROOT), str(clone))
    _git("-C", str(clone), "checkout", "-q", "--detach", head)
    assert not (clone / ".venv").exists()
    yield clone
    shutil.rmtree(root, ignore_errors=True)


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=REPO_ROOT, check=True, capture_output=True, text=True
    ).stdout


def test_the_quick_start_as_written_finds_the_row(fresh_clone: Path) -> None:
    steps = quick_start((fresh_clone / "README.md").read_text())
    port = free_base_port()
    env = user_env(installed_nats_server_dir())
    log = fresh_clone.parent / "liftoff-local.log"
    began = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", on_port(steps.start, port)],
            cwd=fresh_clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        seconds = _wait_ready(process, log, began)
        print(f"fresh clone: ready {seconds:.1f} s after `{steps.start}`")
        # A fresh clone has no analytics.js: the first run says it fetches it from npm.
        assert "analytics.js: downloading @segment/analytics-next" in log.read_text(), (
            log.read_text()
        )
        pasted = _bash(on_port(steps.first_event, port), fresh_clone, env)
        sent = time.monotonic()
        assert pasted.returncode == 0 and "ERROR" not in pasted.stdout, pasted.stdout
        assert '{"success":true}' in pasted.stdout, pasted.stdout
        found = pasted
        while not ROW.search(found.stdout):
            assert time.monotonic() - sent < ROW_DEADLINE, f"no row: {found.stdout}"
            time.sleep(0.5)
            found = _bash(steps.query, fresh_clone, env)
            assert found.returncode == 0, found.stdout
        print(f"the row: {time.monotonic() - sent:.1f} s after the block was pasted")
    finally:
        _interrupt(process)
    assert process.returncode == 0, log.read_text()


def test_local_modes_imports_need_only_its_requirements(fresh_clone: Path) -> None:
    env = user_env(installed_nats_server_dir())
    # First: a fresh clone's `--help` works (it also creates the venv if the test above did not).
    helped = _bash("python3 -m liftoff_local --help", fresh_clone, env, timeout=READY_DEADLINE)
    assert helped.returncode == 0 and "--base-port" in helped.stdout, helped.stdout
    # The base port's advice names where the ephemeral range begins (a TIME-WAIT there once
    # looked like a busy port).
    assert "ephemeral" in " ".join(helped.stdout.split()), helped.stdout
    venv_python = fresh_clone / ".venv" / "bin" / "python"
    pip = subprocess.run(
        [str(venv_python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pulumi" not in pip.stdout.lower(), "the local venv is not requirements.txt's"
    checked = subprocess.run(
        [str(venv_python), "tests/liftoff_local/import_everything.py"],
        cwd=fresh_clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    print(checked.stdout.strip().splitlines()[-1])
    services = _bash(".venv/bin/python -m services --help", fresh_clone, env)
    assert services.returncode == 0, services.stdout


def _bash(command: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> Any:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def _wait_ready(process: subprocess.Popen[bytes], log: Path, began: float) -> float:
    while "ready in" not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}:\n{log.read_text()}")
        if time.monotonic() - began > READY_DEADLINE:
            raise AssertionError(f"not ready after {READY_DEADLINE} s:\n{log.read_text()}")
        time.sleep(0.2)
    return time.monotonic() - began


def _interrupt(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as the README says; the whole group if it does not stop."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
