"""CloudWatch log groups of the AWS target: one retention and the platform key for all.

Every log group the platform's services write to is declared here, before the service writes
to it, so none is left to the service's own defaults (no retention, AWS-managed encryption):
Lambda, API access logs, VPC flow logs, MWAA's five groups and RDS's log exports.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import aws_iam


@dataclass(frozen=True)
class LogSettings:
    retention_days: int
    """`liftoff:aws.logRetentionDays` (default 365)."""
    kms_key_arn: pulumi.Input[str] | None
    """The platform key; its key policy admits CloudWatch Logs of the stack's region."""


def log_group(
    name: str,
    *,
    log_group_name: pulumi.Input[str] | None,
    logs: LogSettings,
    parent: pulumi.Resource,
) -> aws.cloudwatch.LogGroup:
    return aws.cloudwatch.LogGroup(
        name,
        name=log_group_name,
        retention_in_days=logs.retention_days,
        kms_key_id=logs.kms_key_arn,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def platform_key_policy(account_id: str, region: str, partition: str = "aws") -> str:
    """Key policy of the platform key: the account administers it through IAM (AWS's default
    statement, without which the key would be unmanageable) and CloudWatch Logs of this region
    may use it for log groups of this account only (AWS's documented statement for encrypting
    log data, bound by the `aws:logs:arn` encryption context)."""
    return aws_iam.document(
        [
            {
                "Sid": "AccountAdministersThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchLogsOfThisAccount",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                "Action": [
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                "Resource": "*",
                "Condition": {
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{partition}:logs:{region}:{account_id}:log-group:*"
                        )
                    }
                },
            },
        ]
    )
