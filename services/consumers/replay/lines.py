"""An archived line back into the event the stream carried, contract-checked.

The archiver's ``archive_line`` (:mod:`services.consumers.archiver.sink`) adds one thing to the
stream event: ``liftoff.position`` (``{"partition": ..., "sequence": "..."}``), appended as the
last member of ``liftoff``. A replay sends the event without it.

Most lines take one typed decoding pass of the few fields the stream contract checks, plus the
position: it is both the contract check (that of the runner's
:func:`~services.consumers.runner.model.decode`) and the source of the position, whose bytes are
then cut out of the line. The walk carries the result as an :class:`ArchivedEvent`, lighter
than the runner's ``Delivery``, which is built only for a target that reads more than the bytes
(:meth:`ArchivedEvent.delivery`). Lines with a field of an unusual type or an ambiguous position
take :func:`stream_delivery`: the position taken out of the decoded top level, then the
runner's ``decode``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from services.consumers.runner.model import Delivery, Position, decode, parse_timestamp
from services.events.model import EVENT_TYPES


class ArchivedEvent(msgspec.Struct, frozen=True, gc=False):
    """One archived event as the replay's walk carries it: the stream bytes and what the walk
    and the selection read. Not tracked by the garbage collector (nothing it holds can refer
    back to it, so it is in no cycle): a walk allocates one per event."""

    partition: str
    sequence: int
    data: bytes
    """The event exactly as the stream carried it (no ``liftoff.position``)."""
    message_id: str
    type: str
    source: str
    received_at: datetime
    name: Any
    """The track event's ``event`` (for ``--event``)."""

    def delivery(self) -> Delivery:
        """The event as a consumer receives it from the stream, decoded by the runner's
        :func:`decode` (for a target that reads more than the bytes: the loader's rows, the
        destination filters)."""
        kind = "kinesis" if self.partition.startswith("shardId-") else "jetstream"
        position = Position(kind, self.partition, self.sequence)
        delivery = Delivery(data=self.data, position=position, arrival=_NO_ARRIVAL)
        problem = decode(delivery)
        assert problem is None, problem  # it passed the same check when it was read
        delivery.arrival = delivery.received_at
        return delivery


class _Position(msgspec.Struct, gc=False):
    partition: str
    sequence: str


class _Liftoff(msgspec.Struct, gc=False):
    source: str | None = None
    position: _Position | None = None


class _Head(msgspec.Struct, rename="camel", gc=False):
    """What the contract check and the walk read of an archived line (one typed pass: a field
    of another type fails it, and the line takes the general path)."""

    message_id: str | None = None
    type: str | None = None
    received_at: str | None = None
    event: str | None = None
    liftoff: _Liftoff | None = None


_head = msgspec.json.Decoder(_Head)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_object = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
_NO_ARRIVAL = datetime.min.replace(tzinfo=UTC)
_MARK = b',"position":'
_OPENING = _MARK + b'{"partition":'
"""How ``archive_line`` writes the position (msgspec's encoding of a dict: no spaces, its keys in
order). These bytes can only be JSON structure (inside a string the quotes are escaped), so when
the line holds them once, they are the archiver's."""


def archived_event(line: bytes) -> ArchivedEvent | None:
    """An archived line as the stream event it was, contract-checked (the checks of
    :func:`~services.consumers.runner.model.decode`); None when it is not an event."""
    try:
        head = _head.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _slowly(line)
    liftoff, message_id, event_type = head.liftoff, head.message_id, head.type
    source = liftoff.source if liftoff is not None else None
    received_at = parse_timestamp(head.received_at)
    if (
        liftoff is None
        or liftoff.position is None
        or not message_id
        or event_type not in EVENT_TYPES
        or not source
        or "/" in source
        or "=" in source
        or received_at is None
        or not liftoff.position.sequence.isdecimal()
        or (data := _without_position(line, liftoff.position)) is None
    ):
        return _slowly(line)  # the general path: it decides, and words nothing differently
    position = liftoff.position
    return ArchivedEvent(
        position.partition,
        int(position.sequence),
        data,
        message_id,
        event_type,
        source,
        received_at,
        head.event,
    )


def _without_position(line: bytes, position: _Position) -> bytes | None:
    """The line without the archiver's ``,"position":{...}`` when it is unambiguous: its
    opening bytes occur once, followed by the decoded position's own encoding, closing the
    object it is the last member of."""
    start = line.find(_OPENING)
    if start < 0 or line.find(_OPENING, start + 1) >= 0:
        return None
    member = _MARK + _encoder.encode(position)
    end = start + len(member)
    if not line.startswith(member, start) or line[end : end + 1] != b"}":
        return None
    return line[:start] + line[end:]


def _slowly(line: bytes) -> ArchivedEvent | None:
    delivery = stream_delivery(line)
    if delivery is None:
        return None
    return ArchivedEvent(
        delivery.position.partition,
        delivery.position.sequence,
        delivery.data,
        delivery.message_id,
        delivery.type,
        delivery.source,
        delivery.received_at,
        delivery.event.get("event"),
    )


def stream_delivery(line: bytes) -> Delivery | None:
    """An archived line as the stream carried it (without ``liftoff.position``), through the
    runner's :func:`decode`; None when it is not an event. The position is cut out of the bytes
    when the line holds ``,"position":{`` once; otherwise the line's top level is decoded and
    encoded again without it."""
    stripped = _cut_position(line)
    if stripped is not None:
        data, position = stripped
        delivery = _checked(data, position.partition, position.sequence)
        if delivery is not None:
            return delivery
    try:
        fields = _fields.decode(line)
        liftoff = _object.decode(fields["liftoff"])
        found = liftoff.pop("position")
        partition, sequence = str(found["partition"]), str(found["sequence"])
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return None
    fields["liftoff"] = msgspec.Raw(_encoder.encode(liftoff))
    return _checked(_encoder.encode(fields), partition, sequence)


_position = msgspec.json.Decoder(_Position)


def _cut_position(line: bytes) -> tuple[bytes, _Position] | None:
    if line.count(_MARK + b"{") != 1:
        return None
    start = line.find(_MARK + b"{")
    end = line.find(b"}", start) + 1
    try:
        position = _position.decode(line[start + len(_MARK) : end])
    except msgspec.DecodeError:
        return None  # a "}" inside the partition name: the top level is decoded instead
    if line[end : end + 1] != b"}":
        return None  # not the last member of its object: not the archiver's
    return line[:start] + line[end:], position


def _checked(data: bytes, partition: str, sequence: str) -> Delivery | None:
    try:
        number = int(sequence)
    except ValueError:
        return None
    kind = "kinesis" if partition.startswith("shardId-") else "jetstream"
    delivery = Delivery(data=data, position=Position(kind, partition, number), arrival=_NO_ARRIVAL)
    if decode(delivery) is not None:
        return None
    delivery.arrival = delivery.received_at
    return delivery
