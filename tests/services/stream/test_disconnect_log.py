"""A command that closes its NATS connection on purpose (`quarantine replay`, the stream
setup) logs no warning; losing the server still warns. Against a real nats-server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.stream.jetstream import JetStreamStream
from tests.servers import ServerProcess, nats_url

pytestmark = pytest.mark.servers
WARNING = "disconnected from NATS"


async def connected(server: ServerProcess) -> JetStreamStream:
    stream = JetStreamStream.from_url(f"{nats_url(server)}/EVENTS")
    await stream.start()
    for _ in range(200):
        if stream._nc is not None and stream._nc.is_connected:
            return stream
        await asyncio.sleep(0.05)
    raise AssertionError("not connected to NATS within 10 s")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_closing_on_purpose_is_not_a_warning(
    own_nats: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="liftoff.stream.nats")

    async def scenario() -> None:
        await (await connected(own_nats)).close()

    asyncio.run(scenario())
    assert WARNING not in warnings(caplog)
    assert "closed the NATS connection" in caplog.messages


def test_losing_the_server_is_a_warning(
    own_nats: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="liftoff.stream.nats")

    async def scenario() -> None:
        stream = await connected(own_nats)
        own_nats.stop()
        for _ in range(200):
            if WARNING in warnings(caplog):
                break
            await asyncio.sleep(0.05)
        await stream.close()

    asyncio.run(scenario())
    assert WARNING in warnings(caplog)
