"""``python -m services replay``: send archived events of a time window again, to one destination
or to the warehouse.

    python -m services replay --from 2026-11-27T10:00Z --to 2026-11-27T12:00Z \\
        [--source web] [--type track] [--event "Order Completed"] \\
        --target destination:mixpanel-eu | warehouse  [--rate 200] [--dry-run] \\
        [--progress FILE | s3://BUCKET/KEY] [--max-seconds N]

- **What**: the events of :mod:`.window` (``receivedAt`` in ``[from, to)``, the sources, types
  and track event names asked for), exactly as they were on the stream, messageIds kept: a
  destination that deduplicates does, and the warehouse's primary key on ``message_id`` keeps
  one row per event (the loader's own ``COPY`` + ``ON CONFLICT DO NOTHING``).
- **Destination**: through the broadcaster's delivery engine
  (:class:`~services.consumers.broadcaster.delivery.Broadcaster`) with the destination's
  filters, type mapping, retries and secret, one request at a time, batches one after another:
  the order per user of the walk is the order sent (a request retried keeps its place; a
  request split for size is sent part after part). What the destination refuses for good is
  counted as ``parked`` with its reason (not dead-lettered: the archive still has it).
- **Suppressed users** are never replayed: the collector's suppression list
  (``LIFTOFF_SUPPRESSION_*``) is read once, before anything is sent; a list that cannot be
  read stops the replay.
- **Rate**: ``--rate N`` events per second, over whole batches (a batch is at most N events).
- **Progress**: after each acknowledged batch the walk's cursor is appended to the progress file,
  or, for ``--progress s3://...`` (the default on the targets), written to that object at most
  once a second (:mod:`.progress`): the same command run again resumes after the last one (at
  least once: what was sent since is sent again). A finished replay run again sends nothing.
- **Time budget**: ``--max-seconds N`` stops after the batch in hand once N seconds have passed
  (the ops function's 15 minutes): progress saved, ``"finished": false``, exit 3.
- **Dry run**: counts what would be sent (and what the destination's filters would skip),
  sends nothing, writes no progress.

Prints a JSON summary; exit 0 when complete, 1 when events were parked, archive objects were
unreadable or the run failed, 2 for a configuration error, 3 when stopped by ``--max-seconds``
(otherwise fine: run the same command again to continue).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

from services.archive.contract import bucket_of
from services.archive.store import ArchiveLocation, s3_client
from services.consumers.archiver.contract import Archiving
from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.broadcaster import contract as broadcaster_contract
from services.consumers.broadcaster.settings import BroadcasterConfig, DestinationSpec
from services.consumers.loader.sink import Loader, LoaderConfig, row_of
from services.consumers.replay.contract import ReplaySettings
from services.consumers.replay.lines import ArchivedEvent
from services.consumers.replay.progress import ObjectProgress, Progress, Record
from services.consumers.replay.suppressed import suppressed_check, suppression
from services.consumers.replay.window import Cursor, Piece, Reading, Selection, parse_time, walk
from services.contract import ConfigError, level_of
from services.observability import configure_logging

log = logging.getLogger("liftoff.replay")

DEFAULT_BATCH_EVENTS = 500
WAREHOUSE_BATCH_EVENTS = 5000
MAX_REPORTED = 20
NOT_FINISHED = 3


@dataclass
class Summary:
    target: str
    dry_run: bool = False
    selected: int = 0
    """Events of the window and selection met after the resume point."""
    sent: int = 0
    """Delivered to the destination / rows inserted into the warehouse (0 in a dry run)."""
    would_send: int = 0
    """A dry run's count of what it would send (after the destination's filters)."""
    already_in_warehouse: int = 0
    """Warehouse: events whose messageId it already had (kept as they are)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """By reason: the destination's filters, types it has no use for."""
    suppressed: int = 0
    parked: int = 0
    parked_reasons: list[dict[str, str]] = field(default_factory=list)
    resumed_after: list[Any] | None = None
    progress: str | None = None
    """The progress file (run the same command with it to resume)."""
    objects: int = 0
    unreadable_lines: int = 0
    corrupt_objects: list[str] = field(default_factory=list)
    finished: bool = False
    """The whole window was walked (False: stopped by the time budget, or failed)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.parked or self.corrupt_objects)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def park(self, message_id: str, reason: str) -> None:
        self.parked += 1
        if len(self.parked_reasons) < MAX_REPORTED:
            self.parked_reasons.append({"messageId": message_id, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# --- targets -----------------------------------------------------------------------------------


class Target(Protocol):
    batch_events: int

    async def send(self, batch: list[ArchivedEvent], summary: Summary) -> None: ...

    async def close(self) -> None: ...


class DestinationTarget:
    """One destination, through the broadcaster's delivery engine, one request at a time."""

    def __init__(self, config: BroadcasterConfig, batch_events: int) -> None:
        config = dataclasses.replace(config, concurrency=1)  # in order: one request at a time
        self.batch_events = batch_events
        self.client = config.http_client()
        self.broadcaster = config.broadcaster(self.client)

    async def send(self, batch: list[ArchivedEvent], summary: Summary) -> None:
        outcomes = await self.broadcaster.deliver([event.data for event in batch])
        for event, outcome in zip(batch, outcomes, strict=True):
            if outcome.status == "delivered":
                summary.sent += 1
            elif outcome.status == "skipped":
                summary.skip(outcome.reason)
            elif outcome.status == "parked":
                summary.park(event.message_id, outcome.reason)
            else:  # deferred: not finished; stop before the cursor passes it
                raise RuntimeError(f"{event.message_id}: not delivered ({outcome.reason})")

    async def close(self) -> None:
        await self.client.aclose()


