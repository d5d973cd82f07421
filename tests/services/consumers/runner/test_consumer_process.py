"""Consumers as real processes: probes, SIGTERM, CLI configuration errors, ensure-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from services.cli import main
from tests.servers import (
    AWS_TEST_ENV,
    LOOPBACK,
    REPO_ROOT,
    ServerProcess,
    TcpProxy,
    consumer_process,
    moto_endpoint,
    nats_url,
)
from tests.services.consumers.archiver.test_archiver import archive, lines
from tests.services.consumers.conftest import consumer_state, event, publish

pytestmark = pytest.mark.servers


def archiver_env(url: str, bucket: str, endpoint: str, dead_letter_url: str) -> dict[str, str]:
    return {
        **AWS_TEST_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "LIFTOFF_STREAM_URL": url,
        "LIFTOFF_DEAD_LETTER_URL": dead_letter_url,
        "LIFTOFF_CONSUMER_NAME": "archiver",
        "LIFTOFF_ARCHIVE_BUCKET": bucket,
        "LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS": "0.2",
        "LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS": "3",
    }


def wait_until(condition: Any, attempts: int = 300) -> None:
    for _ in range(attempts):
        if condition():
            return
        asyncio.run(asyncio.sleep(0.1))
    raise AssertionError("condition never held")


async def ack_floor(url: str, consumer: str) -> int:
    server, _, rest = url.partition("://")[2].partition("/")
    nc = await nats.connect(f"nats://{server}")
    try:
        info = await nc.jetstream().consumer_info(rest.partition("?")[0], consumer)
        return info.ack_floor.stream_seq
    finally:
        await nc.close()


def sigterm(process: ServerProcess) -> int:
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGTERM)
    code = process.process.wait(30)
    process.process = None
    return code


def test_archiver_process_probes_archives_and_stops_on_sigterm(
    tmp_path: Path,
    jetstream: tuple[str, str],
    bucket: tuple[Any, str],
    dead_letter_url: str,
    moto: ServerProcess,
) -> None:
    url, _ = jetstream
    client, name = bucket
    process = consumer_process(
        tmp_path, "archiver", archiver_env(url, name, moto_endpoint(moto), dead_letter_url)
    )
    with process:
        base = f"http://{LOOPBACK}:{process.port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        asyncio.run(publish(url, [event(i) for i in range(20)]))
        wait_until(lambda: asyncio.run(consumer_state(url, "archiver")) == (0, 0))
        metrics = httpx.get(f"{base}/metrics").text
        assert 'liftoff_consumer_events_total{consumer="archiver",outcome="done"} 20.0' in metrics
        assert sigterm(process) == 0
    archived = sorted(
        m["messageId"] for body in archive(client, name).values() for m in lines(body)
    )
    assert archived == sorted(f"m-{i}" for i in range(20))
    assert '"consumer stopped"' in process.log_path.read_text()


def test_sigterm_with_s3_down_abandons_the_batch_unacknowledged(
    tmp_path: Path,
    jetstream: tuple[str, str],
    bucket: tuple[Any, str],
    dead_letter_url: str,
    moto: ServerProcess,
) -> None:
    url, _ = jetstream
    client, name = bucket
    proxy = TcpProxy(moto.port)  # S3 down
    env = archiver_env(url, name, proxy.url, dead_letter_url)
    try:
        with consumer_process(tmp_path, "archiver", env, name="first") as first:
            asyncio.run(publish(url, [event(i) for i in range(10)]))
            wait_until(lambda: asyncio.run(consumer_state(url, "archiver")) == (0, 10))
            assert sigterm(first) == 0  # exits within the grace period, acknowledging nothing
        log = first.log_path.read_text()
        assert "abandoning the in-flight batch" in log
        # Not acknowledged: the ack floor did not move, all 10 are still outstanding.
        assert asyncio.run(ack_floor(url, "archiver")) == 0
        assert asyncio.run(consumer_state(url, "archiver")) == (0, 10)
        proxy.up()
        with consumer_process(tmp_path, "archiver", env, name="second"):
            wait_until(lambda: asyncio.run(consumer_state(url, "archiver")) == (0, 0))
    finally:
        proxy.close()
    archived = sorted(
        m["messageId"] for body in archive(client, name).values() for m in lines(body)
    )
    assert archived == sorted(f"m-{i}" for i in range(10))


@pytest.mark.parametrize(
    ("command", "env", "message"),
    [
        ("archiver", {"LIFTOFF_STREAM_URL": "nats://h:4222/EVENTS"}, "LIFTOFF_ARCHIVE_BUCKET"),
        (
            "archiver",
            {
                "LIFTOFF_STREAM_URL": "nats://h:4222/EVENTS",
                "LIFTOFF_ARCHIVE_BUCKET": "b",
                "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS": "0",
            },
            "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS",
        ),
        ("loader", {"LIFTOFF_STREAM_URL": "nats://h:4222/EVENTS"}, "PGHOST"),
        (
            "loader",
            {
                "PGHOST": "h",
                "LIFTOFF_STREAM_URL": "nats://h:4222/EVENTS",
                "LIFTOFF_DEAD_LETTER_URL": "http://x",
            },
            "LIFTOFF_DEAD_LETTER_URL",
        ),
        ("loader", {"PGHOST": "h", "LIFTOFF_STREAM_URL": "kinesis://s"}, "LIFTOFF_STREAM_URL"),
        ("ensure-database", {"PGHOST": "h"}, "PGUSER"),
    ],
)
def test_configuration_errors_exit_2_naming_the_variable(
    command: str, env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command], env) == 2
    assert message in capsys.readouterr().err


def test_ensure_stream_also_creates_the_dead_letter_stream(own_nats: ServerProcess) -> None:
    url = f"{nats_url(own_nats)}/DLTEST?subject_prefix=dltest"
    dead_letter = f"{nats_url(own_nats)}/DLTEST_DEAD"
    env = {"LIFTOFF_STREAM_URL": url, "LIFTOFF_DEAD_LETTER_URL": dead_letter}
    assert main(["ensure-stream"], env) == 0
    assert main(["ensure-stream"], env) == 0

    async def info() -> Any:
        nc = await nats.connect(nats_url(own_nats))
        try:
            js = nc.jetstream()
            config = (await js.stream_info("DLTEST_DEAD")).config
            await js.delete_stream("DLTEST_DEAD")
            await js.delete_stream("DLTEST")
            return config
        finally:
            await nc.close()

    config = asyncio.run(info())
    assert config.subjects == ["deadletter.>"]
    assert config.storage == "file"


def test_help_lists_the_consumer_commands() -> None:
    usage = subprocess.run(
        [sys.executable, "-m", "services", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("archiver", "loader", "ensure-database"):
        assert command in usage
