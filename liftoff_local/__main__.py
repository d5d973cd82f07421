"""``python3 -m liftoff_local``: set up what is missing, then run the local platform.

Runs with any Python 3.11+: when the repository's ``.venv`` is missing or lacks a requirement,
it is created / completed from ``liftoff_local/requirements.txt`` (the services' runtime, the
YAML reader and moto, with requirements.txt's pins), and the command re-runs itself inside
it. Everything else is standard library until then.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV = REPO_ROOT / ".venv"
NEEDED = ("yaml", "nats", "psycopg", "moto", "uvicorn", "msgspec", "boto3", "httpx", "werkzeug")


def _missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def _bootstrap() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (runs under any python3 first)
        sys.exit(f"liftoff local needs Python 3.11 or newer (this is {sys.version.split()[0]})")
    if not _missing():
        return
    if os.environ.get("LIFTOFF_LOCAL_BOOTSTRAPPED"):
        sys.exit(f"liftoff local: still missing after installing: {', '.join(_missing())}")
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"==> creating {VENV}", flush=True)
        if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)  # half made (no pip): the next run retries
            sys.exit(
                "liftoff local: creating the virtual environment failed (see above). On "
                "Debian/Ubuntu: sudo apt-get install python3-venv"
            )
    probe = f"import {', '.join(NEEDED)}"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        print(f"==> installing liftoff_local/requirements.txt into {VENV} (once)", flush=True)
        result = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(REPO_ROOT / "liftoff_local" / "requirements.txt"),
            ]
        )
        if result.returncode != 0:
            sys.exit("liftoff local: installing the Python requirements failed (see above)")
    os.environ["LIFTOFF_LOCAL_BOOTSTRAPPED"] = "1"
    os.execv(str(python), [str(python), "-m", "liftoff_local", *sys.argv[1:]])


if __name__ == "__main__":
    _bootstrap()
    from liftoff_local.cli import main

    sys.exit(main())
