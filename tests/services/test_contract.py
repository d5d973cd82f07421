"""The promise of services/contract.py that the round trip (tests/test_runtime_contract.py)
cannot see by itself: the contracts are the only code that spells a variable name, and a name
outside `LIFTOFF_*` is one the program reading it really reads.

- A service reading its environment past its contract (`os.environ.get("LIFTOFF_...")` in its
  run code) is invisible to the round trip, which checks the contract against the
  declarations: every string in services/, components/, liftoff_local/ and dags/ that is a
  contract variable's name (or any `LIFTOFF_*` name) outside the contract modules and the
  registries fails here.
- A name misspelt in its one contract (`AWS_ENDPOINT_URL_S3` as `AWS_ENDPOINT_URL_S_3`) is
  written and parsed alike, so the round trip passes, but boto3 or libpq never reads it: each
  name outside `LIFTOFF_*` is checked against its real reader (botocore and libpq by what they
  do with it, PGDATA with `pg_controldata`), or listed by name with the one that reads it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import botocore.utils
import pytest
from psycopg import pq

from services.contract import variables
from tests.servers import POSTGRES_BIN
from tests.test_layering import REGISTRIES
from tests.test_runtime_contract import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "components", "liftoff_local", "dags")
DECLARED: dict[str, set[str]] = {}
for _process in PROCESSES:
    for _variable in variables(_process.settings):
        DECLARED.setdefault(_variable.name, set()).add(_process.settings.__name__)

LOCAL_SWITCHES = {
    "LIFTOFF_LOCAL_BOOTSTRAPPED": "liftoff_local/__main__.py: set once it re-runs in its .venv",
    "LIFTOFF_NATS_SERVER": "liftoff_local/binaries.py: which nats-server to run",
    "LIFTOFF_POSTGRES_BIN": "liftoff_local/binaries.py: where initdb and postgres are",
}
"""`LIFTOFF_*` names that are no platform process's: the `python3 -m liftoff_local` command's
own switches, read where they are spelled."""


# --- one: only the contracts spell a variable name ------------------------------------------


def _outside_contracts() -> Iterator[Path]:
    registries = {ROOT / (name.replace(".", "/") + ".py") for name in REGISTRIES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "contract.py" and path not in registries:
                yield path


def spelt_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of each string constant that is a variable name: a contract's, or any
    `LIFTOFF_*` name but liftoff local's own switches."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (
            node.value in DECLARED
            or (
                re.fullmatch(r"LIFTOFF_[A-Z0-9_]+", node.value) and node.value not in LOCAL_SWITCHES
            )
        )
    ]


def test_no_code_outside_a_contract_spells_a_variable_name() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name!r}"
        for path in _outside_contracts()
        for line, name in spelt_names(path.read_text())
    ]
    assert not found, "read or write it through the process's contract:\n" + "\n".join(found)
    assert not set(LOCAL_SWITCHES) & set(DECLARED)


def test_a_service_reading_past_its_contract_is_found() -> None:
    """The archiver taking its batch bound from the loader's variable, past its settings."""
    run = 'bounds = (int(os.environ.get("LIFTOFF_LOADER_BATCH_MAX_EVENTS", "1")), None)'
    assert spelt_names(run) == [(1, "LIFTOFF_LOADER_BATCH_MAX_EVENTS")]
    assert spelt_names('os.getenv("LIFTOFF_ARCHIVE_BATCH_MAX_EVNTS")') != []
    assert spelt_names('"set LIFTOFF_STREAM_URL to the stream"') == []  # a message may name it


# --- two: a name outside LIFTOFF_* is one its reader reads ---------------------------------


@pytest.fixture
def clean_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS setting but the one under test (no config file, no credentials)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no wait on 169.254.169.254
    return monkeypatch


def _s3_endpoint() -> object:
    client = boto3.session.Session(region_name="us-east-1").client(
        "s3", aws_access_key_id="k", aws_secret_access_key="s"
    )
    return client.meta.endpoint_url


def _region() -> object:
    return boto3.session.Session().region_name


