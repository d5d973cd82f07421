"""`python -m services <command>`: configuration errors name the variable; ensure-stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import nats
import pytest

from services.cli import main
from tests.servers import REPO_ROOT, ServerProcess, nats_url
from tests.services.stream.under_test import WRITE_KEYS_JSON

GOOD = {"LIFTOFF_STREAM_URL": "nats://127.0.0.1:1/EVENTS", "LIFTOFF_WRITE_KEYS": WRITE_KEYS_JSON}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "LIFTOFF_STREAM_URL is not set"),
        ({**GOOD, "LIFTOFF_STREAM_URL": "kafka://k:9092/t"}, "LIFTOFF_STREAM_URL='kafka"),
        ({**GOOD, "LIFTOFF_STREAM_URL": "nats://n:4222/"}, "LIFTOFF_STREAM_URL is invalid"),
        ({**GOOD, "LIFTOFF_STREAM_URL": "nats://n:4222/E?x=1"}, "unknown nats:// URL parameters"),
        ({"LIFTOFF_STREAM_URL": GOOD["LIFTOFF_STREAM_URL"]}, "LIFTOFF_WRITE_KEYS or"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS": "{web: k}"}, "LIFTOFF_WRITE_KEYS is not valid JSON"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS": '["k"]'}, "LIFTOFF_WRITE_KEYS must be a JSON object"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS": "{}"}, "LIFTOFF_WRITE_KEYS must name at least one"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS": '{"a.b": "k"}'}, "source name 'a.b'"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS": '{"a": "k", "b": "k"}'}, "share one write key"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS": '{"a": ""}'}, "write key of source 'a'"),
        ({**GOOD, "LIFTOFF_WRITE_KEYS_FILE": "/x"}, "set only one of LIFTOFF_WRITE_KEYS"),
        ({**GOOD, "LIFTOFF_PORT": "http"}, "LIFTOFF_PORT='http' is not an integer"),
        ({**GOOD, "LIFTOFF_PORT": "70000"}, "LIFTOFF_PORT=70000 must be between 1 and 65535"),
        ({**GOOD, "LIFTOFF_LOG_LEVEL": "LOUD"}, "LIFTOFF_LOG_LEVEL='LOUD' must be one of"),
        ({**GOOD, "LIFTOFF_WORKERS": "0"}, "LIFTOFF_WORKERS=0 must be between"),
        (
            {**GOOD, "LIFTOFF_TRUSTED_PROXIES": "10.0.0.0/8,ingress"},
            "LIFTOFF_TRUSTED_PROXIES item 'ingress' is not an IP address or CIDR",
        ),
        (
            {**GOOD, "LIFTOFF_IP_COLLECTION_OFF": "web,android"},
            "LIFTOFF_IP_COLLECTION_OFF names unknown sources ['android']",
        ),
        (
            {**GOOD, "LIFTOFF_HTTP_MAX_HEADER_BYTES": "100"},
            "LIFTOFF_HTTP_MAX_HEADER_BYTES=100 must be between 1024",
        ),
        (
            {**GOOD, "LIFTOFF_HTTP_BODY_TIMEOUT_SECONDS": "soon"},
            "LIFTOFF_HTTP_BODY_TIMEOUT_SECONDS='soon' is not a number",
        ),
        (
            {**GOOD, "LIFTOFF_HTTP_MAX_CONNECTIONS": "0"},
            "LIFTOFF_HTTP_MAX_CONNECTIONS=0 must be between 1",
        ),
        (
            {**GOOD, "LIFTOFF_DEAD_LETTER_URL": "kafka://q"},
            "LIFTOFF_DEAD_LETTER_URL='kafka://q' is not supported",
        ),
    ],
)
def test_collector_configuration_errors(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["collector"], env) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "configuration error" in error
    assert "ios-key-2" not in error  # never echo write keys


def test_write_keys_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"LIFTOFF_STREAM_URL": GOOD["LIFTOFF_STREAM_URL"]}
    missing = tmp_path / "missing.json"
    assert main(["collector"], {**env, "LIFTOFF_WRITE_KEYS_FILE": str(missing)}) == 2
    assert f"LIFTOFF_WRITE_KEYS_FILE='{missing}' cannot be read" in capsys.readouterr().err
    broken = tmp_path / "keys.json"
    broken.write_text("web=k")
    assert main(["collector"], {**env, "LIFTOFF_WRITE_KEYS_FILE": str(broken)}) == 2
    assert "LIFTOFF_WRITE_KEYS_FILE is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIFTOFF_STREAM_URL": "kinesis://events"}, "use nats://"),
        ({**GOOD, "LIFTOFF_STREAM_RETENTION_HOURS": "a week"}, "RETENTION_HOURS='a week'"),
        ({**GOOD, "LIFTOFF_STREAM_REPLICAS": "7"}, "LIFTOFF_STREAM_REPLICAS=7 must be between 1"),
        (
            {**GOOD, "LIFTOFF_STREAM_RETENTION_HOURS": "0.01"},
            "LIFTOFF_STREAM_DUPLICATE_WINDOW_SECONDS must not exceed",
        ),
    ],
)
def test_ensure_stream_configuration_errors(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ensure-stream"], env) == 2
    assert message in capsys.readouterr().err


def test_the_module_entry_point_reports_errors_and_lists_commands() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "services", "collector"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "LIFTOFF_STREAM_URL is not set" in run.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "services", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "collector" in usage.stdout and "ensure-stream" in usage.stdout
    # A user's help: what to run and how, not how to add a command (nor reST markup).
    for contributor_text in ("Add a command", "COMMANDS", ":mod:", "``"):
        assert contributor_text not in usage.stdout
    assert "LIFTOFF_STREAM_URL=" in usage.stdout and "exit status" in usage.stdout


@pytest.mark.servers
def test_ensure_stream_creates_then_updates_idempotently(
    shared_nats: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{nats_url(shared_nats)}/CLI_STREAM?subject_prefix=clitest"
    env = {
        "LIFTOFF_STREAM_URL": url,
        "LIFTOFF_STREAM_RETENTION_HOURS": "2",
        "LIFTOFF_STREAM_DUPLICATE_WINDOW_SECONDS": "30",
    }
    assert main(["ensure-stream"], env) == 0
    assert main(["ensure-stream"], env) == 0
    assert main(["ensure-stream"], {**env, "LIFTOFF_STREAM_RETENTION_HOURS": "3"}) == 0

    async def config() -> object:
        nc = await nats.connect(nats_url(shared_nats))
        try:
            js = nc.jetstream()
            info = await js.stream_info("CLI_STREAM")
            await js.delete_stream("CLI_STREAM")
            return info.config
        finally:
            await nc.close()

    stream = asyncio.run(config())
    assert stream.subjects == ["clitest.>"]  # type: ignore[attr-defined]
    assert stream.max_age == 3 * 3600  # type: ignore[attr-defined]
    assert stream.duplicate_window == 30  # type: ignore[attr-defined]
    assert stream.storage == "file"  # type: ignore[attr-defined]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    outcomes = [entry["outcome"] for entry in logged if entry["message"] == "stream ensured"]
    assert outcomes == ["created", "unchanged", "updated"]


@pytest.mark.servers
def test_ensure_stream_refuses_a_partition_change_with_its_own_exit_status(
    shared_nats: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 3 (the Job's podFailurePolicy fails the Job at once on it): not retried for the
    Job's deadline while the rollouts waiting on it hang."""
    url = f"{nats_url(shared_nats)}/CLI_PARTS_{uuid.uuid4().hex[:6]}?subject_prefix=cp"
    assert main(["ensure-stream"], {"LIFTOFF_STREAM_URL": url}) == 0
    assert main(["ensure-stream"], {"LIFTOFF_STREAM_URL": f"{url}&partitions=4"}) == 3
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any("1 partition(s)" in entry.get("error", "") for entry in logged)


def test_ensure_stream_fails_with_a_nonzero_exit_when_the_broker_never_answers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.stream import jetstream

    original = jetstream.ensure_stream

    async def quick(url: str, settings: object) -> str:
        return await original(url, settings, connect_deadline=0.5)  # type: ignore[arg-type]

    monkeypatch.setattr(jetstream, "ensure_stream", quick)
    url = "nats://127.0.0.1:9/EVENTS"  # discard port: nothing listens
    assert main(["ensure-stream"], {"LIFTOFF_STREAM_URL": url}) == 1
