"""What a consumer process holds of the stream, bounded by bytes.

A consumer holds the batch it gathers or hands to the sink, plus what the next pull request
brings meanwhile. Bounded by message counts alone (two batches per partition), a process with
8 partitions and a backlog held 8 x 2 x 10,000 archiver messages (831 MiB peak against its
512 MiB limit, ``benchmarks/consumer_backlog.py``): it was OOM-killed exactly when it had a
backlog to drain. So each process has one byte budget (``LIFTOFF_CONSUMER_BUFFER_BYTES``),
split evenly between its partition runners, and each runner:

- asks each pull request for no more than what its share leaves (JetStream pull requests carry
  ``max_bytes``; the message count is bounded by the average cost held so far);
- hands its batch to the sink once the batch holds half its share (or its event count), so the
  next pull can bring as much again while the sink works.

A held message costs its payload plus :data:`MESSAGE_OVERHEAD`.
"""

from __future__ import annotations

MESSAGE_OVERHEAD = 2048
"""What a held message costs besides its payload: nats-py's message object, its subject,
reply subject and parsed headers, then the batch's delivery and envelope (~1.5-2 KB per
message on CPython 3.11)."""
MIN_PULL_BYTES = 1024 * 1024 + 64 * 1024
"""A pull request may always ask for this many payload bytes: a message larger than a
request's ``max_bytes`` is never delivered (the server ends the request instead), so the floor
is above the largest message a stream takes (NATS's default ``max_payload``, 1 MiB)."""
FIRST_GUESS_BYTES = 4096
"""The cost assumed per message before any is held (the count of the first pull)."""


def pull_limit(budget: int, held: tuple[int, int], wanted: int) -> tuple[int, int]:
    """(messages, payload bytes) a pull may ask for: ``budget`` minus what is ``held``
    (messages, cost), at most ``wanted`` messages. 0 messages: hand the batch over first."""
    messages, cost = held
    remaining = budget - cost
    average = cost / messages if messages else FIRST_GUESS_BYTES
    count = max(0, min(wanted, int(remaining // max(average, MESSAGE_OVERHEAD + 1))))
    return count, max(MIN_PULL_BYTES, remaining - count * MESSAGE_OVERHEAD)


def batch_full_by_bytes(budget: int | None, batch_cost: int) -> bool:
    """Whether a batch costing ``batch_cost`` should go to the sink now (half the budget)."""
    return budget is not None and batch_cost * 2 >= budget


def share(budget: int | None, partitions: int) -> int | None:
    """One partition runner's share of the process's budget."""
    return None if budget is None else budget // partitions
