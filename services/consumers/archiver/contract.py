"""The archiver's runtime contract: ``python -m services archiver`` (JetStream) and
``services.aws_lambda.archiver_handler`` (Kinesis).

Both read the archive (:class:`~services.archive.contract.ArchiveAccess`) and the object
windows: ``LIFTOFF_ARCHIVE_WINDOW_EVENTS`` (JetStream: stream positions per object, default
:data:`DEFAULT_WINDOW_EVENTS`) and ``LIFTOFF_ARCHIVE_WINDOW_SECONDS`` (Kinesis: arrival
seconds per object, default :data:`DEFAULT_WINDOW_SECONDS`). The process also bounds its
batches (``LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS`` / ``_SECONDS``); on Lambda the event-source
mapping does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.archive.contract import ArchiveAccess, bucket_of
from services.consumers.runner.contract import (
    ConsumerRuntime,
    FunctionRuntime,
    consumer_process,
)
from services.contract import Integer, Number, V, group, variable

NAME = "archiver"
"""The durable consumer's default name."""
_BATCH_MAX_EVENTS = "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS"
_BATCH_MAX_SECONDS = "LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS"
_WINDOW_EVENTS = "LIFTOFF_ARCHIVE_WINDOW_EVENTS"
_WINDOW_SECONDS = "LIFTOFF_ARCHIVE_WINDOW_SECONDS"

DEFAULT_BATCH_MAX_EVENTS = 10000
DEFAULT_BATCH_MAX_SECONDS = 60.0
DEFAULT_WINDOW_EVENTS = 10000
DEFAULT_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Archiving(Generic[V]):
    """Where the archive is, and how events are grouped into objects."""

    archive: ArchiveAccess[V] = group(ArchiveAccess)
    window_events: int | None = variable(_WINDOW_EVENTS, Integer(1, 10_000_000))
    window_seconds: int | None = variable(_WINDOW_SECONDS, Integer(1, 3600))


@dataclass(frozen=True)
class ArchiverSettings(Generic[V]):
    """``python -m services archiver``: a JetStream consumer process."""

    runtime: ConsumerRuntime[V] = group(ConsumerRuntime)
    archiving: Archiving[V] = group(Archiving)
    batch_max_events: int | None = variable(_BATCH_MAX_EVENTS, Integer(1, 1_000_000))
    """Events per batch; default :data:`DEFAULT_BATCH_MAX_EVENTS`."""
    batch_max_seconds: float | None = variable(_BATCH_MAX_SECONDS, Number(0.01))
    """Age of the oldest event when a batch is handled; default
    :data:`DEFAULT_BATCH_MAX_SECONDS`."""


@dataclass(frozen=True)
class ArchiverFunctionSettings(Generic[V]):
    """``services.aws_lambda.archiver_handler``: the event-source mapping sizes its batches."""

    runtime: FunctionRuntime[V] = group(FunctionRuntime)
    archiving: Archiving[V] = group(Archiving)


PROCESS = consumer_process(ArchiverSettings, lambda s: bucket_of(s.archiving.archive))
FUNCTION = consumer_process(ArchiverFunctionSettings, lambda s: bucket_of(s.archiving.archive))
parse, parse_function = PROCESS.parse, FUNCTION.parse
