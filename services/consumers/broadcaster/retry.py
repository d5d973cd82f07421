"""Retry timing: exponential backoff with full jitter; ``Retry-After`` (seconds or HTTP date)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` HTTP attempts per request, then the request's events are parked.

    Between attempts: the server's ``Retry-After`` when it sent one (capped at
    ``retry_after_max``), else a uniformly random delay in ``[0, min(cap, base * 2**(n-1))]``
    after the n-th failed attempt ("full jitter": concurrent consumers do not retry in step)."""

    max_attempts: int = 8
    base: float = 1.0
    cap: float = 60.0
    retry_after_max: float = 300.0

    def delay(self, failed_attempts: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        ceiling = min(self.cap, self.base * 2 ** max(failed_attempts - 1, 0))
        return rng.uniform(0.0, ceiling)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """RFC 9110 ``Retry-After``: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - (now or datetime.now(UTC))).total_seconds(), 0.0)
