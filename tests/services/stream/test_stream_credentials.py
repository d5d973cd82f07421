"""NATS credentials as a file (`LIFTOFF_STREAM_CREDENTIALS_FILE`), against a nats-server that
requires them: one builder, one parser, used by every NATS connection of the processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats
import nats.errors
import pytest

from services.collector.quarantine import read_quarantine
from services.contract import ConfigError, read
from services.events.model import StreamRecord
from services.stream.base import StreamUnavailable
from services.stream.contract import StreamAccess
from services.stream.jetstream import (
    InvalidStreamCredentials,
    JetStreamStream,
    check_credentials,
    stream_credentials,
    stream_credentials_document,
)
from tests.servers import REPO_ROOT, nats_server, nats_url

USER, PASSWORD = "liftoff", "a-password-nobody-may-echo"
STREAM_URL, STREAM_CREDENTIALS_FILE = "LIFTOFF_STREAM_URL", "LIFTOFF_STREAM_CREDENTIALS_FILE"


def credentials_file(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "nats-credentials.json"
    path.write_text(stream_credentials_document(USER, PASSWORD) if text is None else text)
    return path


def test_the_parser_reads_what_the_builder_writes(tmp_path: Path) -> None:
    assert stream_credentials({}) == {}
    path = credentials_file(tmp_path)
    assert stream_credentials({STREAM_CREDENTIALS_FILE: str(path)}) == {
        "user": USER,
        "password": PASSWORD,
    }


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        (None, "cannot be read: No such file or directory"),
        (f'{{"user": "liftoff", "pass": "{PASSWORD}"}}', "must hold a JSON object"),
        (f"liftoff:{PASSWORD}", "must hold a JSON object"),
        (f'{{"user": "", "password": "{PASSWORD}"}}', "two non-empty"),
    ],
)
def test_a_bad_file_names_the_variable_and_never_echoes_it(
    tmp_path: Path, text: str | None, wanted: str
) -> None:
    path = credentials_file(tmp_path, text) if text is not None else tmp_path / "missing.json"
    env = {STREAM_URL: "nats://127.0.0.1:4222/EVENTS", STREAM_CREDENTIALS_FILE: str(path)}
    with pytest.raises(InvalidStreamCredentials) as error:
        stream_credentials(env)
    with pytest.raises(ConfigError) as settings:
        check_credentials(read(StreamAccess, env))
    for message in (str(error.value), str(settings.value)):
        assert STREAM_CREDENTIALS_FILE in message and wanted in message
        assert PASSWORD not in message


@pytest.mark.servers
def test_only_clients_with_the_credentials_get_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with nats_server(tmp_path, user_password=(USER, PASSWORD)) as server:
        url = f"{nats_url(server)}/EVENTS"

        async def anonymous() -> None:
            await nats.connect(nats_url(server), allow_reconnect=False, connect_timeout=2)

        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            asyncio.run(anonymous())
        assert asyncio.run(ready_within(url, 1.0)) is False

        path = credentials_file(tmp_path)
        setup = subprocess.run(
            [sys.executable, "-m", "services", "ensure-stream"],
            env={**os.environ, STREAM_URL: url, STREAM_CREDENTIALS_FILE: str(path)},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert setup.returncode == 0, setup.stderr
        monkeypatch.setenv(STREAM_CREDENTIALS_FILE, str(path))
        assert asyncio.run(ready_within(url, 10.0)) is True
        assert asyncio.run(read_quarantine(f"{nats_url(server)}/DEADLETTER")) == []


async def ready_within(url: str, seconds: float) -> bool:
    """Whether the collector's adapter connects and can publish within `seconds`."""
    stream = JetStreamStream.from_url(url)
    await stream.start()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    try:
        while True:
            try:
                await stream.check_ready()
                break
            except StreamUnavailable:
                if loop.time() > give_up:
                    return False
                await asyncio.sleep(0.05)
        await stream.publish([StreamRecord("m-1", "web", "track", "u-1", b"{}")])
        return True
    finally:
        await stream.close()
