"""The broadcaster as a consumer-framework sink (:mod:`services.consumers.runner.model`), for both
runtimes.

- Kubernetes: ``python -m services broadcaster`` — one process, one destination, one durable
  JetStream consumer ``broadcaster-<name>`` (``LIFTOFF_CONSUMER_NAME``).
- AWS: ``services.aws_lambda.broadcaster_handler`` — one function per destination with its own
  Kinesis event-source mapping; retries stop before the invocation's deadline and what is not
  finished is reported as batch-item failures (Kinesis delivers it again).

Outcome mapping: delivered/skipped → done (checkpoint); parked → the framework publishes the
event to the dead letter with the reason, then checkpoints; deferred → retry (no checkpoint).

Attempts across deliveries: retries happen in-process (the runtime keeps the batch's messages
alive meanwhile). An event the stream has already delivered ``LIFTOFF_BROADCAST_MAX_ATTEMPTS``
times (e.g. repeatedly deferred at a Lambda deadline) gets one last HTTP attempt and is then
parked, so the bound holds across restarts too.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from typing import Any

import httpx

from services.consumers.broadcaster.contract import (
    DEFAULT_BATCH_MAX_EVENTS,
    DEFAULT_BATCH_MAX_SECONDS,
    BroadcasterFunctionSettings,
    BroadcasterSettings,
)
from services.consumers.broadcaster.delivery import Broadcaster
from services.consumers.broadcaster.model import Outcome
from services.consumers.broadcaster.retry import RetryPolicy
from services.consumers.broadcaster.settings import BroadcasterConfig
from services.consumers.runner.model import DONE, Delivery, Park, Retry
from services.consumers.runner.model import Outcome as ConsumerOutcome
from services.observability import Counters

#: ``time.monotonic()`` by which the current Lambda invocation must return, or None.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "broadcaster_deadline", default=None
)


def lambda_deadline(context: Any, now: float | None = None) -> float | None:
    """The monotonic deadline for work in this invocation: the remaining time minus a margin
    for parking, checkpointing and returning (20 %, at least 3 s, at most 30 s)."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return None
    remaining = float(remaining_ms()) / 1000.0
    margin = min(max(3.0, remaining * 0.2), 30.0)
    return (time.monotonic() if now is None else now) + max(remaining - margin, 0.0)


class BroadcastSink:
    def __init__(self, settings: BroadcasterConfig) -> None:
        self.settings = settings
        self.client: httpx.AsyncClient | None = None
        self.broadcaster: Broadcaster | None = None

    @property
    def counters(self) -> Counters | None:
        """The broadcaster's delivery metrics, served on the consumer's ``/metrics``."""
        return self.broadcaster.counters if self.broadcaster is not None else None

    async def start(self) -> None:
        self.client = self.settings.http_client()
        self.broadcaster = self.settings.broadcaster(self.client)

    async def check_ready(self) -> None:
        # Readiness is about the stream; a failing destination must not take the pod out.
        return None

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[ConsumerOutcome]:
        assert self.broadcaster is not None, "start() first"
        deadline = DEADLINE.get()
        limit = self.settings.policy.max_attempts
        fresh = [i for i, d in enumerate(batch) if d.attempts < limit]
        last = [i for i, d in enumerate(batch) if d.attempts >= limit]
        outcomes: dict[int, Outcome] = {}
        for indices, policy in ((fresh, None), (last, _last_chance(self.settings.policy))):
            if not indices:
                continue
            results = await self.broadcaster.deliver(
                [batch[i].data for i in indices], deadline=deadline, policy=policy
            )
            outcomes.update(zip(indices, results, strict=True))
        return [_consumer_outcome(outcomes[i]) for i in range(len(batch))]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None


def _last_chance(policy: RetryPolicy) -> RetryPolicy:
    return RetryPolicy(1, policy.base, policy.cap, policy.retry_after_max)


def _consumer_outcome(outcome: Outcome) -> ConsumerOutcome:
    if outcome.status in ("delivered", "skipped"):
        return DONE
    if outcome.status == "parked":
        return Park(outcome.reason)
    return Retry(reason=outcome.reason)


# --- the processes ---------------------------------------------------------------------------


def load(
    settings: BroadcasterSettings[str] | BroadcasterFunctionSettings[str],
) -> BroadcasterConfig:
    """What the broadcaster runs with: the destination built, its secret read."""
    return BroadcasterConfig.load(settings.broadcast)


def run(settings: BroadcasterSettings[str]) -> int:
    """``python -m services broadcaster``: one destination, one durable consumer."""
    from services.consumers.runner.process import run_batches

    config = load(settings)
    name = config.destination.consumer_name
    bounds = (settings.batch_max_events, settings.batch_max_seconds)
    defaults = (DEFAULT_BATCH_MAX_EVENTS, DEFAULT_BATCH_MAX_SECONDS)
    # A destination added to a running stack starts at the stream's end: a third party (GA4
    # does not deduplicate) is never sent the retention's replay.
    return run_batches(
        settings.runtime, name, bounds, defaults, lambda: BroadcastSink(config), start_at_end=True
    )
