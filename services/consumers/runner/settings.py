"""What a JetStream consumer runner runs with (:mod:`services.consumers.runner.jetstream`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerSettings:
    consumer_name: str
    batch_max_events: int
    batch_max_seconds: float
    ack_wait_seconds: float = 30.0
    shutdown_grace_seconds: float = 20.0
    health_port: int | None = 8081
    health_host: str = "0.0.0.0"
    fetch_max: int = 10_000
    """The most messages one pull request asks for (requests never exceed the batch size)."""
    pull_expires_seconds: float = 1.0
    """How long one pull request waits on the server for messages before it expires."""
    liveness_seconds: float = 120.0
    lag_interval_seconds: float = 15.0
    """How often the lag of every durable consumer of the stream is read from the server."""
    start_at_end: bool = False
    """Create the durable delivering only what arrives after its creation (a broadcaster);
    default: everything the stream holds (the archive and the warehouse see every event)."""
    close_when_caught_up: bool = False
    """Module docstring: for the loader (small batches at once), not the archiver (objects)."""
    buffer_bytes: int | None = None
    """The most this runner holds of messages at once (delivered, not yet acknowledged), as
    :mod:`services.consumers.runner.budget` counts them; a process with several partition
    runners splits its budget between them. None: bounded by the batch size only."""

    @property
    def max_ack_pending(self) -> int:
        return max(1000, 2 * self.batch_max_events)
