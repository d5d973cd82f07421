"""THE stream URL grammar and the partition bounds: the one registry of both.

Read by the stack validation (``components/stream/settings.py``: partition bounds and
defaults), by the Kubernetes stream (the URL it hands every client) and by the adapters
(:mod:`services.stream.jetstream`, :mod:`services.stream.kinesis`) and contracts that parse it.
Imports nothing else of ``services``.

- ``nats://host:port[,host:port...]/<STREAM>?subject_prefix=events&publish_timeout=5&partitions=N``
  → NATS JetStream. ``partitions`` (default 1, at most :data:`MAX_PARTITIONS`): ``N`` > 1 means
  ``N`` streams ``<STREAM>-0`` ... ``<STREAM>-<N-1>`` with subjects ``<prefix>.<i>.>``.
- ``kinesis://<stream-name>?region=...&max_attempts=6&base_backoff=0.05`` → Kinesis Data
  Streams.
- Dead letters (``LIFTOFF_DEAD_LETTER_URL``): ``nats://host:port/DEADLETTER`` or
  ``sqs://<queue-name>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, urlsplit

EVENTS_STREAM = "EVENTS"
"""The JetStream stream the platform publishes to (``<EVENTS>-<i>`` when partitioned)."""
DEAD_LETTER_STREAM = "DEADLETTER"
"""The JetStream stream of dead letters and the collector's quarantine."""

MIN_PARTITIONS = 1
MAX_PARTITIONS = 64
PRODUCTION_PARTITIONS = 8
"""The partition count where the collector's durable throughput stops growing on a 2-core
node (benchmarks/collector.py's partition curve; README, "Benchmarks")."""
PRODUCTION_REPLICAS = 3
"""From this many JetStream replicas on, a stream is a production one (R3: fsync per write)."""


def default_partitions(replicas: int) -> int:
    """The partitions a stream gets unless its stack says: :data:`PRODUCTION_PARTITIONS` from
    :data:`PRODUCTION_REPLICAS` replicas on, 1 below (a dev stack)."""
    return PRODUCTION_PARTITIONS if replicas >= PRODUCTION_REPLICAS else 1


_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
SCHEMES = ("nats", "kinesis")
SQS_PREFIX = "sqs://"


class InvalidStreamUrl(ValueError):
    """The stream URL names no supported stream or is malformed."""


@dataclass(frozen=True)
class JetStreamAddress:
    servers: list[str]
    stream: str
    subject_prefix: str
    publish_timeout: float
    partitions: int = 1

    @classmethod
    def parse(cls, url: str) -> JetStreamAddress:
        parts = urlsplit(url)
        if parts.scheme != "nats" or not parts.netloc:
            raise InvalidStreamUrl(f"expected nats://host:port/<STREAM>, got {url!r}")
        stream = parts.path.strip("/")
        if not _TOKEN.match(stream):
            raise InvalidStreamUrl(
                f"stream name {stream!r} in {url!r} must be letters, digits, '_' or '-'"
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        prefix = query.pop("subject_prefix", "events")
        if not _SUBJECT_PREFIX.match(prefix):
            raise InvalidStreamUrl(f"subject_prefix {prefix!r} is not a valid subject prefix")
        try:
            publish_timeout = float(query.pop("publish_timeout", "5"))
        except ValueError:
            raise InvalidStreamUrl("publish_timeout must be a number of seconds") from None
        raw_partitions = query.pop("partitions", "1")
        if not raw_partitions.isdigit() or not 1 <= int(raw_partitions) <= MAX_PARTITIONS:
            raise InvalidStreamUrl(
                f"partitions={raw_partitions!r} must be a whole number from 1 to {MAX_PARTITIONS}"
            )
        if query:
            raise InvalidStreamUrl(f"unknown nats:// URL parameters: {sorted(query)}")
        servers = [f"nats://{server}" for server in parts.netloc.split(",")]
        return cls(servers, stream, prefix, publish_timeout, int(raw_partitions))

    def partition(self, index: int) -> JetStreamAddress:
        """The address of one partition's own stream, as a one-partition address."""
        if self.partitions == 1:
            return self
        return replace(
            self,
            stream=f"{self.stream}-{index}",
            subject_prefix=f"{self.subject_prefix}.{index}",
            partitions=1,
        )

    def partition_addresses(self) -> list[JetStreamAddress]:
        return [self.partition(index) for index in range(self.partitions)]

    def url(self) -> str:
        """This address as a stream URL (what a per-partition consumer is given)."""
        hosts = ",".join(server.removeprefix("nats://") for server in self.servers)
        query = f"subject_prefix={self.subject_prefix}&publish_timeout={self.publish_timeout:g}"
        if self.partitions > 1:
            query += f"&partitions={self.partitions}"
        return f"nats://{hosts}/{self.stream}?{query}"


@dataclass(frozen=True)
class KinesisAddress:
    stream_name: str
    region: str | None = None
    max_attempts: int = 6
    base_backoff_seconds: float = 0.05

    @classmethod
    def parse(cls, url: str) -> KinesisAddress:
        parts = urlsplit(url)
        name = parts.netloc + parts.path.rstrip("/")
        if parts.scheme != "kinesis" or not _STREAM_NAME.match(name):
            raise InvalidStreamUrl(f"expected kinesis://<stream-name>, got {url!r}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        region = query.pop("region", None)
        try:
            max_attempts = int(query.pop("max_attempts", "6"))
            backoff = float(query.pop("base_backoff", "0.05"))
        except ValueError:
            raise InvalidStreamUrl("max_attempts and base_backoff must be numbers") from None
        if max_attempts < 1:
            raise InvalidStreamUrl("max_attempts must be at least 1")
        if query:
            raise InvalidStreamUrl(f"unknown kinesis:// URL parameters: {sorted(query)}")
        return cls(name, region, max_attempts, backoff)


def jetstream_url(servers: str, stream: str = EVENTS_STREAM, partitions: int = 1) -> str:
    """The URL of a JetStream stream on ``servers`` (``host:port[,host:port]``): what the
    Kubernetes target hands every client (collector, consumers, the setup Job)."""
    url = f"nats://{servers}/{stream}"
    return url + (f"?partitions={partitions}" if partitions > 1 else "")


def dead_letter_url_of(stream_url: str) -> str:
    """The dead-letter stream on the servers of a ``nats://`` stream URL: its default."""
    servers = stream_url.partition("://")[2].partition("/")[0]
    return f"nats://{servers}/{DEAD_LETTER_STREAM}"


def parse_stream_url(url: str) -> JetStreamAddress | KinesisAddress:
    """The address a stream URL names; :class:`InvalidStreamUrl` when it names none."""
    scheme = url.partition("://")[0]
    if scheme == "nats":
        return JetStreamAddress.parse(url)
    if scheme == "kinesis":
        return KinesisAddress.parse(url)
    raise InvalidStreamUrl(f"unsupported stream URL scheme {scheme!r}: use nats:// or kinesis://")


def dead_letter_problem(url: str) -> str | None:
    """What is wrong with a dead-letter URL, None when nothing."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("nats", "sqs") or not rest.strip("/"):
        return "is not supported: use nats://host:port/DEADLETTER or sqs://<queue-name>"
    return None
