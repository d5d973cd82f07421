"""What every process using the archive reads: :class:`ArchiveAccess`.

``LIFTOFF_ARCHIVE_BUCKET`` (required by every client) and ``LIFTOFF_ARCHIVE_PREFIX`` (a key
prefix, default none), and boto3's own variables for an S3-compatible endpoint:
``AWS_ENDPOINT_URL_S3`` (else ``AWS_ENDPOINT_URL``; default: AWS's regional endpoint),
``AWS_REGION`` (else ``AWS_DEFAULT_REGION``), ``AWS_SHARED_CREDENTIALS_FILE`` (the keys, as a
mounted file; on AWS the function's role) and ``AWS_EC2_METADATA_DISABLED`` (``true`` off EC2:
boto3 never waits for instance metadata). Used by the archiver, ``backup-upload``, the
reconciliation (its Lambda function and the DAG's pod) and Airflow's remote logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.contract import Flag, Text, V, check_pattern, required, variable

_BUCKET = "LIFTOFF_ARCHIVE_BUCKET"
_PREFIX = "LIFTOFF_ARCHIVE_PREFIX"
_ENDPOINT = "AWS_ENDPOINT_URL_S3"
_ANY_ENDPOINT = "AWS_ENDPOINT_URL"
_REGION = "AWS_REGION"
_DEFAULT_REGION = "AWS_DEFAULT_REGION"
_CREDENTIALS_FILE = "AWS_SHARED_CREDENTIALS_FILE"
_METADATA_DISABLED = "AWS_EC2_METADATA_DISABLED"

_URL = check_pattern(r"https?://[^\s/]+(/\S*)?", "is not an http(s):// URL")
_REGION_NAME = check_pattern(r"[a-z0-9-]{1,32}", "is not an AWS region name such as us-east-1")


@dataclass(frozen=True)
class ArchiveAccess(Generic[V]):
    """Where the archive is and how to reach it."""

    bucket: V | None = variable(_BUCKET, Text("bucket"))
    prefix: str | None = variable(_PREFIX, Text("key-prefix"))
    """Default: none (objects at the bucket's root)."""
    endpoint: V | None = variable(_ENDPOINT, Text("url", _URL))
    """An S3-compatible endpoint (Kubernetes); default: AWS's regional endpoint."""
    any_endpoint: V | None = variable(_ANY_ENDPOINT, Text("url", _URL))
    """boto3's endpoint for every AWS API, used for S3 when ``endpoint`` is not set."""
    region: V | None = variable(_REGION, Text("aws-region", _REGION_NAME))
    default_region: V | None = variable(_DEFAULT_REGION, Text("aws-region", _REGION_NAME))
    credentials_file: V | None = variable(_CREDENTIALS_FILE, Text("path"))
    metadata_disabled: bool | None = variable(_METADATA_DISABLED, Flag())


def bucket_of(access: ArchiveAccess[str]) -> str:
    return required(_BUCKET, access.bucket)
