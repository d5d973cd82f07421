"""The runner reads a message's stream position from its ack subject without nats-py's
metadata objects: it must agree with nats-py for every ack-subject layout."""

from __future__ import annotations

from datetime import UTC

import pytest
from nats.aio.msg import Msg

from services.consumers.runner.jetstream import JetStreamRunner
from services.stream.dead_letters import JetStreamDeadLetter
from tests.services.consumers.conftest import settings

STAMP = 1764274743512345678  # ns


@pytest.mark.parametrize(
    "reply",
    [
        f"$JS.ACK.EVENTS.loader.3.1234567.99.{STAMP}.42",  # the server's usual layout
        f"$JS.ACK.hub.ACCHASH.EVENTS.loader.3.1234567.99.{STAMP}.42.rand0m",  # with a domain
        f"$JS.ACK._.ACCHASH.EVENTS.loader.3.1234567.99.{STAMP}.42",
        "$JS.ACK.EVENTS.loader.1.7.7.0.0",
    ],
)
def test_delivery_position_matches_nats_metadata(reply: str) -> None:
    runner = JetStreamRunner(
        "nats://127.0.0.1:4222/EVENTS",
        sink=None,  # type: ignore[arg-type]
        dead_letter=JetStreamDeadLetter("nats://127.0.0.1:4222/DEADLETTER"),
        settings=settings("loader"),
    )
    message = Msg(None, subject="events.web.track", reply=reply, data=b"{}")  # type: ignore[arg-type]
    delivery = runner._delivery(message)
    meta = Msg(None, reply=reply).metadata  # type: ignore[arg-type]
    assert delivery.position.partition == meta.stream == "EVENTS"
    assert delivery.position.sequence == meta.sequence.stream
    assert delivery.attempts == meta.num_delivered
    assert delivery.arrival == meta.timestamp.astimezone(UTC)
    assert delivery.arrival.tzinfo is not None
    assert delivery.subject == "events.web.track" and delivery.handle is message
