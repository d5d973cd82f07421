"""Airflow on AWS: an Amazon MWAA environment in the stack's private subnets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.airflow import DAGS_DIR, DAGS_IGNORE_PATH, AirflowEndpoint, dag_files
from components.airflow.settings import AwsAirflowSettings
from components.aws_logs import LogSettings, log_group
from components.aws_s3 import SecureBucket, secure_bucket
from components.consumers import ConsumerFunction
from components.network import AwsNetworkContract
from components.network.aws import MWAA_ENDPOINTS

LOG_LEVEL = "INFO"
# MWAA's logging parts and the group each writes to: `airflow-<environment>-<suffix>`.
LOG_PARTS = {
    "dag_processing_logs": "DAGProcessing",
    "scheduler_logs": "Scheduler",
    "task_logs": "Task",
    "webserver_logs": "WebServer",
    "worker_logs": "Worker",
}
WEB_PORT = 443


@dataclass(frozen=True)
class MwaaAirflowArgs:
    settings: AwsAirflowSettings
    network: AwsNetworkContract
    environment_name: str
    """Physical MWAA environment name, e.g. `liftoff-prod-airflow`."""
    region: str
    kms_key_arn: pulumi.Input[str]
    reconcile: ConsumerFunction | None = None
    """The ops function the DAGs invoke (None without a warehouse)."""
    regulation: ConsumerFunction | None = None
    """The same function when it runs regulations (`[liftoff] regulation_function`)."""
    protect: bool = True
    logs: LogSettings | None = None
    """Default: 365-day retention, AWS-managed encryption of MWAA's five log groups."""


