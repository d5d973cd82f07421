"""A Lambda function of the services package, with its role and its own log group.

Every function liftoff declares (collector, consumers, database setup, reconciliation) runs
the same reproducible package; this is the one place that declares such a function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.aws_logs import LogSettings, log_group
from components.packaging import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, build_lambda_package

VPC_ACCESS_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"


@dataclass(frozen=True)
class PackagedFunction:
    function: aws.lambda_.Function
    role: aws.iam.Role
    """The function's own role; it may write only to `log_group` until something is granted."""
    log_group: aws.cloudwatch.LogGroup


def packaged_function(
    name: str,
    *,
    function_name: str,
    description: str,
    handler: str,
    environment: Mapping[str, pulumi.Input[str]],
    parent: pulumi.Resource,
    logs: LogSettings,
    memory_mb: int = 512,
    timeout_seconds: int = 60,
    vpc_config: dict[str, Any] | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> PackagedFunction:
    """Declare `<name>-logs`, `<name>-role`, `<name>-logs-policy`, `<name>-function` (and
    `<name>-vpc-access` when the function runs in a VPC)."""
    child = pulumi.ResourceOptions(parent=parent)
    group = log_group(
        f"{name}-logs", log_group_name=f"/aws/lambda/{function_name}", logs=logs, parent=parent
    )
    role = aws_iam.lambda_role(f"{name}-role", description, parent)
    aws.iam.RolePolicy(
        f"{name}-logs-policy",
        role=role.id,
        policy=group.arn.apply(lambda arn: aws_iam.document([aws_iam.log_statement(arn)])),
        opts=child,
    )
    prerequisites: list[pulumi.Resource] = [group, *depends_on]
    if vpc_config is not None:
        # Network interfaces in the VPC: AWS's policy for exactly that. Lambda checks the role
        # when the function is created, so the function waits for the attachment.
        prerequisites.append(
            aws.iam.RolePolicyAttachment(
                f"{name}-vpc-access", role=role.name, policy_arn=VPC_ACCESS_POLICY, opts=child
            )
        )
    package = build_lambda_package()
    function = aws.lambda_.Function(
        f"{name}-function",
        name=function_name,
        description=description,
        runtime=LAMBDA_RUNTIME,
        architectures=[LAMBDA_ARCHITECTURE],
        handler=handler,
        code=pulumi.FileArchive(str(package.path)),
        source_code_hash=package.sha256_base64,
        role=role.arn,
        memory_size=memory_mb,
        timeout=timeout_seconds,
        vpc_config=vpc_config,
        environment={"variables": dict(sorted(environment.items()))},
        logging_config={"log_format": "JSON", "log_group": group.name},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=prerequisites),
    )
    return PackagedFunction(function=function, role=role, log_group=group)
