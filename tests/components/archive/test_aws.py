"""The archive on AWS: a private, versioned, KMS-encrypted, TLS-only bucket with a lifecycle."""

from __future__ import annotations

import json

from tests.conftest import stack_run
from tests.harness import run_program

BUCKET = "aws:s3/bucket:Bucket"


def test_bucket_is_private_encrypted_versioned_and_protected():
    run = stack_run("aws")
    bucket = run.one(BUCKET, "liftoff-archive-bucket")
    assert bucket.inputs["bucketPrefix"] == "liftoff-aws-archive-"
    assert bucket.protect is True and bucket.inputs["forceDestroy"] is False
    block = run.one(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "liftoff-archive-public-access-block",
    ).inputs
    assert all(
        block[k]
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    versioning = run.one(
        "aws:s3/bucketVersioning:BucketVersioning", "liftoff-archive-versioning"
    ).inputs
    assert versioning["versioningConfiguration"] == {"status": "Enabled"}
    (rule,) = run.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "liftoff-archive-encryption",
    ).inputs["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms"
    assert default["kmsMasterKeyId"] == run.one("aws:kms/key:Key").inputs["arn"]


def test_only_tls_requests_are_allowed():
    policy = json.loads(
        stack_run("aws")
        .one("aws:s3/bucketPolicy:BucketPolicy", "liftoff-archive-tls-only")
        .inputs["policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_lifecycle_tiers_old_objects_and_optionally_expires_them():
    (rule,) = (
        stack_run("aws")
        .one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        .inputs["rules"]
    )
    assert rule["transitions"] == [{"days": 90, "storageClass": "GLACIER_IR"}]
    assert "expiration" not in rule
    run = run_program(
        "stacks/aws.yaml", overrides={"liftoff:archive": {"lifecycleDays": 30, "expireDays": 400}}
    )
    (rule,) = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs[
        "rules"
    ]
    assert rule["transitions"][0]["days"] == 30 and rule["expiration"] == {"days": 400}


def test_named_bucket_and_archiver_write_grant():
    run = run_program(
        "stacks/aws.yaml", overrides={"liftoff:archive": {"bucketName": "acme-events"}}
    )
    assert run.one(BUCKET, "liftoff-archive-bucket").inputs["bucket"] == "acme-events"
    grant = run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-archive-write-archiver")
    statements = json.loads(grant.inputs["policy"])["Statement"]
    bucket_arn = run.one(BUCKET, "liftoff-archive-bucket").inputs["arn"]
    assert statements[0] == {
        "Effect": "Allow",
        "Action": ["s3:PutObject", "s3:GetObject"],
        "Resource": f"{bucket_arn}/*",
    }
    assert run.outputs["archive"] == {"bucket": "acme-events"}
