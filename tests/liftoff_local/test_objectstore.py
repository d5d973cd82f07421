"""The local archive store keeps moto's S3 objects on disk across restarts and crashes."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from liftoff_local.objectstore import safe_path
from tests.servers import LOOPBACK, REPO_ROOT, ServerProcess, free_port, port_accepts

KEY_ID, SECRET = "AKIALIFTOFFLOCALTEST", "s3cret-of-forty-characters-for-the-test1"

pytestmark = pytest.mark.servers


def store(directory: Path, port: int) -> ServerProcess:
    credentials = directory.parent / "s3-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
    )
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
            "--credentials",
            str(credentials),
        ],
        port=port,
        log_path=directory.parent / "objectstore.log",
        is_ready=lambda: port_accepts(port),
        cwd=REPO_ROOT,
    )


def client(port: int, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{port}",
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def plain_http(method: str, url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_only_requests_signed_with_the_stores_key_pair_are_served(tmp_path: Path) -> None:
    directory, port = tmp_path / "s3", free_port()
    server = store(directory, port).start()
    try:
        s3 = client(port)
        s3.create_bucket(Bucket="archive")
        s3.put_object(Bucket="archive", Key="secret.json.gz", Body=b"events")
        base = f"http://{LOOPBACK}:{port}"
        # Anonymous: no read, no write, no listing, none of moto's management API.
        assert plain_http("GET", f"{base}/archive/secret.json.gz") == 403
        assert plain_http("PUT", f"{base}/archive/planted", b"x") == 403
        assert plain_http("GET", f"{base}/archive") == 403
        assert plain_http("POST", f"{base}/moto-api/reset") == 403
        assert plain_http("POST", f"{base}/moto-api/reset-auth", b"1000") == 403
        presigned = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "archive", "Key": "secret.json.gz"}
        )
        assert plain_http("GET", presigned) == 403
        # Signed, but not with the store's pair.
        for key_id, secret, code in (
            (KEY_ID, "wrong-secret", "SignatureDoesNotMatch"),
            ("AKIAUNKNOWNKEY000000", SECRET, "InvalidAccessKeyId"),
        ):
            with pytest.raises(ClientError) as refused:
                client(port, key_id, secret).get_object(Bucket="archive", Key="secret.json.gz")
            assert refused.value.response["Error"]["Code"] == code
            with pytest.raises(ClientError):
                client(port, key_id, secret).put_object(Bucket="archive", Key="p", Body=b"x")
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="archive")["Contents"]}
        assert keys == {"secret.json.gz"}
        assert not (directory / "archive" / "planted").exists()
        assert not (directory / "archive" / "p").exists()
    finally:
        server.stop()


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
