"""The partition count a Kubernetes stack declares: its configured one on a new stack, the
deployed one on a stack whose stream exists.

A partition count is fixed once the streams exist (changing it moves users to other streams
while their older events are still unconsumed in the old ones). Its default changed under
stacks (1 before, 8 with 3 or more replicas now), so the program reads back the count this
stack last deployed — the URL in its own `stream` output, read through a StackReference to the
stack itself, as the Postgres major is — and decides before anything is declared:

- a new stack (no output): the configured count (or the default);
- `partitions` unset: the deployed count, whatever the default now is;
- `partitions` set to the deployed count: that;
- `partitions` set to another count: refused (`PartitionCountChange`, naming the procedure),
  unless `repartitionFrom` names the deployed count — the one update after the procedure.

Deterministic under `pulumi preview`: the reference reads the outputs of the stack's last
update, which a preview does not change; the refusal fails the preview, before any change.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components.stream.settings import KubernetesStream
from services.stream.address import InvalidStreamUrl, JetStreamAddress

STREAM_OUTPUT = "stream"
"""The stack output holding the stream's URL (`?partitions=N` when N > 1), in every release."""
REPARTITION_PROCEDURE = "README.md, 'Partitions and a full stream' (Changing stream.partitions)"


class PartitionCountChange(ValueError):
    """liftoff:stream.partitions names another count than the stack's live streams have."""


def deployed_partitions(reference: pulumi.StackReference) -> pulumi.Output[int | None]:
    """The partition count this stack last deployed (read through `reference`, the stack
    itself: `components.deployed.own_stack`), or None on a stack that never ran."""
    return reference.get_output(STREAM_OUTPUT).apply(partitions_in_output)


def partitions_in_output(output: Any) -> int | None:
    """The partition count in a `stream` output (`{"url": "nats://…?partitions=N", …}`)."""
    url = output.get("url") if isinstance(output, dict) else None
    if not isinstance(url, str) or not url.startswith("nats://"):
        return None
    try:
        return JetStreamAddress.parse(url).partitions
    except InvalidStreamUrl:
        return None


def partitions_to_declare(deployed: int | None, settings: KubernetesStream) -> int:
    """The count to declare (see the module); `PartitionCountChange` when it is refused."""
    wanted = settings.partitions
    if deployed is None or deployed == wanted:
        return wanted
    if not settings.partitions_chosen:
        return deployed
    if settings.repartition_from == deployed:
        return wanted
    raise PartitionCountChange(
        f"liftoff:stream.partitions: got {wanted}; allowed: {deployed}, the partition count of "
        "this stack's live streams. Changing it would move users to other streams while their "
        f"older events are still unconsumed, i.e. reorder them. To change it, follow "
        f"{REPARTITION_PROCEDURE} (stop ingestion, let every consumer drain, delete the old "
        f"streams), then set partitions: {wanted} with repartitionFrom: {deployed} for that "
        "one update."
    )


def keep_note(deployed: int | None, settings: KubernetesStream) -> str | None:
    """What a preview says when an unset `partitions` keeps the deployed count although the
    default for a new stream differs (None: nothing to say)."""
    if deployed is None or settings.partitions_chosen or deployed == settings.partitions:
        return None
    return (
        f"liftoff:stream.partitions is not set: this stack keeps its {deployed} partition(s) "
        f"(a new stack would get {settings.partitions}); set it to {deployed} to make that "
        f"explicit, or change it by {REPARTITION_PROCEDURE}."
    )
