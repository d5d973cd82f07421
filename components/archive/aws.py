"""The archive on AWS: one private, versioned, KMS-encrypted S3 bucket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.archive import ArchiveClient, ArchiveLocation
from components.archive.settings import AwsArchiveSettings
from components.aws_s3 import secure_bucket
from components.network import AwsPeer, Grant
from services.archive.contract import ArchiveAccess

NONCURRENT_VERSION_DAYS = 30


@dataclass(frozen=True)
class ArchiveBucketArgs:
    settings: AwsArchiveSettings
    region: str
    kms_key_arn: pulumi.Input[str]
    name_prefix: str
    """Prefix of the generated bucket name, e.g. `liftoff-prod-archive-`."""
    protect: bool = True
    """Default: true. Refuse to delete the bucket on destroy (and never empty it)."""


class ArchiveBucket(pulumi.ComponentResource):
    """S3 bucket for the event archive: public access blocked, TLS required, objects
    encrypted with the platform key, versioned (a replay that overwrites an object keeps the
    previous version for 30 days), moved to Glacier Instant Retrieval after `lifecycleDays`.
    """

    def __init__(
        self, name: str, args: ArchiveBucketArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:archive:ArchiveBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        self.settings = settings
        self._name = name
        self._kms_key_arn = args.kms_key_arn
        self.bucket = secure_bucket(
            name,
            kms_key_arn=args.kms_key_arn,
            parent=self,
            bucket_name=settings.bucket_name,
            name_prefix=args.name_prefix,
            protect=args.protect,
        ).bucket
        rule: dict[str, Any] = {
            "id": "archive-tiering",
            "status": "Enabled",
            "filter": {},
            "transitions": [{"days": settings.lifecycle_days, "storage_class": "GLACIER_IR"}],
            "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
            "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
        }
        if settings.expire_days:
            rule["expiration"] = {"days": settings.expire_days}
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=self.bucket.id, rules=[rule], opts=child
        )
        self.location = ArchiveLocation(
            bucket=self.bucket.bucket, region=pulumi.Output.from_input(args.region)
        )
        self.register_outputs({"bucket": self.bucket.bucket, "arn": self.bucket.arn})

    def _grant(
        self, peer: AwsPeer, verb: str, actions: list[str], kms_actions: list[str]
    ) -> aws.iam.RolePolicy:
        return aws_iam.grant_with_key(
            f"{self._name}-{verb}-{peer.name}",
            peer,
            self.bucket.arn,
            self._kms_key_arn,
            lambda arn: [
                {"Effect": "Allow", "Action": actions, "Resource": f"{arn}/*"},
                {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": arn},
            ],
            kms_actions,
            self,
        )

    def grant_write(self, peer: AwsPeer) -> Grant:
        """Let `peer` write (and overwrite) archive objects."""
        policy = self._grant(
            peer, "write", ["s3:PutObject", "s3:GetObject"], ["kms:GenerateDataKey", "kms:Decrypt"]
        )
        return Grant(peer.name, (policy,))

    def grant_read(self, peer: AwsPeer) -> Grant:
        """Let `peer` read archive objects."""
        return Grant(peer.name, (self._grant(peer, "read", ["s3:GetObject"], ["kms:Decrypt"]),))

    def client(self, peer: AwsPeer | None = None, *, write: bool = False) -> ArchiveClient:
        """The environment a function needs (the bucket; credentials come from its role) and,
        when `peer` is given, its grant: reading, or writing with `write`."""
        grant = None
        if peer is not None:
            grant = (self.grant_write if write else self.grant_read)(peer)
        return ArchiveClient(ArchiveAccess(bucket=self.location.bucket), grant=grant)
