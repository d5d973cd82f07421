"""Before a delete cleans a store, the events already on the stream reach it.

An event accepted before the suppression can still be in a consumer's batch when the delete
runs (the archiver's window, the loader's batch age, a broadcaster's batch): written after the
delete, it would bring the user back. So each target first waits until the durable consumer
that writes its store (``archiver`` → archive, ``loader`` → warehouse, ``broadcaster-<name>`` →
that destination) has acknowledged every message each partition stream held when the target
started — the consumers acknowledge only once their output is durable — or has nothing left
pending. A durable that does not exist has nothing in flight. Past ``settle_seconds`` the
target fails with the consumers still behind as its reason (run it again: it resumes).

JetStream only: on Kinesis (AWS) the consumer functions' positions are not readable this way;
there the README says to run the delete again after the consumers' batch windows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from services.stream.address import JetStreamAddress, parse_stream_url
from services.stream.jetstream import credentials_in

WRITERS = {"warehouse": "loader", "archive": "archiver"}
"""The durable consumer that writes each target's store (a destination's: its broadcaster)."""
POLL_SECONDS = 0.5


class ConsumersBehind(Exception):
    """A consumer had not caught up within the time allowed."""


@dataclass(frozen=True)
class Position:
    stream: str
    durable: str
    mark: int
    """The stream's last sequence when the wait started."""
    acknowledged: int
    """The durable's acknowledged floor (stream sequence)."""
    pending: int

    @property
    def caught_up(self) -> bool:
        return self.acknowledged >= self.mark or self.pending == 0

    def __str__(self) -> str:
        return (
            f"{self.durable} on {self.stream} has acknowledged up to {self.acknowledged} of"
            f" {self.mark} ({self.pending} pending)"
        )


def writer_of(target: str) -> str | None:
    """The durable consumer whose output ``target`` deletes from (None: no stream writer)."""
    if target.startswith("destination:"):
        return "broadcaster-" + target.removeprefix("destination:")
    return WRITERS.get(target)


async def _positions(js: object, marks: dict[str, int], durable: str) -> list[Position]:
    from nats.js.errors import NotFoundError

    found = []
    for stream, mark in marks.items():
        try:
            info = await js.consumer_info(stream, durable)  # type: ignore[attr-defined]
        except NotFoundError:
            continue  # no such durable: nothing of it in flight
        pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        found.append(Position(stream, durable, mark, floor, pending))
    return found


def _is_partition(name: str, stream: str) -> bool:
    """``stream`` itself or one of its partition streams (``EVENTS-3``): found on the server,
    so the wait needs no partition count (the stream URL of a pod may not carry one)."""
    index = name.removeprefix(f"{stream}-")
    return name == stream or (index != name and index.isdigit())


async def _wait(
    address: JetStreamAddress, credentials: str | None, durable: str, seconds: float
) -> dict[str, object]:
    import nats

    nc = await nats.connect(
        list(address.servers), **credentials_in(credentials), allow_reconnect=False
    )
    try:
        js = nc.jetstream(timeout=5)
        marks = {
            info.config.name: int(info.state.last_seq)
            for info in await js.streams_info()
            if info.config.name and _is_partition(info.config.name, address.stream)
        }
        deadline = time.monotonic() + seconds
        while True:
            positions = await _positions(js, marks, durable)
            behind = [p for p in positions if not p.caught_up]
            if not behind:
                return {"durable": durable, "caught_up_to": marks}
            if time.monotonic() >= deadline:
                reasons = "; ".join(map(str, behind))
                raise ConsumersBehind(f"not caught up within {seconds:g} s: {reasons}")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await nc.close()


def wait_for_writer(
    stream_url: str | None, credentials: str | None, target: str, seconds: float
) -> dict[str, object] | None:
    """Wait until the writer of ``target`` has acknowledged what the stream holds now; what it
    caught up to (None: not a JetStream stream, or a target no consumer writes)."""
    durable = writer_of(target)
    if durable is None or not stream_url or not stream_url.startswith("nats://"):
        return None
    address = parse_stream_url(stream_url)
    assert isinstance(address, JetStreamAddress)
    return asyncio.run(_wait(address, credentials, durable, seconds))
