"""How ``replay`` (services/consumers/replay/command.py) cuts the walk's pieces into batches:
checked against the event-by-event rule it must keep (a batch is flushed when it is full, its
last event's cursor recorded after the target took it; suppressed events counted, not sent;
the final cursor is the walk's last event, sent or not)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from services.consumers.archiver.sink import archive_line
from services.consumers.replay.command import Pace, Summary, replay
from services.consumers.replay.lines import ArchivedEvent, archived_event
from services.consumers.replay.progress import Progress
from services.consumers.replay.window import Cursor, Piece
from tests.services.consumers.conftest import event
from tests.services.consumers.replay.test_window import on_stream


class Recording:
    def __init__(self, batch_events: int) -> None:
        self.batch_events = batch_events
        self.batches: list[list[str]] = []

    async def send(self, batch: list[ArchivedEvent], summary: Summary) -> None:
        assert 0 < len(batch) <= self.batch_events
        self.batches.append([e.message_id for e in batch])
        summary.sent += len(batch)

    async def close(self) -> None:
        return None


def walk_of(sizes: list[int]) -> list[Piece]:
    """Pieces of these sizes over two hours and two partitions (sequences growing per piece)."""
    pieces, index = [], 0
    for number, size in enumerate(sizes):
        hour, partition = ("2026-11-27T10", "2026-11-27T11")[number // 3], f"E-{number % 2}"
        events = []
        for _ in range(size):
            line = archive_line(on_stream(event(index), partition, 100 * number + len(events)))
            read = archived_event(line)
            assert read is not None
            events.append(read)
            index += 1
        pieces.append(Piece(hour, events))
    return pieces


def expected(pieces: list[Piece], size: int, suppressed: set[str]) -> tuple[list, list]:
    """The rule, event by event: (batches, progress records (cursor, selected, suppressed))."""
    batches: list[list[str]] = []
    records: list[tuple[list[Any], int, int]] = []
    batch: list[str] = []
    selected = skipped = 0
    last: Cursor | None = None
    for piece in pieces:
        for item in piece.events:
            selected += 1
            last = piece.cursor(item)
            if item.message_id in suppressed:
                skipped += 1
                continue
            batch.append(item.message_id)
            if len(batch) == size:
                batches.append(batch)
                records.append((list(last), selected, skipped))
                batch = []
    if last is not None:
        if batch:
            batches.append(batch)
        records.append((list(last), selected, skipped))
    return batches, records


@pytest.mark.parametrize(
    ("sizes", "batch_events", "suppressed"),
    [
        ([7, 3, 12, 1, 5, 9], 5, set()),
        ([7, 3, 12, 1, 5, 9], 5, {"m-4", "m-5", "m-9", "m-36"}),  # m-36: the last event
        ([4, 4, 4], 4, {"m-0", "m-1", "m-2", "m-3"}),  # a whole piece suppressed
        ([2, 11, 6], 1, {"m-7"}),  # --rate 1: batches of one
        ([30], 500, {"m-29"}),
    ],
)
def test_batches_and_progress_follow_the_events_one_by_one(
    tmp_path: Path, sizes: list[int], batch_events: int, suppressed: set[str]
) -> None:
    pieces = walk_of(sizes)
    target, summary = Recording(batch_events), Summary(target="test")
    progress = Progress(tmp_path / "progress.json", {"test": True})
    asyncio.run(
        replay(
            iter(pieces),
            target,
            summary,
            pace=Pace(None),
            progress=progress,
            suppressed=lambda e: e.message_id in suppressed,
        )
    )
    progress.close()
    batches, records = expected(pieces, batch_events, suppressed)
    assert target.batches == batches
    lines = [json.loads(line) for line in (tmp_path / "progress.json").read_text().splitlines()]
    found = [(r["after"], r["summary"]["selected"], r["summary"]["suppressed"]) for r in lines]
    assert found == records
    assert (summary.selected, summary.suppressed) == (sum(sizes), len(suppressed))
    assert summary.sent == sum(sizes) - len(suppressed)
