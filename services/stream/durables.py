"""The durable consumers of the event stream: which ones the stack declares, and the removal of
liftoff's durables it no longer declares (a destination taken out of the stack).

A durable consumer nobody reads keeps its position while the stream moves on: its lag grows
until the lag alerts fire for good. ``ensure-stream`` is given the declared set
(``LIFTOFF_STREAM_CONSUMERS``) and, on every partition stream:

1. records it in the stream's metadata (:data:`DECLARED_KEY`), so that a consumer process still
   running for a removed destination (its Deployment is deleted only after the setup Job ran)
   does not re-create the durable it finds gone (:func:`declares`);
2. deletes each durable liftoff owns (:func:`services.stream.contract.owned_by_liftoff`, by
   name) that the set does not hold. Durables of any other name are never touched;
3. creates the declared durables that are missing (:func:`create_missing`), so that where a
   new one starts is the setup's moment, before the collector rolls out: a destination
   added to a running stack gets every event from then on, none from before
   (:func:`services.stream.contract.starts_at_end`), and on a new stack no event accepted
   before a consumer's first start is missed. The consumer process adjusts the rest of the
   durable's settings (ack wait, max ack pending) to its own when it binds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.stream.contract import owned_by_liftoff, starts_at_end

DECLARED_KEY = "liftoff.dev/consumers"
"""The stream metadata key holding the declared durable consumers, comma-separated."""


def declared_metadata(
    current: Mapping[str, str] | None, consumers: Sequence[str] | None
) -> dict[str, str] | None:
    """The liftoff metadata a stream is given: the declared set when known, else whatever it
    holds already (None: none). The server's own keys (``_nats.*``) are its business."""
    if consumers is not None:
        return {DECLARED_KEY: ",".join(sorted(set(consumers)))}
    kept = (current or {}).get(DECLARED_KEY)
    return {DECLARED_KEY: kept} if kept is not None else None


def declares(metadata: Mapping[str, str] | None, consumer: str) -> bool:
    """Whether a stream with this metadata may have the durable ``consumer``: yes when no set
    was recorded (a stream set up without one, or by hand) or when the set holds it."""
    recorded = (metadata or {}).get(DECLARED_KEY)
    if recorded is None:
        return True
    return consumer in recorded.split(",")


async def remove_undeclared(
    js: JetStreamContext, stream: str, consumers: Sequence[str]
) -> list[str]:
    """Delete the durables of ``stream`` liftoff owns and ``consumers`` does not name; returns
    their names, sorted."""
    names: list[str] = []
    while True:  # the server answers in pages (256 consumers each)
        page = await js.consumers_info(stream, offset=len(names))
        names += [info.name or info.config.durable_name or "" for info in page]
        if not page:
            break
    wanted = set(consumers)
    removed = sorted(n for n in set(names) if owned_by_liftoff(n) and n not in wanted)
    for name in removed:
        await js.delete_consumer(stream, name)
    return removed


async def create_missing(
    js: JetStreamContext, stream: str, subjects: str, consumers: Sequence[str]
) -> list[str]:
    """Create the durables of ``consumers`` that ``stream`` lacks, reading ``subjects``;
    returns their names, sorted. An existing durable is left as it is (its position)."""
    existing: list[str] = []
    while True:
        page = await js.consumers_info(stream, offset=len(existing))
        existing += [info.name or info.config.durable_name or "" for info in page]
        if not page:
            break
    created = sorted(set(consumers) - set(existing))
    for name in created:
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=name,
                deliver_policy=DeliverPolicy.NEW if starts_at_end(name) else DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                max_deliver=-1,
                filter_subject=subjects,
            ),
        )
    return created
