"""Kill `python -m services regulation delete` mid-archive, run it again: it finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from services.consumers.archiver.sink import decode_object, encode_object
from tests.servers import AWS_TEST_ENV, REPO_ROOT
from tests.services.regulations.test_deletion import KEY, line

pytestmark = pytest.mark.servers

OBJECTS = 60


def holding_u1(s3: Any, name: str) -> int:
    found = 0
    for n in range(OBJECTS):
        body = s3.get_object(Bucket=name, Key=f"o/{n:04d}.json.gz")["Body"].read()
        found += any(b'"userId":"u1"' in x for x in decode_object(body))
    return found


def test_killed_mid_deletion_resumes(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    s3, name = bucket
    for n in range(OBJECTS):
        body = encode_object([line("u1", "a1", n), line("u2", "a2", n)])
        s3.put_object(Bucket=name, Key=f"o/{n:04d}.json.gz", Body=body)
    env = {
        **os.environ, **AWS_TEST_ENV, **warehouse,
        "AWS_ENDPOINT_URL": aws_env,
        "LIFTOFF_SUPPRESSION_URL": "nats://127.0.0.1:1/unused",
        "LIFTOFF_SUPPRESSION_KEY": KEY,
        "LIFTOFF_ARCHIVE_BUCKET": name,
    }  # fmt: skip
    argv = [sys.executable, "-m", "services", "regulation", "delete", "--user-id", "u1"]
    worker = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    dsn = " ".join(
        f"{k}={warehouse[v]}"
        for k, v in (("host", "PGHOST"), ("port", "PGPORT"), ("dbname", "PGDATABASE"))
    )
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, user="postgres", autocommit=True) as connection:
        while time.monotonic() < deadline:
            try:
                row = connection.execute(
                    "SELECT status FROM liftoff_regulations.targets WHERE target = 'archive'"
                ).fetchone()
            except psycopg.errors.UndefinedTable:
                row = None
            if row and row[0] == "running":
                break
            time.sleep(0.02)
        while time.monotonic() < deadline:  # the first object rewritten (keys go in order)
            first = s3.get_object(Bucket=name, Key="o/0000.json.gz")["Body"].read()
            if not any(b'"userId":"u1"' in x for x in decode_object(first)):
                break
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        left = holding_u1(s3, name)
        assert 0 < left < OBJECTS, f"the kill did not land mid-archive ({left} objects left)"
        (state,) = connection.execute(
            "SELECT status FROM liftoff_regulations.targets WHERE target = 'archive'"
        ).fetchone() or ("absent",)
        assert state == "running"

        again = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert holding_u1(s3, name) == 0
        statuses = connection.execute(
            "SELECT target, status FROM liftoff_regulations.targets ORDER BY 1"
        ).fetchall()
        assert statuses == [("archive", "done"), ("warehouse", "done")]
        assert connection.execute(
            "SELECT count(*) FROM liftoff_regulations.requests"
        ).fetchone() == (1,)