def _credentials() -> object:
    found = boto3.session.Session().get_credentials()
    return found.access_key if found else None


def _metadata_requests() -> object:
    """How many requests botocore's instance-metadata fetcher sends (to a local server)."""
    seen: list[str] = []

    class Answer(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # the IMDSv2 token
            seen.append(self.path)
            self.send_error(404)

        do_GET = do_PUT

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fetcher = botocore.utils.InstanceMetadataFetcher(
            timeout=5, num_attempts=1, base_url=f"http://127.0.0.1:{server.server_port}/"
        )
        fetcher.retrieve_iam_role_credentials()
    finally:
        server.shutdown()
        server.server_close()
    return len(seen)


S3 = "http://s3.probe.test:9000"
ANY = "http://any.probe.test:9000"
BOTOCORE: dict[str, tuple[str, Callable[[], object], object]] = {
    # name: (the value set, what botocore did, what it does when it reads the value)
    "AWS_ENDPOINT_URL_S3": (S3, _s3_endpoint, S3),
    "AWS_ENDPOINT_URL": (ANY, _s3_endpoint, ANY),
    "AWS_DEFAULT_REGION": ("eu-west-3", _region, "eu-west-3"),
    "AWS_SHARED_CREDENTIALS_FILE": ("<file>", _credentials, "AKIAPROBE"),
    "AWS_EC2_METADATA_DISABLED": ("true", _metadata_requests, 0),
}
"""The AWS variables the contracts declare that botocore reads (the archive's clients, Airflow's
remote logging through the same environment)."""
POSTGRES_IMAGE = {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD_FILE"}
"""Read by the official postgres image's docker-entrypoint.sh (components/postgres: the
server's container), which cannot run here: listed by name."""
OURS = {
    "PGPASSWORD_FILE": "services/postgres/database.py password_from (libpq has PGPASSFILE, "
    "another format)",
    "AWS_REGION": "services/archive/store.py passes it as region_name (botocore reads only "
    "AWS_DEFAULT_REGION); Lambda sets it",
}
"""Names outside LIFTOFF_* read only by liftoff's own code, through the contract."""


def _libpq() -> set[str]:
    return {option.envvar.decode() for option in pq.Conninfo.get_defaults() if option.envvar}


def test_every_name_outside_liftoff_is_one_its_reader_reads() -> None:
    readers = {*BOTOCORE, *POSTGRES_IMAGE, *OURS, "PGDATA", *_libpq()}
    unread = {
        name: sorted(contracts)
        for name, contracts in DECLARED.items()
        if not name.startswith("LIFTOFF_") and name not in readers
    }
    assert not unread, (
        f"declared by these contracts, read by neither botocore, libpq, postgres nor the postgres "
        f"image (a misspelling?): {unread}"
    )
    assert {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSSLMODE"} <= _libpq()
    assert "PGPASSWORD_FILE" not in _libpq()


@pytest.mark.parametrize("name", sorted(BOTOCORE))
def test_botocore_reads_each_aws_name_and_not_a_misspelling(
    name: str, clean_aws: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    value, probe, honoured = BOTOCORE[name]
    clean_aws.delenv(name, raising=False)
    if value == "<file>":
        value = str(tmp_path / "credentials")
        Path(value).write_text(
            "[default]\naws_access_key_id = AKIAPROBE\naws_secret_access_key = probe\n"
        )
    clean_aws.setenv(f"{name}_X", value)  # a misspelt name: botocore does not see it
    assert probe() != honoured
    clean_aws.setenv(name, value)
    assert probe() == honoured


def test_postgres_reads_pgdata(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-cluster"
    env = {"PATH": os.environ.get("PATH", ""), "PGDATA": str(missing)}
    status = subprocess.run(
        [str(POSTGRES_BIN / "pg_controldata")], env=env, capture_output=True, text=True
    )
    assert str(missing) in status.stderr + status.stdout, status
    env.pop("PGDATA")
    status = subprocess.run(
        [str(POSTGRES_BIN / "pg_controldata")], env=env, capture_output=True, text=True
    )
    assert str(missing) not in status.stderr + status.stdout and status.returncode != 0
