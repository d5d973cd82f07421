"""`python -m liftoff_local` end to end, as a user runs it: from the dev stack file, events
from the official analytics-python SDK end up as warehouse rows, archive objects and in the
tracking API; Ctrl-C stops everything; a restart keeps the data and takes new events."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from segment.analytics import Client as SegmentClient

from liftoff_local.objectstore import read_key_pair
from liftoff_local.supervisor import Ports
from tests.liftoff_local.conftest import LocalRun, free_base_port, listening_sockets, start_local
from tests.servers import LOOPBACK, REPO_ROOT, port_accepts

pytestmark = pytest.mark.servers


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post(url: str) -> Any:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def eventually(check: Any, deadline: float = 45.0, what: str = "") -> Any:
    give_up = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"not within {deadline} s: {what}")
        time.sleep(0.25)


def warehouse(run: LocalRun, sql: str) -> list[tuple]:
    with psycopg.connect(run.info["warehouseUrl"], connect_timeout=5) as connection:
        return connection.execute(sql).fetchall()


def assert_exposure(run: LocalRun, base: int) -> None:
    """Everything listens on loopback only; the stream and the S3 store want credentials."""
    import asyncio

    import nats
    import nats.errors

    listening = listening_sockets(run.process.pid)
    expected = set(Ports(base).all(consumers=2))
    assert expected <= set(listening), listening
    assert set(listening.values()) == {LOOPBACK}, listening
    nats_url = run.info["streamUrl"].rsplit("/", 1)[0]

    async def anonymous() -> None:
        await nats.connect(nats_url, allow_reconnect=False, connect_timeout=2)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(anonymous())
    archive = run.info["archive"]
    unsigned = urllib.request.Request(f"{archive['endpoint']}/{archive['bucket']}", method="GET")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=5)
    assert refused.value.code == 403
    s3 = boto3.client(
        "s3",
        endpoint_url=archive["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=read_key_pair(Path(archive["credentialsFile"]))[0],
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        s3.list_objects_v2(Bucket=archive["bucket"])


def archived_message_ids(run: LocalRun) -> set[str]:
    archive = run.info["archive"]
    key_id, secret = read_key_pair(Path(archive["credentialsFile"]))
    s3 = boto3.client(
        "s3",
        endpoint_url=archive["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    ids = set()
    for item in s3.list_objects_v2(Bucket=archive["bucket"]).get("Contents", []):
        body = s3.get_object(Bucket=archive["bucket"], Key=item["Key"])["Body"].read()
        for line in gzip.decompress(body).splitlines():
            ids.add(json.loads(line)["messageId"])
    return ids


def sdk(run: LocalRun, source: str = "web") -> SegmentClient:
    return SegmentClient(
        run.info["writeKeys"][source], host=run.info["collectorUrl"], sync_mode=True
    )


def send_batch(run: LocalRun, batch: list[dict], source: str = "web") -> Any:
    """POST /v1/batch as an SDK does; returns the collector's JSON answer."""
    import base64

    key = run.info["writeKeys"][source]
    request = urllib.request.Request(
        run.info["collectorUrl"] + "/v1/batch",
        data=json.dumps({"batch": batch}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_dev_stack_end_to_end_with_restart(
    tmp_path: Path, data_root: Path, local_runs: list[LocalRun]
) -> None:
    base = free_base_port()
    data = data_root / ".liftoff" / "dev"  # like the default: parents created by liftoff local
    arguments = ["--stack", str(REPO_ROOT / "Pulumi.dev.yaml"), "--base-port", str(base)]
    run = start_local(arguments, tmp_path / "first.log", data)
    local_runs.append(run)
    run.wait_ready()
    print(f"first start: ready after {run.seconds_to_ready:.1f} s")
    info = run.info
    assert set(info["writeKeys"]) == {"web", "backend"}
    assert info["collectorUrl"] == f"http://{LOOPBACK}:{base}"
    text = run.text()
    password = (data / "secrets" / "warehouse-password").read_text()
    for printed in (
        info["collectorUrl"],
        info["warehouseUrl"].replace(password, "…"),
        info["writeKeys"]["web"],
        "s3://liftoff-dev-archive",
        info["trackingUrl"],
    ):
        assert printed in text
    assert password not in text, "the warehouse password stays in its file"
    # Before any event: the table is there (a query right after the first event finds it).
    assert warehouse(run, "SELECT count(*) FROM events") == [(0,)]
    assert_exposure(run, base)

    # A second instance on the same data is refused, and changes nothing.
    second = start_local(arguments, tmp_path / "second.log", data)
    assert second.process.wait(60) == 2
    assert "already running" in second.text()

    web, backend = sdk(run, "web"), sdk(run, "backend")
    web.track("u-1", "Signed Up", {"plan": "pro"}, message_id="m-signed-up")
    web.page("u-1", "Docs", "Pricing", message_id="m-page")
    backend.identify("u-1", {"email": "u1@example.com"}, message_id="m-identify")
    web.flush(), backend.flush()
    # One invalid event in a batch: quarantined by the collector with its reason, its
    # neighbour accepted.
    answer = send_batch(
        run,
        [
            {"type": "track", "event": "No User", "messageId": "m-bad"},
            {"type": "track", "userId": "u-3", "event": "Clicked", "messageId": "m-good"},
        ],
    )
    assert answer["success"] is True and answer["quarantined"] == 1

    tracking = info["trackingUrl"]
    status, found = get_json(f"{tracking}/events?event=Signed%20Up&source=web")
    assert status == 200 and found["count"] == 1
    assert found["events"][0]["event"]["properties"] == {"plan": "pro"}
    assert get_json(f"{tracking}/events?type=identify")[1]["events"][0]["event"]["traits"] == {
        "email": "u1@example.com"
    }
    assert get_json(f"{tracking}/events?source=backend&type=track")[1]["count"] == 0
    status, quarantined = get_json(f"{tracking}/quarantine?consumer=collector&source=web")
    (bad,) = quarantined["quarantined"]
    assert bad["event"] == {"type": "track", "event": "No User", "messageId": "m-bad"}
    assert "userId" in bad["reason"] and bad["index"] == 0 and bad["route"] == "/v1/batch"
    assert get_json(f"{tracking}/quarantine?event=No%20User")[1]["count"] == 1
    assert get_json(f"{tracking}/events?messageId=m-good")[1]["count"] == 1
    status, error = get_json(f"{tracking}/events?colour=blue")
    assert status == 400 and "colour" in error["error"]

    rows = eventually(
        lambda: warehouse(run, "SELECT message_id, event, properties FROM events ORDER BY 1"),
        what="warehouse rows",
    )
    eventually(lambda: len(warehouse(run, "SELECT 1 FROM events")) == 4, what="4 rows")
    rows = warehouse(run, "SELECT message_id, event, properties->>'plan' FROM events ORDER BY 1")
    assert ("m-signed-up", "Signed Up", "pro") in rows
    expected = {"m-signed-up", "m-page", "m-identify", "m-good"}
    eventually(lambda: archived_message_ids(run) == expected, what="archive objects")
    assert list((Path(info["archive"]["directory"])).rglob("*.json.gz"))
    eventually(lambda: "quarantined 1" in run.text(), what="the status line")

    assert run.stop() == 0
    assert "stopped" in run.text()
    ports = Ports(base)
    for port in (ports.collector, ports.tracking, ports.s3, ports.nats, ports.postgres):
        assert not port_accepts(port), f"port {port} still open after Ctrl-C"

    # Again: the data is still there and new events flow.
    run = start_local(arguments, tmp_path / "again.log", data)
    local_runs.append(run)
    run.wait_ready()
    print(f"restart: ready after {run.seconds_to_ready:.1f} s")
    assert run.info["writeKeys"] == info["writeKeys"], "write keys are generated once and kept"
    assert len(warehouse(run, "SELECT 1 FROM events")) == 4
    assert archived_message_ids(run) == expected
    assert get_json(f"{tracking}/events")[1]["count"] == 4
    assert get_json(f"{tracking}/quarantine")[1]["count"] == 1
    # The quarantined event repaired and replayed: gone from the tracking API as from the
    # status line (the quarantine deletes what it replayed).
    replay_quarantined(run, tmp_path, bad["sequence"], {**bad["event"], "userId": "u-4"})
    assert get_json(f"{tracking}/quarantine")[1]["count"] == 0
    eventually(lambda: run.text().rstrip().endswith("quarantined 0 | dead-lettered 0"))
    eventually(lambda: len(warehouse(run, "SELECT 1 FROM events")) == 5, what="the replayed")
    assert post(f"{tracking}/reset")["events"] == 0
    web = sdk(run, "web")
    web.track("u-2", "Signed Up", {"plan": "team"}, message_id="m-after-restart")
    web.flush()
    eventually(lambda: len(warehouse(run, "SELECT 1 FROM events")) == 6, what="a new row")
    found = get_json(f"{tracking}/events")[1]
    assert [e["event"]["messageId"] for e in found["events"]] == ["m-after-restart"]
    eventually(lambda: "m-after-restart" in archived_message_ids(run), what="archived again")
    assert run.stop() == 0

    fresh = start_local([*arguments, "--fresh"], tmp_path / "fresh.log", data)
    local_runs.append(fresh)
    assert_fresh_keeps_the_write_keys(fresh, info["writeKeys"])


def assert_fresh_keeps_the_write_keys(run: LocalRun, keys: dict[str, str]) -> None:
    """--fresh: the data goes, the write keys an app is configured with stay (and it says so)."""
    run.wait_ready()
    assert "kept the write keys" in run.text()
    assert run.info["writeKeys"] == keys
    assert warehouse(run, "SELECT count(*) FROM events") == [(0,)]
    assert run.stop() == 0


def replay_quarantined(run: LocalRun, tmp_path: Path, sequence: int, body: dict) -> None:
    """`python -m services quarantine replay` with the stream's URL and login from local.json,
    as the README shows."""
    import os
    import subprocess
    import sys

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(body))
    env = {
        **os.environ,
        "LIFTOFF_STREAM_URL": run.info["streamUrl"],
        "LIFTOFF_STREAM_CREDENTIALS_FILE": run.info["streamCredentialsFile"],
    }
    replayed = subprocess.run(
        [
            sys.executable,
            "-m",
            "services",
            "quarantine",
            "replay",
            "--seq",
            str(sequence),
            "--body",
            str(fixed),
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replayed.returncode == 0 and '"replayed": true' in replayed.stdout, replayed


def test_webhook_destination_delivers_to_a_local_receiver(
    tmp_path: Path, data_root: Path, local_runs: list[LocalRun]
) -> None:
    from services.consumers.broadcaster.signing import verify
    from tests.services.consumers.broadcaster.receiver import Receiver

    stack = tmp_path / "Pulumi.hooks.yaml"
    stack.write_text(
        (REPO_ROOT / "Pulumi.dev.yaml").read_text() + "  liftoff:destinations:\n"
        "    - name: crm\n"
        "      type: webhook\n"
        "      url: https://crm.example/hooks/liftoff\n"
        "      signingSecret:\n"
        "        secure: v1:ciphertext-only-pulumi-can-open\n"
        "      events: [Signed Up]\n"
    )
    stale = data_root / "data" / "s3" / "old-bucket" / "old-object"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    with Receiver() as receiver:
        run = start_local(
            [
                "--stack",
                str(stack),
                "--base-port",
                str(free_base_port()),
                "--fresh",
                "--destination-url",
                f"crm={receiver.url}/hooks/liftoff",
            ],
            tmp_path / "run.log",
            data_root / "data",
        )
        local_runs.append(run)
        run.wait_ready()
        assert "broadcaster-crm" in run.info["consumers"]
        assert not stale.exists(), "--fresh starts from an empty data directory"
        web = sdk(run)
        web.track("u-1", "Signed Up", {"plan": "pro"}, message_id="m-hook")
        web.track("u-1", "Clicked", message_id="m-filtered-out")
        web.flush()
        receiver.wait_for(lambda: bool(receiver.delivered("/hooks/liftoff")))
        request = receiver.delivered("/hooks/liftoff")[0]
        secrets = data_root / "data" / "secrets" / "destinations-generated.json"
        secret = json.loads(secrets.read_text())
        assert verify(
            secret["crm"]["signingSecret"],
            request.body,
            request.headers.get("x-liftoff-timestamp"),
            request.headers.get("x-liftoff-signature"),
        )
        delivered = json.dumps(request.json)
        assert "m-hook" in delivered and "m-filtered-out" not in delivered
        assert run.stop() == 0


def test_a_port_held_only_by_a_closing_connection_is_not_called_in_use(tmp_path: Path) -> None:
    """An outgoing connection's TIME-WAIT on one of the ports: nothing listens there, and the
    message says what holds it and how to stay clear of such ports."""
    from tests.liftoff_local.conftest import run_local

    base = free_base_port()
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        server.listen()
        with socket.socket() as client:  # bound to base+3 like an ephemeral port, no reuse
            client.bind((LOOPBACK, base + 3))
            client.connect(server.getsockname())
            accepted, _ = server.accept()
        time.sleep(0.1)  # the client closed first: its side is in TIME-WAIT
        accepted.close()
    result = run_local(["--base-port", str(base)], tmp_path / "data")
    assert result.returncode == 2
    assert f"{base + 3} (nats-server: not listened on, but held by a connection" in result.stderr
    assert "TIME-WAIT" in result.stderr and "in use" not in result.stderr
    assert "keep N+" in result.stderr and "where this machine's ephemeral ports begin" in (
        result.stderr
    )


def test_busy_port_is_reported_with_its_role(tmp_path: Path) -> None:
    from tests.liftoff_local.conftest import run_local

    base = free_base_port()
    with socket.socket() as blocker:
        blocker.bind((LOOPBACK, base + 3))
        blocker.listen()
        result = run_local(["--base-port", str(base)], tmp_path / "data")
    assert result.returncode == 2
    assert f"{base + 3} (nats-server: in use by a listening program)" in result.stderr
    assert "--base-port" in result.stderr
    assert not list((tmp_path / "data").glob("nats")), "nothing was started"


def test_missing_servers_are_reported_with_how_to_install(tmp_path: Path) -> None:
    from tests.liftoff_local.conftest import run_local

    missing = str(tmp_path / "nowhere" / "nats-server")
    result = run_local(
        ["--base-port", str(free_base_port())],
        tmp_path / "data",
        env={"LIFTOFF_NATS_SERVER": missing},
    )
    assert result.returncode == 2
    assert f"LIFTOFF_NATS_SERVER={missing!r} is not an executable file" in result.stderr

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_local(
        ["--base-port", str(free_base_port())],
        tmp_path / "data",
        env={"LIFTOFF_POSTGRES_BIN": str(empty)},
    )
    assert result.returncode == 2
    assert "does not hold the PostgreSQL server binaries initdb and postgres" in result.stderr


def test_binaries_not_installed_at_all_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from liftoff_local import binaries

    monkeypatch.setenv("PATH", str(tmp_path))
    for name, value in (
        ("REPO_ROOT", tmp_path),
        ("DEBIAN_NATS_SERVER", tmp_path / "nats-server"),
        ("DEBIAN_POSTGRES", tmp_path / "postgresql"),
    ):
        monkeypatch.setattr(binaries, name, value)
    with pytest.raises(binaries.MissingBinary, match="apt-get install nats-server"):
        binaries.find_nats_server({})
    with pytest.raises(binaries.MissingBinary, match="apt-get install postgresql"):
        binaries.find_postgres({})


def test_the_newest_installed_postgresql_is_used_by_liftoff_local_and_the_tests(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Debian/Ubuntu install majors side by side (/usr/lib/postgresql/<major>/bin); the
    tests' servers (tests/servers.py) find theirs as liftoff local does, not at a fixed 15."""
    from liftoff_local import binaries
    from tests import servers

    for major in ("15", "16", "9"):
        directory = tmp_path / "postgresql" / major / "bin"
        directory.mkdir(parents=True)
        for tool in ("initdb", "postgres"):
            (directory / tool).write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {major}.4'\n")
            (directory / tool).chmod(0o755)
    monkeypatch.setattr(binaries, "DEBIAN_POSTGRES", tmp_path / "postgresql")
    monkeypatch.delenv("LIFTOFF_POSTGRES_BIN", raising=False)
    newest = tmp_path / "postgresql" / "16" / "bin"
    assert binaries.find_postgres() == binaries.PostgresBinaries(newest, 16)
    assert servers._postgres_bin() == newest
    monkeypatch.setenv("LIFTOFF_POSTGRES_BIN", str(tmp_path / "postgresql" / "15" / "bin"))
    assert servers._postgres_bin() == tmp_path / "postgresql" / "15" / "bin"


def test_stack_file_errors_are_the_programs(tmp_path: Path) -> None:
    from components.config import load_config
    from components.validation import ConfigError
    from tests.harness import load_stack_config
    from tests.liftoff_local.conftest import run_local

    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(
        "config:\n"
        "  liftoff:target: kubernetes\n"
        "  liftoff:warehouse:\n    batchMaxEvents: 0\n"
        "  liftoff:destinations:\n"
        "    - {name: crm, type: webhook, url: 'http://insecure.example', signingSecret: plain}\n"
    )
    values, secrets = load_stack_config(stack)
    with pytest.raises(ConfigError) as program:
        load_config(values, project="liftoff", stack="bad", secret_keys=secrets)
    result = run_local(["--stack", str(stack)], tmp_path / "data")
    assert result.returncode == 2
    assert str(program.value) in result.stderr
    assert "liftoff:warehouse.batchMaxEvents" in result.stderr
    assert "pulumi config set --secret" in result.stderr
    assert "plain" not in result.stderr.replace("plaintext", ""), "a secret value was echoed"


def test_a_process_that_dies_stops_everything_loudly(
    tmp_path: Path, data_root: Path, local_runs: list[LocalRun]
) -> None:
    import os
    import signal
    import subprocess

    base = free_base_port()
    run = start_local(["--base-port", str(base)], tmp_path / "run.log", data_root / "data")
    local_runs.append(run)
    run.wait_ready()
    found = subprocess.run(
        ["pgrep", "-P", str(run.process.pid), "-f", "services loader"],
        capture_output=True,
        text=True,
    )
    (loader,) = [int(pid) for pid in found.stdout.split()]
    os.kill(loader, signal.SIGKILL)
    assert run.process.wait(60) == 1
    text = run.text()
    assert "loader exited unexpectedly (killed by signal 9); stopping" in text
    assert "stopped" in text
    ports = Ports(base)
    for port in (ports.collector, ports.tracking, ports.s3, ports.nats, ports.postgres):
        assert not port_accepts(port), f"port {port} still open"