class WarehouseTarget:
    """The warehouse, through the loader's own rows and COPY (one transaction per batch)."""

    def __init__(self, config: LoaderConfig, batch_events: int) -> None:
        self.loader = Loader(config)
        self.batch_events = batch_events

    async def send(self, batch: list[ArchivedEvent], summary: Summary) -> None:
        rows = []
        for event in batch:
            row = row_of(event.delivery())
            if isinstance(row, str):
                summary.park(event.message_id, row)
            else:
                rows.append(row)
        if rows:
            handed = summary.parked
            inserted = self._load(rows, summary)
            summary.sent += inserted
            summary.already_in_warehouse += len(rows) - (summary.parked - handed) - inserted

    def _load(self, rows: list[tuple[Any, ...]], summary: Summary) -> int:
        """Rows PostgreSQL rejects are isolated by bisection and parked (as reconcile does)."""
        try:
            return self.loader._load(rows)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as error:
            if len(rows) == 1:
                summary.park(str(rows[0][0]), f"PostgreSQL: {error}".strip())
                return 0
        middle = len(rows) // 2
        return self._load(rows[:middle], summary) + self._load(rows[middle:], summary)

    async def close(self) -> None:
        self.loader._disconnect()
        self.loader._pool.shutdown(wait=False)


class DryRun:
    """Counts; for a destination, what its filters would skip (by reason)."""

    def __init__(self, spec: DestinationSpec | None, batch_events: int) -> None:
        self.filter = spec.event_filter if spec is not None else None
        self.batch_events = batch_events

    async def send(self, batch: list[ArchivedEvent], summary: Summary) -> None:
        if self.filter is None:
            summary.would_send += len(batch)
            return
        for event in batch:
            refusal = self.filter.refusal(event.delivery().event)
            if refusal is None:
                summary.would_send += 1
            else:
                summary.skip(f"filtered out ({refusal})")

    async def close(self) -> None:
        return None


# --- rate --------------------------------------------------------------------------------------


