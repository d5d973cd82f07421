"""An archived line back into the stream event it was (services/consumers/replay/lines.py), and
the walk's selection of them (window.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.consumers.archiver.sink import archive_line
from services.consumers.replay.lines import ArchivedEvent, archived_event, stream_delivery
from services.consumers.replay.window import Selection
from services.consumers.runner.model import Delivery, Position, decode
from tests.services.consumers.conftest import event


def on_stream(document: dict[str, Any], partition: str, sequence: int) -> Delivery:
    delivery = Delivery(
        data=json.dumps(document).encode(),
        position=Position(
            "kinesis" if partition.startswith("shardId-") else "jetstream", partition, sequence
        ),
        arrival=datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert decode(delivery) is None
    return delivery


def archived(document: dict[str, Any], partition: str = "EVENTS-1", sequence: int = 42) -> bytes:
    return archive_line(on_stream(document, partition, sequence))


ODD_PROPERTIES = [
    {"index": 1},
    # A client's own "position" objects, even ones shaped like the archiver's: left alone.
    {"position": {"partition": "EVENTS-1", "sequence": "42"}},
    {"a": {"x": 1, "position": {"partition": "EVENTS-1", "sequence": "42"}}},
    {"text": ',"position":{"partition":"EVENTS-1","sequence":"42"}}'},
    {"a": {"x": 1, "position": {"partition": "other", "sequence": "1"}}},
]


@pytest.mark.parametrize("properties", ODD_PROPERTIES)
def test_the_line_becomes_the_stream_event_again(properties: dict[str, Any]) -> None:
    document = {**event(7), "properties": properties}
    delivery = stream_delivery(archived(document))
    assert delivery is not None
    assert json.loads(delivery.data) == document
    assert (delivery.position.partition, delivery.position.sequence) == ("EVENTS-1", 42)
    assert delivery.message_id == "m-7" and delivery.received_at.year == 2026


@pytest.mark.parametrize(
    "document",
    [
        *({**event(7), "properties": properties} for properties in ODD_PROPERTIES),
        # The liftoff block before the properties (the client's position object comes last).
        {
            "liftoff": {"source": "ios", "schema": 1},
            **event(8),
            "properties": {"a": {"position": {"partition": "EVENTS-1", "sequence": "42"}}},
        },
        # A field of an unusual type: the general path, same event.
        {**event(9), "userId": 12345, "event": {"not": "a name"}},
        {**event(10, received_at="2026-11-27T11:19:03.512+01:00"), "type": "identify"},
    ],
)
@pytest.mark.parametrize(
    ("partition", "sequence"),
    [("EVENTS-1", 42), ('EV}"EN\\TS', 7), ("shardId-000000000001", 49650000000000000000001)],
)
def test_an_archived_event_is_the_stream_event_and_the_runner_decodes_it_alike(
    document: dict[str, Any], partition: str, sequence: int
) -> None:
    read = archived_event(archived(document, partition, sequence))
    original = on_stream(document, partition, sequence)
    assert isinstance(read, ArchivedEvent)
    assert json.loads(read.data) == document  # the archiver's position, only, removed
    assert (read.partition, read.sequence) == (partition, sequence)
    fields = ("message_id", "source", "type", "received_at")
    assert [getattr(read, f) for f in fields] == [getattr(original, f) for f in fields]
    assert read.name == document["event"]
    delivery = read.delivery()  # what a target that needs it gets: the runner's decoding
    assert delivery.data == read.data and delivery.position == original.position
    assert [getattr(delivery, f) for f in fields] == [getattr(original, f) for f in fields]
    assert delivery.envelope == decode_envelope(read.data)
    assert delivery.event == document and delivery.arrival == original.received_at


def decode_envelope(data: bytes) -> Any:
    delivery = Delivery(data=data, position=Position("jetstream", "x", 1), arrival=datetime.now())
    assert decode(delivery) is None
    return delivery.envelope


def test_the_bytes_are_the_streams_when_the_position_is_unambiguous() -> None:
    """The common line: the archiver's member cut out, nothing else touched (not re-encoded)."""
    original = json.dumps({**event(3), "properties": {"x": 1.50, "y": "é"}}).encode()
    line = archive_line(on_stream(json.loads(original), "EVENTS-0", 3))
    read = archived_event(line)
    assert read is not None
    assert read.data == line.replace(b',"position":{"partition":"EVENTS-0","sequence":"3"}', b"")


def test_a_line_that_is_not_an_archived_event_is_refused() -> None:
    for line in (b'{"messageId": "m-1"}', b"not json", b"\xff\xfe", b"[1, 2]"):
        assert stream_delivery(line) is None and archived_event(line) is None
    for broken in (
        archived(event(1)).replace(b'"type":"track"', b'"type":"nonsense"'),
        archived(event(1)).replace(b'"source":"web"', b'"source":"a/b"'),
        archived(event(1)).replace(b'"receivedAt":"2026', b'"receivedAt":"yesterday'),
        archived(event(1)).replace(b'"messageId":"m-1"', b'"messageId":""'),
        archived(event(1)).replace(b'"sequence":"42"', b'"sequence":"4x2"'),
        archived(event(1)).replace(b',"position":{"partition":"EVENTS-1","sequence":"42"}', b""),
    ):
        assert archived_event(broken) is None, broken


def test_the_selection_takes_the_window_the_types_the_names_and_what_follows_a_sequence() -> None:
    names = ["Order Completed", "Signed Up", {"odd": True}]
    events = [
        archived_event(
            archived({**event(i, received_at=f"2026-11-27T10:{i:02d}:00Z"), "event": n}, sequence=i)
        )
        for i, n in enumerate(names * 4)
    ]
    assert all(e is not None for e in events)
    read = [e for e in events if e is not None]
    start, end = (
        datetime(2026, 11, 27, 10, 2, tzinfo=UTC),
        datetime(2026, 11, 27, 10, 9, tzinfo=UTC),
    )
    selection = Selection(start, end, events=("Signed Up", "Order Completed"))
    chosen = selection.chosen(read, None)
    assert [e.message_id for e in chosen] == ["m-3", "m-4", "m-6", "m-7"]
    assert [e.message_id for e in selection.chosen(read, after=4)] == ["m-6", "m-7"]
    every = Selection(start, end, types=("page",))
    assert every.chosen(read, None) == []
