"""``python -m services ensure-stream``: create or update the JetStream event stream (every
partition) and the dead-letter stream, idempotently. A Kubernetes Job retries on a non-zero
exit; the error is said in one line."""

from __future__ import annotations

import asyncio
import logging

from services.contract import level_of
from services.observability import configure_logging
from services.stream import contract
from services.stream.base import StreamSettings
from services.stream.contract import EnsureStreamSettings

log = logging.getLogger("liftoff.cli")


def stream_settings(settings: EnsureStreamSettings[str]) -> StreamSettings:
    """What the event stream is given (per partition)."""
    return StreamSettings(
        retention_hours=settings.retention_hours or contract.DEFAULT_RETENTION_HOURS,
        replicas=settings.replicas or contract.DEFAULT_REPLICAS,
        duplicate_window_seconds=settings.duplicate_window_seconds
        or contract.DEFAULT_DUPLICATE_WINDOW_SECONDS,
        max_bytes=settings.max_bytes or contract.UNBOUNDED,
        consumers=settings.consumers,
    )


def load(settings: EnsureStreamSettings[str]) -> StreamSettings:
    """What the stream is given, the credentials file checked (nothing connected)."""
    from services.stream.jetstream import check_credentials

    check_credentials(settings.stream)
    return stream_settings(settings)


def run(settings: EnsureStreamSettings[str]) -> int:
    from services.stream.dead_letters import ensure_dead_letter_stream
    from services.stream.jetstream import PartitionCountChanged, check_credentials, ensure_stream

    configure_logging(level_of(settings.log_level))
    check_credentials(settings.stream)
    url = contract.stream_url(settings.stream, ("nats",))
    events = stream_settings(settings)
    try:
        outcome = asyncio.run(ensure_stream(url, events))
    except PartitionCountChanged as error:
        log.error("refused: the partition count changed", extra={"fields": {"error": str(error)}})
        return contract.EXIT_REFUSED
    except Exception as error:
        log.error("could not ensure the stream", extra={"fields": {"error": repr(error)}})
        return 1
    # Also the JetStream dead-letter stream consumers park events in (default
    # nats://<same servers>/DEADLETTER); nothing to do for sqs://.
    dead_letter = contract.dead_letter_or_default(settings.dead_letter_url, url)
    dead_letter_outcome = "not applicable"
    if dead_letter.startswith("nats://"):
        try:
            dead_letter_outcome = asyncio.run(
                ensure_dead_letter_stream(
                    dead_letter,
                    settings.dead_letter_retention_hours
                    or contract.DEFAULT_DEAD_LETTER_RETENTION_HOURS,
                    events.replicas,
                    settings.dead_letter_max_bytes or contract.DEFAULT_DEAD_LETTER_MAX_BYTES,
                )
            )
        except Exception as error:
            log.error(
                "could not ensure the dead-letter stream",
                extra={"fields": {"error": repr(error)}},
            )
            return 1
    log.info(
        "stream ensured",
        extra={"fields": {"outcome": outcome, "dead_letter_stream": dead_letter_outcome}},
    )
    return 0
