"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<raw body>`` with the per-destination secret.

Every webhook POST carries::

    X-Liftoff-Timestamp: 1764274743                  (Unix seconds when this attempt was sent)
    X-Liftoff-Signature: sha256=<hex HMAC-SHA256(signingSecret, "1764274743." + raw body)>

Verification recipe for a receiver (any language):

1. Read the raw request body as bytes, before any JSON parsing or re-encoding.
2. Reject the request when ``X-Liftoff-Timestamp`` is not an integer or is more than 5 minutes
   away from your clock (stops replays of a captured request).
3. Compute ``HMAC-SHA256(key=signingSecret (UTF-8), message=timestamp + "." + body)``, hex-encode
   it (lower case) and compare it with the part of ``X-Liftoff-Signature`` after ``sha256=``
   using a constant-time comparison (``hmac.compare_digest``, ``crypto.timingSafeEqual``).
4. Deduplicate on each event's ``messageId``: delivery is at least once, so a retried batch (a
   fresh timestamp and signature, the same body) may arrive again.

:func:`verify` implements that recipe.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Liftoff-Timestamp"
SIGNATURE_HEADER = "X-Liftoff-Signature"
SCHEME = "sha256="
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SCHEME + digest.hexdigest()


def sign(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers for one attempt."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    if not timestamp_header or not signature_header:
        return False
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header.strip())
