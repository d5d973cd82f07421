"""Archive capability: where the archiver keeps every event, as gzip NDJSON on S3.

AWS: a private, versioned, KMS-encrypted S3 bucket with a lifecycle. Kubernetes: any
S3-compatible endpoint the customer runs (MinIO, Ceph RGW, ...), reached with credentials
kept in a Secret.

Both expose an `ArchiveLocation` and `grant_write(peer)` / `grant_read(peer)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi


@dataclass(frozen=True)
class ArchiveLocation:
    bucket: pulumi.Output[str]
    region: pulumi.Output[str]
    endpoint: str | None = None
    """The S3-compatible endpoint URL; None on AWS (the regional S3 endpoint)."""
