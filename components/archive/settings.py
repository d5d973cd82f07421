"""`liftoff:archive`: where the archiver keeps every event, per target, and how it is read from
the stack."""

from __future__ import annotations

from dataclasses import dataclass

from components.validation import HIDDEN, ConfigReader, StackReading, set_secret_hint

BUCKET_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
BUCKET_DESCRIBE = "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-'"


@dataclass(frozen=True)
class ArchiveBatching:
    """The keys both targets take: how the archiver batches (what every archive client of
    the `Archive` contract reads)."""

    batch_max_events: int = 10000
    """Default: 10000. An object is written when this many events are buffered..."""
    batch_max_seconds: int = 60
    """Default: 60. ...or when the oldest buffered event is this old."""


@dataclass(frozen=True)
class AwsArchiveSettings(ArchiveBatching):
    """`liftoff:archive` on AWS: the platform's own S3 bucket (always created)."""

    bucket_name: str | None = None
    """Default: a generated name (`liftoff-<stack>-archive-<suffix>`)."""
    lifecycle_days: int = 90
    """Default: 90. Objects move to Glacier Instant Retrieval after this many days."""
    expire_days: int | None = None
    """Default: never. Objects are deleted after this many days."""


@dataclass(frozen=True)
class KubernetesArchiveSettings(ArchiveBatching):
    """`liftoff:archive` on Kubernetes: the customer's S3-compatible endpoint (optional: no
    archiver without it)."""

    endpoint: str = ""
    """Required: the S3-compatible endpoint URL (https://minio.corp:9000)."""
    bucket_name: str = ""
    """`bucket`. Required."""
    region: str = "us-east-1"
    """Default: `us-east-1`. The region the endpoint expects in signatures."""
    access_key_id: str | None = None
    """Required: access key id (a secret)."""
    secret_access_key: str | None = None
    """Required: secret access key (a secret)."""


@dataclass(frozen=True)
class ArchiveSettings:
    """`liftoff:archive` — where the archiver writes gzip NDJSON microbatches: the chosen
    target's settings (on Kubernetes none without the key)."""

    aws: AwsArchiveSettings | None = None
    """Set on AWS."""
    kubernetes: KubernetesArchiveSettings | None = None
    """Set on Kubernetes when the stack names an endpoint."""


def read_archive(stack: StackReading) -> ArchiveSettings:
    reader = stack.reader("archive")
    defaults = ArchiveBatching()
    batching = ArchiveBatching(
        batch_max_events=reader.integer(
            "batchMaxEvents", defaults.batch_max_events, minimum=1, maximum=1_000_000
        ),
        batch_max_seconds=reader.integer(
            "batchMaxSeconds", defaults.batch_max_seconds, minimum=1, maximum=900
        ),
    )
    if stack.target == "aws":
        return ArchiveSettings(aws=_read_bucket(reader, batching))
    if "archive" not in stack.raw:
        return ArchiveSettings()
    return ArchiveSettings(
        kubernetes=_read_endpoint(reader, batching, is_secret=stack.is_secret("archive"))
    )


def _read_bucket(reader: ConfigReader, batching: ArchiveBatching) -> AwsArchiveSettings:
    """The platform's bucket: its name, lifecycle and expiry."""
    bucket = reader.string("bucketName", pattern=BUCKET_NAME, describe=BUCKET_DESCRIBE)
    lifecycle = reader.integer(
        "lifecycleDays", AwsArchiveSettings.lifecycle_days, minimum=1, maximum=36500
    )
    expire = reader.integer("expireDays", 0, minimum=0, maximum=36500) or None
    if expire is not None and expire <= lifecycle:
        reader.problem("expireDays", expire, f"more than lifecycleDays ({lifecycle})")
    for name in ("endpoint", "region", "accessKeyId", "secretAccessKey"):
        reader.reject(name, "only with target 'kubernetes' (AWS uses its own S3)")
    reader.finish()
    return AwsArchiveSettings(
        bucket_name=bucket,
        lifecycle_days=lifecycle,
        expire_days=expire,
        batch_max_events=batching.batch_max_events,
        batch_max_seconds=batching.batch_max_seconds,
    )


def _read_endpoint(
    reader: ConfigReader, batching: ArchiveBatching, *, is_secret: bool
) -> KubernetesArchiveSettings:
    """The customer's endpoint, bucket, region and credentials (which must be secrets)."""
    endpoint = reader.string(
        "endpoint",
        required=True,
        pattern=r"https?://[^\s/]+(:\d+)?/?",
        describe="the S3-compatible endpoint URL, e.g. https://minio.corp.example:9000",
    )
    bucket = reader.string("bucket", required=True, pattern=BUCKET_NAME, describe=BUCKET_DESCRIBE)
    region = (
        reader.string("region", "us-east-1", pattern=r"[a-z0-9-]{2,32}", describe="a region name")
        or "us-east-1"
    )
    credentials = {}
    for name in ("accessKeyId", "secretAccessKey"):
        value = reader.string(name, required=True, describe="a credential string")
        if value is not None and not is_secret:
            reader.problem(name, HIDDEN, set_secret_hint(reader.key(name)))
        credentials[name] = value
    for name in ("bucketName", "lifecycleDays", "expireDays"):
        reader.reject(name, "only with target 'aws' (use bucket for S3-compatible storage)")
    reader.finish()
    return KubernetesArchiveSettings(
        bucket_name=bucket or "",
        endpoint=(endpoint or "").rstrip("/"),
        region=region,
        access_key_id=credentials["accessKeyId"],
        secret_access_key=credentials["secretAccessKey"],
        batch_max_events=batching.batch_max_events,
        batch_max_seconds=batching.batch_max_seconds,
    )
