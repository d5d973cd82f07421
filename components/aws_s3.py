"""The baseline every liftoff S3 bucket gets: private, owner-enforced, versioned, encrypted
with the platform key, TLS-only."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import aws_iam


@dataclass(frozen=True)
class SecureBucket:
    bucket: aws.s3.Bucket
    settings: list[pulumi.Resource]
    """Public access block, ownership, versioning, encryption and TLS policy: a service that
    checks them when it is created (MWAA: versioning and blocked public access) waits for them."""


def secure_bucket(
    name: str,
    *,
    kms_key_arn: pulumi.Input[str],
    parent: pulumi.Resource,
    bucket_name: str | None = None,
    name_prefix: str | None = None,
    protect: bool = True,
) -> SecureBucket:
    """Declare a bucket and its protections as children of `parent` (named `<name>-...`)."""
    bucket = aws.s3.Bucket(
        f"{name}-bucket",
        bucket=bucket_name,
        bucket_prefix=None if bucket_name else name_prefix,
        force_destroy=not protect,
        opts=pulumi.ResourceOptions(parent=parent, protect=protect),
    )
    child = pulumi.ResourceOptions(parent=parent)
    return SecureBucket(
        bucket,
        [*_access_settings(name, bucket, child), *_data_settings(name, bucket, kms_key_arn, child)],
    )


def _access_settings(
    name: str, bucket: aws.s3.Bucket, child: pulumi.ResourceOptions
) -> list[pulumi.Resource]:
    """Who may reach the bucket: nobody public, objects owned by the bucket owner, TLS only."""
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access-block",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership",
        bucket=bucket.id,
        rule={"object_ownership": "BucketOwnerEnforced"},
        opts=child,
    )
    tls_only = aws.s3.BucketPolicy(
        f"{name}-tls-only",
        bucket=bucket.id,
        policy=bucket.arn.apply(
            lambda arn: aws_iam.document(
                [
                    {
                        "Sid": "DenyInsecureTransport",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [arn, f"{arn}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ]
            )
        ),
        opts=child,
    )
    return [public_access, ownership, tls_only]


def _data_settings(
    name: str, bucket: aws.s3.Bucket, kms_key_arn: pulumi.Input[str], child: pulumi.ResourceOptions
) -> list[pulumi.Resource]:
    """What happens to the objects: every version kept, encrypted with the platform key."""
    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning",
        bucket=bucket.id,
        versioning_configuration={"status": "Enabled"},
        opts=child,
    )
    encryption = aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {
                    "sse_algorithm": "aws:kms",
                    "kms_master_key_id": kms_key_arn,
                },
                # One data key per bucket rather than per object: far fewer KMS calls.
                "bucket_key_enabled": True,
            }
        ],
        opts=child,
    )
    return [versioning, encryption]
