"""An archived line back into the stream event it was (services/consumers/replay/window.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.consumers.archiver.sink import archive_line
from services.consumers.replay.window import stream_delivery
from services.consumers.runner.model import Delivery, Position, decode
from tests.services.consumers.conftest import event


def archived(document: dict, partition: str = "EVENTS-1", sequence: int = 42) -> bytes:
    delivery = Delivery(
        data=json.dumps(document).encode(),
        position=Position("jetstream", partition, sequence),
        arrival=datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert decode(delivery) is None
    return archive_line(delivery)


@pytest.mark.parametrize(
    "properties",
    [
        {"index": 1},
        # A client's own "position" objects, even one shaped like the archiver's: left alone.
        {"position": {"partition": "EVENTS-1", "sequence": "42"}},
        {"a": {"x": 1, "position": {"partition": "EVENTS-1", "sequence": "42"}}},
        {"text": ',"position":{"partition":"EVENTS-1","sequence":"42"}}'},
    ],
)
def test_the_line_becomes_the_stream_event_again(properties: dict) -> None:
    document = {**event(7), "properties": properties}
    delivery = stream_delivery(archived(document))
    assert delivery is not None
    assert json.loads(delivery.data) == document
    assert (delivery.position.partition, delivery.position.sequence) == ("EVENTS-1", 42)
    assert delivery.message_id == "m-7" and delivery.received_at.year == 2026


def test_a_line_that_is_not_an_archived_event_is_refused() -> None:
    assert stream_delivery(b'{"messageId": "m-1"}') is None
    assert stream_delivery(b"not json") is None
    line = archived(event(1)).replace(b'"type":"track"', b'"type":"nonsense"')
    assert stream_delivery(line) is None
