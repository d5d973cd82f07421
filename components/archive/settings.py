"""`liftoff:archive`: where the archiver keeps every event, and how it is read from the stack."""

from __future__ import annotations

from dataclasses import dataclass

from components.validation import HIDDEN, ConfigReader, Target, set_secret_hint


@dataclass(frozen=True)
class ArchiveSettings:
    """`liftoff:archive` — where the archiver writes gzip NDJSON microbatches."""

    bucket_name: str | None = None
    """AWS: Default: a generated name (`liftoff-<stack>-archive-<suffix>`). Kubernetes: required."""
    lifecycle_days: int = 90
    """Default: 90. AWS only: objects move to Glacier Instant Retrieval after this many days."""
    expire_days: int | None = None
    """Default: never. AWS only: objects are deleted after this many days."""
    endpoint: str | None = None
    """Kubernetes only, required: the S3-compatible endpoint URL (https://minio.corp:9000)."""
    region: str = "us-east-1"
    """Default: `us-east-1`. Kubernetes only: the region the endpoint expects in signatures."""
    access_key_id: str | None = None
    """Kubernetes only: access key id (a secret)."""
    secret_access_key: str | None = None
    """Kubernetes only: secret access key (a secret)."""
    batch_max_events: int = 10000
    """Default: 10000. An object is written when this many events are buffered..."""
    batch_max_seconds: int = 60
    """Default: 60. ...or when the oldest buffered event is this old."""


def read_archive(
    reader: ConfigReader, target: Target | None, *, present: bool, is_secret: bool
) -> ArchiveSettings | None:
    defaults = ArchiveSettings()
    batch_events = reader.integer(
        "batchMaxEvents", defaults.batch_max_events, minimum=1, maximum=1_000_000
    )
    batch_seconds = reader.integer(
        "batchMaxSeconds", defaults.batch_max_seconds, minimum=1, maximum=900
    )
    bucket_pattern = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
    bucket_describe = "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-'"
    if target == "aws":
        bucket = reader.string("bucketName", pattern=bucket_pattern, describe=bucket_describe)
        lifecycle = reader.integer(
            "lifecycleDays", defaults.lifecycle_days, minimum=1, maximum=36500
        )
        expire_raw = reader.integer("expireDays", 0, minimum=0, maximum=36500)
        expire = expire_raw or None
        if expire is not None and expire <= lifecycle:
            reader.problem("expireDays", expire, f"more than lifecycleDays ({lifecycle})")
        for name in ("endpoint", "region", "accessKeyId", "secretAccessKey"):
            reader.reject(name, "only with target 'kubernetes' (AWS uses its own S3)")
        reader.finish()
        return ArchiveSettings(
            bucket_name=bucket,
            lifecycle_days=lifecycle,
            expire_days=expire,
            batch_max_events=batch_events,
            batch_max_seconds=batch_seconds,
        )
    if not present:
        return None
    endpoint = reader.string(
        "endpoint",
        required=True,
        pattern=r"https?://[^\s/]+(:\d+)?/?",
        describe="the S3-compatible endpoint URL, e.g. https://minio.corp.example:9000",
    )
    bucket = reader.string(
        "bucket", required=True, pattern=bucket_pattern, describe=bucket_describe
    )
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
    return ArchiveSettings(
        bucket_name=bucket,
        endpoint=(endpoint or "").rstrip("/"),
        region=region,
        access_key_id=credentials["accessKeyId"],
        secret_access_key=credentials["secretAccessKey"],
        batch_max_events=batch_events,
        batch_max_seconds=batch_seconds,
    )
