"""The archive's location as a process resolved it from :class:`ArchiveAccess`, and an S3
client for it (path-style addressing with a custom endpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.archive.contract import ArchiveAccess, bucket_of


@dataclass(frozen=True)
class ArchiveLocation:
    bucket: str
    prefix: str = ""
    """Empty, or ends with ``/``."""
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def of(cls, access: ArchiveAccess[str]) -> ArchiveLocation:
        prefix = (access.prefix or "").strip("/")
        return cls(
            bucket=bucket_of(access),
            prefix=f"{prefix}/" if prefix else "",
            endpoint_url=access.endpoint or access.any_endpoint,
            region=access.region or access.default_region,
        )


def s3_client(location: ArchiveLocation, *, attempts: int = 5, read_timeout: float = 60) -> Any:
    """An S3 client for the archive."""
    import boto3
    import botocore.config

    return boto3.client(
        "s3",
        endpoint_url=location.endpoint_url,
        region_name=location.region,
        config=botocore.config.Config(
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=5,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if location.endpoint_url else None,
        ),
    )
