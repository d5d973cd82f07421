"""The stream's runtime contract: how every process finds the stream, and ``ensure-stream``.

- :class:`StreamAccess` — ``LIFTOFF_STREAM_URL`` (the grammar: :mod:`services.stream.address`)
  and ``LIFTOFF_STREAM_CREDENTIALS_FILE`` (``nats://`` only: a JSON file ``{"user",
  "password"}``, read by :func:`services.stream.jetstream.stream_credentials`; unset = none).
  Every process that connects to the stream reads this group.
- :func:`dead_letter_url_variable` — ``LIFTOFF_DEAD_LETTER_URL``, where parked events (and the
  collector's quarantine) go: ``nats://host:port/DEADLETTER`` or ``sqs://<queue-name>``.
- :class:`EnsureStreamSettings` — ``python -m services ensure-stream``: the JetStream event
  stream's retention, replicas, duplicate window and byte bound, the dead-letter stream's, and
  the durable consumers the stack declares (``LIFTOFF_STREAM_CONSUMERS``): liftoff's durables
  not among them are deleted (a removed destination's), see :mod:`services.stream.durables`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic

from services.contract import (
    ConfigError,
    Env,
    Integer,
    Kind,
    Names,
    Number,
    Text,
    V,
    group,
    log_level_variable,
    process,
    read,
    required,
    variable,
)
from services.stream.address import (
    SCHEMES,
    InvalidStreamUrl,
    dead_letter_problem,
    dead_letter_url_of,
    parse_stream_url,
)

_URL = "LIFTOFF_STREAM_URL"
_CREDENTIALS_FILE = "LIFTOFF_STREAM_CREDENTIALS_FILE"
_DEAD_LETTER_URL = "LIFTOFF_DEAD_LETTER_URL"
_RETENTION_HOURS = "LIFTOFF_STREAM_RETENTION_HOURS"
_REPLICAS = "LIFTOFF_STREAM_REPLICAS"
_DUPLICATE_WINDOW = "LIFTOFF_STREAM_DUPLICATE_WINDOW_SECONDS"
_MAX_BYTES = "LIFTOFF_STREAM_MAX_BYTES"
_DEAD_LETTER_RETENTION_HOURS = "LIFTOFF_DEAD_LETTER_RETENTION_HOURS"
_DEAD_LETTER_MAX_BYTES = "LIFTOFF_DEAD_LETTER_MAX_BYTES"
_CONSUMERS = "LIFTOFF_STREAM_CONSUMERS"

DEFAULT_RETENTION_HOURS = 168.0
DEFAULT_REPLICAS = 1
DEFAULT_DUPLICATE_WINDOW_SECONDS = 120.0
UNBOUNDED = -1
"""``LIFTOFF_STREAM_MAX_BYTES`` unset (or 0): no byte bound."""
DEFAULT_DEAD_LETTER_RETENTION_HOURS = 336.0
DEFAULT_DEAD_LETTER_MAX_BYTES = 1024**3
"""1 GiB: what the Kubernetes target's default 10 GiB volume gives it (10 %). 100,000 invalid
events in 27 s added 160 MB to an unbounded stream."""
_EXAMPLE = "e.g. nats://nats:4222/EVENTS"

LIFTOFF_CONSUMER = re.compile(r"archiver|loader|broadcaster-[a-z0-9-]{1,52}")
"""The names of the durable consumers liftoff creates (the archiver's, the loader's,
``broadcaster-<destination>``): the only ones ensure-stream ever deletes. A durable of another
name (an operator's ``nats consumer add``) is never touched."""


def owned_by_liftoff(consumer: str) -> bool:
    """Whether a durable consumer of the event stream is one liftoff creates (by its name)."""
    return LIFTOFF_CONSUMER.fullmatch(consumer) is not None


def starts_at_end(consumer: str) -> bool:
    """Whether a new durable of this name gets only what arrives after its creation: a
    broadcaster's (a destination added to a running stack is not sent the retention; third
    parties such as GA4 do not deduplicate). The archiver and the loader see everything."""
    return consumer.startswith("broadcaster-")


def _check_consumer(name: str) -> str | None:
    if owned_by_liftoff(name):
        return None
    return "is not a liftoff consumer name (archiver, loader or broadcaster-<destination>)"


class StreamUrl(Kind[str]):
    grammar = "stream-url"

    def read(self, name: str, raw: str) -> str:
        if raw.partition("://")[0] not in SCHEMES:
            allowed = " or ".join(f"{s}://" for s in SCHEMES)
            raise ConfigError(f"{name}={raw!r} is not supported: use {allowed}")
        try:
            parse_stream_url(raw)
        except InvalidStreamUrl as error:
            raise ConfigError(f"{name} is invalid: {error}") from None
        return raw

    def write(self, value: str) -> Any:
        return value


@dataclass(frozen=True)
class StreamAccess(Generic[V]):
    """Where the stream is, and how to log in to it."""

    url: V | None = variable(_URL, StreamUrl())
    credentials_file: V | None = variable(_CREDENTIALS_FILE, Text("path"))


def stream_url(access: StreamAccess[str], schemes: tuple[str, ...] = SCHEMES) -> str:
    """The stream URL a process needs, of one of ``schemes``; the error names the variable."""
    url = required(_URL, access.url, _EXAMPLE)
    if url.partition("://")[0] not in schemes:
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{_URL}={url!r} is not supported: use {allowed}")
    return url


def credentials_file_of(env: Env) -> str | None:
    """``LIFTOFF_STREAM_CREDENTIALS_FILE`` of a running process (None: no credentials)."""
    return read(StreamAccess, {_CREDENTIALS_FILE: env.get(_CREDENTIALS_FILE, "")}).credentials_file


def credentials_problem(path: str, problem: str) -> str:
    """The error of a credentials file that cannot be used: names the variable, not the file's
    content."""
    return f"{_CREDENTIALS_FILE}={path!r} {problem}"


def dead_letter_url_variable() -> Any:
    """The ``LIFTOFF_DEAD_LETTER_URL`` field of a contract."""
    return variable(_DEAD_LETTER_URL, Text("dead-letter-url", dead_letter_problem))


def dead_letter_or_default(url: str | None, stream: str | None) -> str:
    """``LIFTOFF_DEAD_LETTER_URL``; on JetStream it defaults to the stream's servers +
    ``/DEADLETTER``. On Lambda (``stream`` None) it must be set (``sqs://<queue>``)."""
    if url is not None:
        return url
    if stream is None:
        raise ConfigError(f"{_DEAD_LETTER_URL} is not set (e.g. sqs://<queue-name>)")
    return dead_letter_url_of(stream)


def require_nats_dead_letter(url: str | None) -> str:
    """A ``nats://`` dead-letter URL (reading the quarantine needs one)."""
    if url is None or not url.startswith("nats://"):
        raise ConfigError(f"{_DEAD_LETTER_URL} must be nats://... to read the quarantine")
    return url


# --- ensure-stream ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureStreamSettings(Generic[V]):
    """``python -m services ensure-stream`` (a Kubernetes Job; JetStream only)."""

    stream: StreamAccess[V] = group(StreamAccess)
    retention_hours: float | None = variable(_RETENTION_HOURS, Number(0.001))
    """Default :data:`DEFAULT_RETENTION_HOURS`."""
    replicas: int | None = variable(_REPLICAS, Integer(1, 5))
    """Default :data:`DEFAULT_REPLICAS`."""
    duplicate_window_seconds: float | None = variable(_DUPLICATE_WINDOW, Number(0.001))
    """Default :data:`DEFAULT_DUPLICATE_WINDOW_SECONDS`; at most the retention."""
    max_bytes: int | None = variable(_MAX_BYTES, Integer(UNBOUNDED, 2**53))
    """Per partition; default (and 0): :data:`UNBOUNDED`."""
    dead_letter_url: V | None = dead_letter_url_variable()
    """Default: the stream's servers + ``/DEADLETTER`` (nothing to create for ``sqs://``)."""
    dead_letter_retention_hours: float | None = variable(
        _DEAD_LETTER_RETENTION_HOURS, Number(0.001)
    )
    """Default :data:`DEFAULT_DEAD_LETTER_RETENTION_HOURS`."""
    dead_letter_max_bytes: int | None = variable(_DEAD_LETTER_MAX_BYTES, Integer(2**20, 2**53))
    """Default :data:`DEFAULT_DEAD_LETTER_MAX_BYTES`."""
    consumers: tuple[str, ...] | None = variable(
        _CONSUMERS, Names("consumer-names", _check_consumer)
    )
    """The durable consumers the stack runs, comma-separated, e.g.
    ``archiver,loader,broadcaster-ga4``. Set: on each partition stream, the listed ones that are
    missing are created (:func:`starts_at_end` says where each starts), every liftoff durable
    (:func:`owned_by_liftoff`) not listed is deleted, and the list is recorded in the stream's
    metadata so that a consumer process never re-creates a durable no longer listed. Default
    (unset): none created, none deleted."""
    log_level: str | None = log_level_variable()


EXIT_REFUSED = 3
"""ensure-stream's exit status when it refuses the change asked (another partition count than
the live streams have): retrying cannot help, so the Kubernetes Job fails at once on it
(``podFailurePolicy``) instead of retrying for its whole deadline."""


def _check_ensure_stream(settings: EnsureStreamSettings[str]) -> None:
    stream_url(settings.stream, ("nats",))
    retention = settings.retention_hours or DEFAULT_RETENTION_HOURS
    window = settings.duplicate_window_seconds or DEFAULT_DUPLICATE_WINDOW_SECONDS
    if window > retention * 3600:
        raise ConfigError(f"{_DUPLICATE_WINDOW} must not exceed {_RETENTION_HOURS} * 3600")


ENSURE_STREAM = process(EnsureStreamSettings, _check_ensure_stream)
parse_ensure_stream = ENSURE_STREAM.parse