class MwaaAirflow(pulumi.ComponentResource):
    """An MWAA environment (Airflow 3) with:

    - a DAG bucket (versioned, as MWAA requires; KMS-encrypted; public access blocked;
      TLS-only) filled from `dags/`, one object per file with a content hash, so the same
      files never show a diff;
    - its own security group (MWAA's components reach each other through it; nothing else
      may reach in) in two of the stack's private subnets;
    - an execution role following AWS's execution-role policy for an AWS-owned key (see
      `_execution_role`), plus invoking one function for the reconciliation DAG;
    - its five log groups created beforehand (MWAA writes into existing groups), so they get
      the stack's retention and the platform key;
    - the web server private unless the stack opts out; `webAccessCidrs` /
      `webAccessSecurityGroupIds` admit a VPN or bastion to it on HTTPS.
    """

    def __init__(
        self, name: str, args: MwaaAirflowArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:airflow:MwaaAirflow", name, None, opts)
        dag_bucket, objects = self._declare_dags(name, args)
        self._declare_security_group(name, args)
        logs = args.logs or LogSettings(retention_days=365, kms_key_arn=None)
        self.log_groups = [
            log_group(
                f"{name}-logs-{suffix.lower()}",
                log_group_name=f"airflow-{args.environment_name}-{suffix}",
                logs=logs,
                parent=self,
            )
            for suffix in LOG_PARTS.values()
        ]
        self.role, self.role_policy = self._execution_role(name, args)
        self.environment = self._declare_environment(name, args, dag_bucket, objects)
        url = pulumi.Output.concat("https://", self.environment.webserver_url)
        self.endpoint = AirflowEndpoint(url=url)
        self.register_outputs({"url": url, "dagBucket": self.dag_bucket.bucket})

    def _declare_dags(
        self, name: str, args: MwaaAirflowArgs
    ) -> tuple[SecureBucket, list[aws.s3.BucketObjectv2]]:
        """The DAG bucket and liftoff's DAG folder in it."""
        child = pulumi.ResourceOptions(parent=self)
        dag_bucket = secure_bucket(
            f"{name}-dags",
            kms_key_arn=args.kms_key_arn,
            parent=self,
            name_prefix=f"{args.environment_name}-dags-",
            protect=args.protect,
        )
        self.dag_bucket = dag_bucket.bucket
        # The DAGs and the module they share, and the ignore file keeping that module out of
        # DAG parsing (MWAA reads `.airflowignore` in its DAG folder).
        files = [(path, path.stem, "text/x-python") for path in dag_files()]
        files.append((DAGS_IGNORE_PATH, "airflowignore", "text/plain"))
        objects = [
            aws.s3.BucketObjectv2(
                f"{name}-dag-{role}",
                bucket=self.dag_bucket.id,
                key=f"dags/{path.relative_to(DAGS_DIR).as_posix()}",
                source=pulumi.FileAsset(str(path)),
                source_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
                content_type=content_type,
                opts=child,
            )
            for path, role, content_type in files
        ]
        return dag_bucket, objects

    def _declare_security_group(self, name: str, args: MwaaAirflowArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
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
                },
                *self._web_access_rules(settings),
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

    def _declare_environment(
        self,
        name: str,
        args: MwaaAirflowArgs,
        dag_bucket: SecureBucket,
        objects: list[aws.s3.BucketObjectv2],
    ) -> aws.mwaa.Environment:
        settings = args.settings
        return aws.mwaa.Environment(
            f"{name}-environment",
            name=args.environment_name,
            airflow_version=settings.version,
            environment_class=settings.environment_class,
            min_workers=settings.min_workers,
            max_workers=settings.max_workers,
            source_bucket_arn=self.dag_bucket.arn,
            dag_s3_path="dags",
            execution_role_arn=self.role.arn,
            # No kms_key: MWAA encrypts its metadata and Celery queues (in MWAA's account) with
            # an AWS-owned key; the execution role follows AWS's policy for that choice.
            network_configuration={
                "security_group_ids": [self.security_group.id],
                # MWAA takes exactly two private subnets in different zones.
                "subnet_ids": args.network.private_subnet_ids.apply(lambda ids: ids[:2]),
            },
            webserver_access_mode="PUBLIC_ONLY"
            if settings.web_access == "public"
            else "PRIVATE_ONLY",
            logging_configuration={
                part: {"enabled": True, "log_level": LOG_LEVEL} for part in LOG_PARTS
            },
            airflow_configuration_options=self._liftoff_config(args),
            # Edges the engine cannot infer: MWAA requires its source bucket versioned and
            # closed to the public; without the rest the environment can come up unable to read
            # its DAGs, reach AWS from its private subnets, write into groups that carry the
            # stack's retention, or invoke a reconcile function not yet granted its database
            # and archive.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    *objects,
                    *dag_bucket.settings,
                    self.role_policy,
                    *self.log_groups,
                    *args.network.endpoints_for((*MWAA_ENDPOINTS, "s3")),
                    *(args.reconcile.ready if args.reconcile is not None else ()),
                ],
                protect=args.protect,
            ),
        )

    @staticmethod
    def _liftoff_config(args: MwaaAirflowArgs) -> dict[str, pulumi.Input[str]]:
        """The `[liftoff]` section the DAGs read: the ops function, named once per operation
        it runs (one function, one `lambda:InvokeFunction` grant)."""
        config: dict[str, pulumi.Input[str]] = {"liftoff.target": "aws"}
        if args.reconcile is not None:
            config["liftoff.reconcile_function"] = args.reconcile.function_name
        if args.regulation is not None:
            assert args.reconcile is not None and args.regulation.name == args.reconcile.name
            config["liftoff.regulation_function"] = args.regulation.function_name
        return config

    @staticmethod
    def _web_access_rules(settings: AwsAirflowSettings) -> list[dict[str, Any]]:
        """HTTPS to the private web server (MWAA's VPC endpoint uses this group) from a VPN or
        bastion; none by default."""
        rules: list[dict[str, Any]] = [
            {
                "protocol": "tcp",
                "from_port": WEB_PORT,
                "to_port": WEB_PORT,
                "cidr_blocks": [cidr],
                "description": f"Airflow UI from {cidr}",
            }
            for cidr in settings.web_access_cidrs
        ]
        rules += [
            {
                "protocol": "tcp",
                "from_port": WEB_PORT,
                "to_port": WEB_PORT,
                "security_groups": [group],
                "description": f"Airflow UI from {group}",
            }
            for group in settings.web_access_security_group_ids
        ]
        return rules

    def _execution_role(
        self, name: str, args: MwaaAirflowArgs
    ) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
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
        reconcile = args.reconcile.function_arn if args.reconcile is not None else ""
        inputs = [self.dag_bucket.arn, args.kms_key_arn, reconcile, identity.account_id]
        region, environment = args.region, args.environment_name

        def policy(values: list[str]) -> str:
            bucket, key, reconcile, account = values
            return aws_iam.document(
                mwaa_execution_statements(
                    environment=f"arn:aws:airflow:{region}:{account}:environment/{environment}",
                    bucket=bucket,
                    log_groups=f"arn:aws:logs:{region}:{account}:log-group:airflow-{environment}-*",
                    platform_key=key,
                    account=account,
                    region=region,
                    reconcile_function=reconcile or None,
                )
            )

        role_policy = aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=role.id,
            policy=pulumi.Output.all(*inputs).apply(policy),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role, role_policy


