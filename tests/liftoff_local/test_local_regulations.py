"""Regulations in local mode: `python -m services regulation` with the environment liftoff
local writes (`<data>/regulation.env`) suppresses a user at the local collector and deletes
their rows from the local warehouse."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.liftoff_local.conftest import LocalRun, free_base_port, start_local
from tests.liftoff_local.test_local import eventually, sdk, warehouse
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.servers


def regulation(data: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        shlex.split(line)[0].split("=", 1)
        for line in (data / "regulation.env").read_text().splitlines()
    )
    return subprocess.run(
        [sys.executable, "-m", "services", "regulation", *arguments],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_suppress_and_delete_in_local_mode(
    tmp_path: Path, data_root: Path, local_runs: list[LocalRun]
) -> None:
    data = data_root / "data"
    arguments = [
        "--stack",
        str(REPO_ROOT / "Pulumi.dev.yaml"),
        "--base-port",
        str(free_base_port()),
    ]
    run = start_local(arguments, tmp_path / "run.log", data)
    local_runs.append(run)
    run.wait_ready()
    web = sdk(run)
    web.track("u-gone", "Before", message_id="m-before")
    web.track("u-kept", "Before", message_id="m-kept-before")
    web.flush()
    eventually(lambda: warehouse(run, "SELECT count(*) FROM events") == [(2,)], what="loaded")

    done = regulation(data, "suppress", "--user-id", "u-gone")
    assert done.returncode == 0, done.stderr
    time.sleep(2 * 2.0)  # twice the collector's refresh interval (2 s): margin for a busy machine
    web.track("u-gone", "After", message_id="m-after")
    web.track("u-kept", "After", message_id="m-kept-after")
    web.flush()
    eventually(
        lambda: warehouse(run, "SELECT 1 FROM events WHERE message_id = 'm-kept-after'"),
        what="the other user's new event loaded",
    )
    assert warehouse(run, "SELECT count(*) FROM events WHERE message_id = 'm-after'") == [(0,)]

    done = regulation(data, "delete", "--user-id", "u-gone")
    assert done.returncode == 0, done.stderr
    assert warehouse(run, "SELECT count(*) FROM events WHERE user_id = 'u-gone'") == [(0,)]
    assert warehouse(run, "SELECT count(*) FROM events WHERE user_id = 'u-kept'") == [(2,)]
    assert run.stop() == 0
