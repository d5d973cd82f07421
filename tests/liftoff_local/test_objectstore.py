"""The local archive store keeps moto's S3 objects on disk across restarts and crashes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from liftoff_local.objectstore import safe_path
from tests.servers import LOOPBACK, REPO_ROOT, ServerProcess, free_port, http_ok

pytestmark = pytest.mark.servers


def store(directory: Path, port: int) -> ServerProcess:
    return ServerProcess(
        name=f"objectstore:{port}",
        argv=[
            sys.executable,
            "-m",
            "liftoff_local.objectstore",
            "--port",
            str(port),
            "--dir",
            str(directory),
        ],
        port=port,
        log_path=directory.parent / "objectstore.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/moto-api/"),
        cwd=REPO_ROOT,
    )


def client(port: int) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_objects_survive_a_restart_and_a_kill(tmp_path: Path) -> None:
    directory, port = tmp_path / "s3", free_port()
    server = store(directory, port).start()
    s3 = client(port)
    s3.create_bucket(Bucket="archive")
    s3.put_object(Bucket="archive", Key="a/b/one.json.gz", Body=b"one")
    s3.put_object(Bucket="archive", Key="a/two", Body=b"two")
    s3.put_object(Bucket="archive", Key="a/two", Body=b"two, rewritten")
    s3.put_object(Bucket="archive", Key="gone", Body=b"x")
    s3.delete_object(Bucket="archive", Key="gone")
    s3.put_object(Bucket="archive", Key="many/1", Body=b"1")
    s3.delete_objects(Bucket="archive", Delete={"Objects": [{"Key": "many/1"}]})
    # On disk as soon as the PUT was answered.
    assert (directory / "archive" / "a" / "b" / "one.json.gz").read_bytes() == b"one"
    server.kill()  # SIGKILL: nothing is flushed at exit

    server.start()
    s3 = client(port)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="archive")["Contents"]}
    assert keys == {"a/b/one.json.gz", "a/two"}
    assert s3.get_object(Bucket="archive", Key="a/two")["Body"].read() == b"two, rewritten"
    # Conditional writes (the archiver's If-None-Match) still work after a restore.
    with pytest.raises(s3.exceptions.ClientError):
        s3.put_object(Bucket="archive", Key="a/two", Body=b"x", IfNoneMatch="*")
    server.stop()


def test_names_that_are_not_plain_paths_are_refused(tmp_path: Path) -> None:
    assert safe_path(tmp_path, "b", "x/../../etc") is None
    assert safe_path(tmp_path, "b", "x//y") is None
    assert safe_path(tmp_path, "b", "source=web/hour=01/f.json.gz") == (
        tmp_path / "b" / "source=web" / "hour=01" / "f.json.gz"
    )
