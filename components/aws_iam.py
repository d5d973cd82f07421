"""IAM policy documents shared by the AWS realizations: least privilege, always scoped."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from components.network import AwsPeer


def document(statements: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str) -> str:
    """Trust policy letting one AWS service (e.g. `lambda.amazonaws.com`) assume the role."""
    return document(
        [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]
    )


def lambda_role(name: str, description: str, parent: pulumi.Resource) -> aws.iam.Role:
    return aws.iam.Role(
        name,
        description=description,
        assume_role_policy=assume_role_policy("lambda.amazonaws.com"),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def log_statement(log_group_arn: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [log_group_arn, f"{log_group_arn}:*"],
    }


def list_one_key_statement(object_arn: str) -> dict[str, Any]:
    """``s3:ListBucket`` on the object's bucket for its key only: without it S3 answers a read
    of a key that does not exist yet with AccessDenied instead of NoSuchKey."""
    bucket, _, key = object_arn.rpartition("/")
    return {
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": bucket,
        "Condition": {"StringEquals": {"s3:prefix": key}},
    }


def grant_secret_read(
    name: str,
    role_name: pulumi.Input[str],
    secret_arn: pulumi.Input[str],
    kms_key_arn: pulumi.Input[str] | None,
    parent: pulumi.Resource,
) -> aws.iam.RolePolicy:
    """Let a role read one Secrets Manager secret (and decrypt it with its KMS key)."""

    def policy(arns: list[str]) -> str:
        statements = [
            {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": arns[0]}
        ]
        if arns[1]:
            statements.append({"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": arns[1]})
        return document(statements)

    return aws.iam.RolePolicy(
        name,
        role=role_name,
        policy=pulumi.Output.all(secret_arn, kms_key_arn or "").apply(policy),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def grant_with_key(
    name: str,
    peer: AwsPeer,
    resource_arn: pulumi.Input[str],
    key_arn: pulumi.Input[str],
    statements: Callable[[str], list[dict[str, Any]]],
    key_actions: list[str],
    parent: pulumi.Resource,
) -> aws.iam.RolePolicy:
    """Attach to `peer`'s role the statements on one resource, and `key_actions` on the KMS
    key its data is encrypted with."""
    return grant_to_peer(
        name,
        peer,
        [resource_arn, key_arn],
        lambda arns: [
            *statements(arns[0]),
            {"Effect": "Allow", "Action": key_actions, "Resource": arns[1]},
        ],
        parent,
    )


def grant_to_peer(
    name: str,
    peer: AwsPeer,
    resources: Sequence[pulumi.Input[str]],
    statements: Callable[[list[str]], list[dict[str, Any]]],
    parent: pulumi.Resource,
) -> aws.iam.RolePolicy:
    """Attach to `peer`'s role the statements built from the resolved `resources` ARNs."""
    if peer.iam_role_name is None:
        raise ValueError(f"{name}: granting to {peer.name!r} on AWS needs the peer's IAM role")
    return aws.iam.RolePolicy(
        name,
        role=peer.iam_role_name,
        policy=pulumi.Output.all(*resources).apply(lambda arns: document(statements(arns))),
        opts=pulumi.ResourceOptions(parent=parent),
    )
