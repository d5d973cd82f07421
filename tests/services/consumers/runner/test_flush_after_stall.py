"""A flush that times out while the server stalls must not leave a dead connection behind."""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import pytest

from services.consumers.runner.acks import flush
from tests.servers import ServerProcess, nats_url

pytestmark = pytest.mark.servers


async def _stall_then_request(server: ServerProcess, safe: bool) -> bool:
    """Flush while the server is stopped, resume it, then: does a request get its answer?"""
    nc = await nats.connect(nats_url(server), allow_reconnect=False)
    try:
        server.pause()
        try:
            with pytest.raises(nats.errors.FlushTimeoutError):
                if safe:
                    await flush(nc, 0.3)
                else:
                    await nc.flush(timeout=0.3)
        finally:
            server.resume()
        await asyncio.sleep(0.3)  # the late PONG arrives
        try:
            await nc.jetstream(timeout=2).account_info()
        except (TimeoutError, nats.errors.TimeoutError):
            return False
        return True
    finally:
        await nc.close()


def test_nats_py_flush_timeout_kills_the_read_loop_and_ours_does_not(own_nats: ServerProcess):
    # The library bug this guards against (if it is fixed upstream, the first assert tells).
    assert asyncio.run(_stall_then_request(own_nats, safe=False)) is False
    assert asyncio.run(_stall_then_request(own_nats, safe=True)) is True
