"""Airflow on AWS: an Amazon MWAA environment in the stack's private subnets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.airflow import DAGS_DIR, AirflowEndpoint, dag_files
from components.aws_s3 import secure_bucket
from components.config import AirflowSettings
from components.network.aws import AwsNetwork

LOG_LEVEL = "INFO"


@dataclass(frozen=True)
class MwaaAirflowArgs:
    settings: AirflowSettings
    network: AwsNetwork
    environment_name: str
    """Physical MWAA environment name, e.g. `liftoff-prod-airflow`."""
    region: str
    kms_key_arn: pulumi.Input[str]
    reconcile_function_arn: pulumi.Input[str] | None = None
    """The warehouse reconciliation Lambda the DAG invokes (None without a warehouse)."""
    reconcile_function_name: pulumi.Input[str] | None = None
    protect: bool = True


class MwaaAirflow(pulumi.ComponentResource):
    """An MWAA environment (Airflow 3) with:

    - a DAG bucket (versioned, as MWAA requires; KMS-encrypted; public access blocked;
      TLS-only) filled from `dags/`, one object per file with a content hash, so the same
      files never show a diff;
    - its own security group (MWAA's components reach each other through it; nothing else
      may reach in) in two of the stack's private subnets;
    - an execution role limited to that bucket, its own log groups and metrics, MWAA's own
      task queues, the platform key and — for the reconciliation DAG — invoking one function;
    - all five CloudWatch log streams on; the web server private unless the stack opts out.
    """

    def __init__(
        self, name: str, args: MwaaAirflowArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:airflow:MwaaAirflow", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        self.dag_bucket = secure_bucket(
            f"{name}-dags",
            kms_key_arn=args.kms_key_arn,
            parent=self,
            name_prefix=f"{args.environment_name}-dags-",
            protect=args.protect,
        )
        objects = []
        for path in dag_files():
            key = f"dags/{path.relative_to(DAGS_DIR).as_posix()}"
            objects.append(
                aws.s3.BucketObjectv2(
                    f"{name}-dag-{path.stem}",
                    bucket=self.dag_bucket.id,
                    key=key,
                    source=pulumi.FileAsset(str(path)),
                    source_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
                    content_type="text/x-python",
                    opts=child,
                )
            )

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.network.vpc_id,
            description="liftoff MWAA: its own components only",
            ingress=[
                {
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "self": True,
                    "description": "MWAA components among themselves",
                }
            ],
            egress=[
                {
                    "protocol": "-1",
                    "from_port": 0,
                    "to_port": 0,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "AWS APIs through the VPC endpoints",
                }
            ],
            opts=child,
        )
        self.role = self._execution_role(name, args)
        self.environment = aws.mwaa.Environment(
            f"{name}-environment",
            name=args.environment_name,
            airflow_version=settings.version,
            environment_class=settings.environment_class,
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
            source_bucket_arn=self.dag_bucket.arn,
            dag_s3_path="dags",
            execution_role_arn=self.role.arn,
            # MWAA encrypts its metadata with an AWS-owned key; a customer key would need a key
            # policy for CloudWatch Logs, which the platform key deliberately does not carry.
            network_configuration={
                "security_group_ids": [self.security_group.id],
                # MWAA takes exactly two private subnets in different zones.
                "subnet_ids": args.network.private_subnet_ids.apply(lambda ids: ids[:2]),
            },
            webserver_access_mode="PUBLIC_ONLY"
            if settings.web_access == "public"
            else "PRIVATE_ONLY",
            logging_configuration={
                part: {"enabled": True, "log_level": LOG_LEVEL}
                for part in (
                    "dag_processing_logs",
                    "scheduler_logs",
                    "task_logs",
                    "webserver_logs",
                    "worker_logs",
                )
            },
            airflow_configuration_options=self._liftoff_config(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=objects, protect=args.protect),
        )
        url = pulumi.Output.concat("https://", self.environment.webserver_url)
        self.endpoint = AirflowEndpoint(url=url)
        self.register_outputs({"url": url, "dagBucket": self.dag_bucket.bucket})

    @staticmethod
    def _liftoff_config(args: MwaaAirflowArgs) -> dict[str, pulumi.Input[str]]:
        """The `[liftoff]` section the reconciliation DAG reads."""
        config: dict[str, pulumi.Input[str]] = {"liftoff.target": "aws"}
        if args.reconcile_function_name is not None:
            config["liftoff.reconcile_function"] = args.reconcile_function_name
        return config

    def _execution_role(self, name: str, args: MwaaAirflowArgs) -> aws.iam.Role:
        role = aws.iam.Role(
            f"{name}-role",
            description="liftoff MWAA execution role",
            assume_role_policy=aws_iam.document(
                [
                    {
                        "Effect": "Allow",
                        "Principal": {
                            "Service": ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]
                        },
                        "Action": "sts:AssumeRole",
                    }
                ]
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        environment_arn = pulumi.Output.concat(
            "arn:aws:airflow:",
            args.region,
            ":",
            identity.account_id,
            ":environment/",
            args.environment_name,
        )
        log_groups = pulumi.Output.concat(
            "arn:aws:logs:",
            args.region,
            ":",
            identity.account_id,
            ":log-group:airflow-",
            args.environment_name,
            "-*",
        )
        celery_queues = pulumi.Output.concat("arn:aws:sqs:", args.region, ":*:airflow-celery-*")
        inputs = [
            environment_arn,
            self.dag_bucket.arn,
            log_groups,
            celery_queues,
            args.kms_key_arn,
            args.reconcile_function_arn or "",
        ]

        def policy(values: list[str]) -> str:
            environment, bucket, logs, queues, key, reconcile = values
            statements = [
                {"Effect": "Allow", "Action": ["airflow:PublishMetrics"], "Resource": environment},
                {
                    "Effect": "Allow",
                    "Action": [
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:ListBucket",
                        "s3:GetBucketLocation",
                        "s3:GetBucketPublicAccessBlock",
                        "s3:GetAccountPublicAccessBlock",
                    ],
                    "Resource": [bucket, f"{bucket}/*"],
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "logs:CreateLogStream",
                        "logs:CreateLogGroup",
                        "logs:PutLogEvents",
                        "logs:GetLogEvents",
                        "logs:GetLogRecord",
                        "logs:GetLogGroupFields",
                        "logs:GetQueryResults",
                        "logs:DescribeLogGroups",
                    ],
                    "Resource": [logs, f"{logs}:*"],
                },
                # CloudWatch metrics have no resource-level permissions.
                {
                    "Effect": "Allow",
                    "Action": ["cloudwatch:PutMetricData"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"cloudwatch:namespace": "AmazonMWAA"}},
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "sqs:ChangeMessageVisibility",
                        "sqs:DeleteMessage",
                        "sqs:GetQueueAttributes",
                        "sqs:GetQueueUrl",
                        "sqs:ReceiveMessage",
                        "sqs:SendMessage",
                    ],
                    "Resource": queues,
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "kms:Decrypt",
                        "kms:DescribeKey",
                        "kms:GenerateDataKey",
                        "kms:Encrypt",
                    ],
                    "Resource": key,
                },
            ]
            if reconcile:
                statements.append(
                    {"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": reconcile}
                )
            return aws_iam.document(statements)

        aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=role.id,
            policy=pulumi.Output.all(*inputs).apply(policy),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role