def mwaa_execution_statements(
    *,
    environment: str,
    bucket: str,
    log_groups: str,
    platform_key: str,
    account: str,
    region: str,
    reconcile_function: str | None,
) -> list[dict[str, Any]]:
    """AWS's execution-role policy for an environment on an AWS-owned key, statement by
    statement (docs.aws.amazon.com/mwaa/latest/userguide/mwaa-create-role.html), except:

    - S3: AWS's `s3:GetObject*`, `s3:GetBucket*`, `s3:List*` are spelled out as the calls an
      environment makes on its DAG bucket (the policy pack refuses wildcard actions); AWS's
      `Deny s3:ListAllMyBuckets` is left out: nothing here allows it.
    - `kms:GenerateDataKey*` is spelled out as `kms:GenerateDataKey` (what SQS calls).
    - `cloudwatch:PutMetricData` is limited to MWAA's `AmazonMWAA` namespace.
    - added: decrypting the DAG bucket's objects (platform key, through S3 only) and invoking
      the reconcile function.

    Three grants cannot be scoped further, as AWS documents: `logs:DescribeLogGroups`,
    `s3:GetAccountPublicAccessBlock` and `cloudwatch:PutMetricData` have no resource type
    (`*`), and MWAA's Celery queues live in an account of MWAA's (`arn:aws:sqs:<region>:*:`,
    their KMS keys outside this account: `NotResource` this account's keys, via SQS only).
    """
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["airflow:PublishMetrics"], "Resource": environment},
        _dag_bucket_statement(bucket),
        *_log_statements(log_groups),
        # No resource type: an account-level setting.
        {"Effect": "Allow", "Action": ["s3:GetAccountPublicAccessBlock"], "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "AmazonMWAA"}},
        },
        *_celery_queue_statements(region, account),
        {
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": platform_key,
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        },
    ]
    if reconcile_function:
        statements.append(
            {"Effect": "Allow", "Action": ["lambda:InvokeFunction"], "Resource": reconcile_function}
        )
    return statements


def _dag_bucket_statement(bucket: str) -> dict[str, Any]:
    """Reading the DAG bucket: the calls an environment makes on it, spelled out."""
    return {
        "Effect": "Allow",
        "Action": [
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:GetBucketLocation",
            "s3:GetBucketPublicAccessBlock",
            "s3:GetBucketVersioning",
            "s3:GetEncryptionConfiguration",
            "s3:ListBucket",
            "s3:ListBucketVersions",
        ],
        "Resource": [bucket, f"{bucket}/*"],
    }


def _log_statements(log_groups: str) -> list[dict[str, Any]]:
    """Writing and reading its own log groups; listing them (no resource type: a listing
    cannot name a group)."""
    return [
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
            ],
            "Resource": [log_groups, f"{log_groups}:*"],
        },
        {"Effect": "Allow", "Action": ["logs:DescribeLogGroups"], "Resource": "*"},
    ]


def _celery_queue_statements(region: str, account: str) -> list[dict[str, Any]]:
    """MWAA's Celery queues, in an account of MWAA's, and their keys (outside this account)."""
    return [
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
            "Resource": f"arn:aws:sqs:{region}:*:airflow-celery-*",
        },
        {
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey", "kms:Encrypt"],
            "NotResource": f"arn:aws:kms:*:{account}:key/*",
            "Condition": {"StringLike": {"kms:ViaService": [f"sqs.{region}.amazonaws.com"]}},
        },
    ]