class Pace:
    """At most ``rate`` events per second, on average from the start (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start: float | None = None
        self.events = 0

    async def before(self, count: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        if self.start is None:
            self.start = now
        due = self.start + self.events / self.rate
        if due > now:
            await asyncio.sleep(due - now)
        self.events += count


# --- the run -----------------------------------------------------------------------------------


async def replay(
    pieces: Iterator[Piece],
    target: Target,
    summary: Summary,
    *,
    pace: Pace,
    progress: Record | None,
    suppressed: Callable[[ArchivedEvent], bool] | None = None,
    deadline: float | None = None,
) -> None:
    """Send the events of ``pieces`` in batches, each acknowledged before its cursor (its last
    event's) is recorded. A piece is taken as far as the batch has room, so the counts in a
    progress file are those of the events up to its cursor. Past ``deadline`` (monotonic), stop
    after the batch in hand, unfinished."""
    size = target.batch_events
    batch: list[ArchivedEvent] = []
    last: Cursor | None = None
    walked = True
    for piece in pieces:
        events, start = piece.events, 0
        while start < len(events):
            taken = events[start : start + size - len(batch)]
            start += len(taken)
            summary.selected += len(taken)
            if suppressed is not None:
                kept = [event for event in taken if not suppressed(event)]
                summary.suppressed += len(taken) - len(kept)
                taken = kept
            batch += taken
            if len(batch) >= size:  # its last event is this piece's
                await _flush(batch, target, summary, pace, progress, piece.cursor(batch[-1]))
                batch = []
                if _past(deadline):
                    return
        last = piece.cursor(events[-1])
        if _past(deadline):  # also when a sparse selection fills no batch for long
            walked = False
            break
    if batch and last is not None:
        await _flush(batch, target, summary, pace, progress, last)
    elif last is not None and progress is not None:
        progress.save(last, summary.as_dict())
    summary.finished = walked


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def _flush(
    batch: list[ArchivedEvent],
    target: Target,
    summary: Summary,
    pace: Pace,
    progress: Record | None,
    cursor: Cursor,
) -> None:
    await pace.before(len(batch))
    await target.send(batch, summary)
    if progress is not None:
        progress.save(cursor, summary.as_dict())


def target_of(
    text: str, settings: ReplaySettings[str], *, dry_run: bool, rate: float | None
) -> Target:
    batch = DEFAULT_BATCH_EVENTS
    if text == "warehouse":
        batch = WAREHOUSE_BATCH_EVENTS
        if dry_run:
            return DryRun(None, _paced(batch, rate))
        config = LoaderConfig.load(settings.warehouse, settings.warehouse_secret_arn)
        return WarehouseTarget(config, _paced(batch, rate))
    kind, _, name = text.partition(":")
    if kind != "destination" or not name:
        raise ConfigError(f"--target {text!r}: use destination:<name> or warehouse")
    document = broadcaster_contract.destination_of(settings.broadcast)
    if document.name != name:
        raise ConfigError(
            f"--target {text!r}: LIFTOFF_DESTINATION is the destination {document.name!r}"
        )
    if dry_run:
        return DryRun(DestinationSpec.of(document, settings.broadcast.api_url), _paced(batch, rate))
    return DestinationTarget(BroadcasterConfig.load(settings.broadcast), _paced(batch, rate))


def _paced(batch: int, rate: float | None) -> int:
    """A batch is at most one second of the rate, so the pace is even, not bursts."""
    return batch if rate is None else max(1, min(batch, int(rate)))


def run_window(
    settings: ReplaySettings[str],
    start: str,
    end: str,
    target: str,
    sources: list[str] | None = None,
    types: list[str] | None = None,
    events: list[str] | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    progress: str | None = None,
    max_seconds: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """One replay: its exit status (0 done, 1 failed or parked events, 3 stopped by
    ``max_seconds``) and its summary; a ConfigError before anything is sent."""
    started = time.monotonic()
    configure_logging(level_of(settings.log_level))
    selection = _selection(start, end, sources, types, events)
    _check_limits(rate, max_seconds, dry_run)
    identity = {**selection.describe(), "target": target}
    record = None if dry_run else progress_record(progress, identity, settings)
    summary = Summary(target=target, dry_run=dry_run)
    summary.progress = str(record.path) if record is not None else None
    chosen = target_of(target, settings, dry_run=dry_run, rate=rate)
    after = record.start(summary.as_dict()) if record is not None else None
    summary.resumed_after = list(after) if after else None
    deadline = None if max_seconds is None else started + max_seconds
    loop = asyncio.new_event_loop()
    try:
        run = _run(settings, selection, chosen, summary, record, rate, after, deadline)
        loop.run_until_complete(run)
        status = 1 if not summary.ok else 0 if summary.finished else NOT_FINISHED
    except ConfigError:
        raise
    except Exception as error:
        log.error("replay failed", extra={"fields": {"error": repr(error)}})
        status = 1
    finally:
        loop.run_until_complete(chosen.close())
        loop.close()
        if record is not None and not _closed(record):
            status = 1
    summary.seconds = round(time.monotonic() - started, 3)
    return status, summary.as_dict()


def _closed(record: Record) -> bool:
    """Whether the progress not yet written (S3: up to a second's) was; if not, the next run
    sends that part again (at least once) and this one fails saying so."""
    try:
        record.close()
    except Exception as error:
        log.error("replay progress not saved", extra={"fields": {"error": repr(error)}})
        return False
    return True


def _check_limits(rate: float | None, max_seconds: float | None, dry_run: bool) -> None:
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate {rate}: use a number of events per second above 0")
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"--max-seconds {max_seconds}: use a number of seconds above 0")
    if max_seconds is not None and dry_run:
        raise ConfigError("--max-seconds with --dry-run: a dry run keeps no progress to resume")


def progress_record(
    location: str | None, identity: dict[str, Any], settings: ReplaySettings[str]
) -> Record:
    """``--progress``'s file or S3 object; by default a file here, or on the targets (whose
    disk does not outlive the run) an object in the archive bucket."""
    if location is None and settings.progress_in_archive:
        location = ObjectProgress.default_url(bucket_of(settings.archive), identity)
    if location is None or not location.startswith("s3://"):
        return Progress(Path(location or Progress.default_path(identity)), identity)
    client = s3_client(ArchiveLocation.of(settings.archive))
    return ObjectProgress(location, identity, client)


async def _run(
    settings: ReplaySettings[str],
    selection: Selection,
    target: Target,
    summary: Summary,
    progress: Record | None,
    rate: float | None,
    after: Cursor | None,
    deadline: float | None,
) -> None:
    archive = ArchiverConfig.load(Archiving(archive=settings.archive))
    reading = Reading()
    events = walk(s3_client(archive), archive, selection, reading, after)
    pace = Pace(None if summary.dry_run else rate)
    listed = await suppression(settings)
    try:
        await replay(
            events,
            target,
            summary,
            pace=pace,
            progress=progress,
            suppressed=suppressed_check(listed),
            deadline=deadline,
        )
    finally:
        summary.objects, summary.unreadable_lines = reading.objects, reading.unreadable
        summary.corrupt_objects = list(reading.corrupt or [])
        if listed is not None:
            await listed.close()


def _selection(
    start: str,
    end: str,
    sources: list[str] | None,
    types: list[str] | None,
    events: list[str] | None,
) -> Selection:
    selection = Selection(
        parse_time("--from", start),
        parse_time("--to", end),
        tuple(sorted(set(sources or ()))),
        tuple(sorted(set(types or ()))),
        tuple(sorted(set(events or ()))),
    )
    if selection.end <= selection.start:
        raise ConfigError(f"--to {end!r} must be after --from {start!r}")
    return selection
