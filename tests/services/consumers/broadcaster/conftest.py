"""Fixtures: the local HTTP receiver playing the third party, and a way to run a broadcaster."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from services.consumers.broadcaster.model import Outcome
from services.consumers.broadcaster.retry import RetryPolicy
from services.consumers.broadcaster.settings import DestinationSpec
from tests.services.consumers.broadcaster.receiver import EventFactory, Receiver

SECRETS = {
    "webhook": "whsec-test-signing-secret",
    "mixpanel": "mp-project-token-123",
    "amplitude": "amp-api-key-456",
    "ga4": "ga4-api-secret-789",
}
T = TypeVar("T")
FAST = RetryPolicy(max_attempts=5, base=0.01, cap=0.05, retry_after_max=5.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def events() -> EventFactory:
    return EventFactory()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Like asyncio.run, but leaves the thread's current event loop alone (asyncio.run sets it
    to None, which breaks later tests that call asyncio.get_event_loop(), e.g. Pulumi's)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def spec(kind: str, url: str, **document: Any) -> DestinationSpec:
    settings: dict[str, str] = dict(document.pop("settings", {}))
    if kind == "webhook":
        settings.setdefault("url", f"{url}/hooks/liftoff")
    else:
        settings.setdefault("apiUrl", url)
    if kind == "ga4":
        settings.setdefault("measurementId", "G-TEST123")
    body = {"name": f"{kind}-test", "type": kind, "settings": settings, **document}
    return DestinationSpec.parse(json.dumps(body))


def deliver(
    destination: DestinationSpec,
    messages: Sequence[bytes],
    *,
    policy: RetryPolicy = FAST,
    stop_after: float | None = None,
    deadline_in: float | None = None,
) -> list[Outcome]:
    """Run one batch through a real Broadcaster with a real httpx client."""
    import time

    import httpx

    from services.consumers.broadcaster.delivery import Broadcaster

    async def main() -> list[Outcome]:
        async with httpx.AsyncClient(timeout=5) as client:
            broadcaster = Broadcaster(
                destination.name,
                destination.build(SECRETS[destination.type]),
                client,
                event_filter=destination.event_filter,
                policy=policy,
                rng=random.Random(7),
                keepalive_interval=0.05,
            )
            stop = asyncio.Event()
            if stop_after is not None:
                asyncio.get_running_loop().call_later(stop_after, stop.set)
            deadline = None if deadline_in is None else time.monotonic() + deadline_in
            return await broadcaster.deliver(messages, stop=stop, deadline=deadline)

    return run(main())
