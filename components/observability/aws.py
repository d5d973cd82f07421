"""The signal contract on AWS: CloudWatch alarms, an SNS topic and a dashboard.

Each alarm is named `<prefix>-<signal>-<what>` after the contract's signal it realises (see
`Signal.aws`), carries the signal's meaning and runbook in its description, and notifies one
SNS topic: created here and encrypted with the platform KMS key (whose policy must let
CloudWatch use it: :func:`alarm_key_statement`), or the customer's own
(`liftoff:observability.alarmTopicArn`). Signals AWS cannot observe (stream storage: Kinesis
has no storage limit; backups: RDS runs and retries them) have no alarm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.observability import SIGNALS_BY_NAME
from components.observability.dashboards import cloudwatch_dashboard
from components.observability.settings import AwsObservabilitySettings

# RDS for PostgreSQL: max_connections = LEAST(DBInstanceClassMemory / 9531392, 5000).
# Memory (GiB) of the classes liftoff offers; the alarm is skipped for a class not listed.
RDS_MEMORY_GIB: dict[str, float] = {
    **{f"db.t4g.{size}": gib for size, gib in (("micro", 1), ("small", 2), ("medium", 4))},
    **{f"db.t4g.{size}": gib for size, gib in (("large", 8), ("xlarge", 16), ("2xlarge", 32))},
    **{
        f"db.{family}.{size}": gib * factor
        for family, factor in (("m6g", 1), ("m7g", 1), ("r6g", 2), ("r7g", 2))
        for size, gib in (
            ("large", 8),
            ("xlarge", 16),
            ("2xlarge", 32),
            ("4xlarge", 64),
            ("8xlarge", 128),
            ("12xlarge", 192),
            ("16xlarge", 256),
        )
    },
}
GIB = 1024**3


def rds_max_connections(instance_class: str) -> int | None:
    memory = RDS_MEMORY_GIB.get(instance_class)
    if memory is None:
        return None
    return min(int(memory * GIB / 9531392), 5000)


@dataclass(frozen=True)
class ConsumerFunction:
    """A consumer Lambda function and its on-failure queue."""

    name: str
    """Role in the platform: archiver, loader, broadcaster-<destination>."""
    function_name: pulumi.Input[str]
    queue_name: pulumi.Input[str] | None
    broadcaster: bool = False


@dataclass(frozen=True)
class AwsObservabilityArgs:
    settings: AwsObservabilitySettings
    prefix: str
    """Alarm and dashboard names start with it (`liftoff-<stack>`)."""
    region: str
    kms_key_arn: pulumi.Input[str]
    api_id: pulumi.Input[str]
    stage: pulumi.Input[str]
    collector_function: pulumi.Input[str]
    stream_name: pulumi.Input[str]
    consumers: Sequence[ConsumerFunction]
    db_instance: pulumi.Input[str]
    db_instance_class: str
    db_storage_gb: int
    reconcile_function: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


def alarm_key_statement(account_id: str, region: str, prefix: str, partition: str = "aws") -> dict:
    """The platform key's policy statement letting CloudWatch alarms of this stack publish to
    the KMS-encrypted alarm topic (without it CloudWatch cannot, and alarms are dropped)."""
    return {
        "Sid": "CloudWatchAlarmsPublishToTheEncryptedTopic",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account_id},
            "ArnLike": {
                "aws:SourceArn": (
                    f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:{prefix}-*"
                )
            },
        },
    }


class AwsObservability(pulumi.ComponentResource):
    """Alarms for every signal AWS can observe, their topic and a dashboard."""

    topic_arn: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]

    def __init__(
        self, name: str, args: AwsObservabilityArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:observability:AwsObservability", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        self.topic: aws.sns.Topic | None = None
        if settings.alarm_topic_arn:
            self.topic_arn = pulumi.Output.from_input(settings.alarm_topic_arn)
        else:
            self.topic = aws.sns.Topic(
                f"{name}-alarms",
                name=f"{args.prefix}-alarms",
                kms_master_key_id=args.kms_key_arn,
                opts=child,
            )
            aws.sns.TopicPolicy(
                f"{name}-alarms-policy",
                arn=self.topic.arn,
                policy=pulumi.Output.all(self.topic.arn, args.kms_key_arn).apply(
                    lambda values: _topic_policy(values[0], values[1], args.region, args.prefix)
                ),
                opts=child,
            )
            self.topic_arn = self.topic.arn
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        self._ingestion()
        self._consumers()
        self._database()
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=args.prefix,
            dashboard_body=self._dashboard_body(),
            opts=child,
        )
        region = args.region
        self.dashboard_url = self.dashboard.dashboard_name.apply(
            lambda dashboard: (
                f"https://{region}.console.aws.amazon.com/cloudwatch/home"
                f"?region={region}#dashboards:name={dashboard}"
            )
        )
        self.register_outputs({"topicArn": self.topic_arn, "dashboardUrl": self.dashboard_url})

    # --- alarms ---------------------------------------------------------------------------------

    def _alarm(self, signal: str, what: str, **spec: Any) -> aws.cloudwatch.MetricAlarm:
        contract = SIGNALS_BY_NAME[signal]
        alarm_name = f"{self._args.prefix}-{signal}-{what}"
        description = f"[{contract.severity}] {contract.meaning} What to do: {contract.runbook}"
        spec.setdefault("treat_missing_data", "notBreaching")
        alarm = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{signal}-{what}",
            name=alarm_name,
            alarm_description=description[:1024],
            alarm_actions=[self.topic_arn],
            ok_actions=[self.topic_arn],
            opts=pulumi.ResourceOptions(parent=self),
            **spec,
        )
        self.alarms[f"{signal}-{what}"] = alarm
        return alarm

    def _threshold(self, key: str) -> float:
        return self._args.settings.threshold(key)

    def _ingestion(self) -> None:
        args = self._args
        api = {"ApiId": args.api_id, "Stage": args.stage}

        def api_metric(metric_id: str, metric: str) -> dict[str, Any]:
            return {
                "id": metric_id,
                "metric": {
                    "namespace": "AWS/ApiGateway",
                    "metric_name": metric,
                    "dimensions": api,
                    "period": 300,
                    "stat": "Sum",
                },
                "return_data": False,
            }

        # HTTP APIs count 503 (stream refused) among 5xx: the ratio covers both.
        self._alarm(
            "LiftoffIngestionErrors",
            "api-5xx",
            comparison_operator="GreaterThanThreshold",
            threshold=self._threshold("ingestionErrorRatio"),
            evaluation_periods=1,
            metric_queries=[
                api_metric("errors", "5xx"),
                api_metric("requests", "Count"),
                {
                    "id": "ratio",
                    "expression": "IF(requests > 0, errors / requests, 0)",
                    "label": "5xx / requests",
                    "return_data": True,
                },
            ],
        )
        self._alarm(
            "LiftoffIngestionErrors",
            "collector-errors",
            **_simple("AWS/Lambda", "Errors", {"FunctionName": args.collector_function}),
        )
        self._alarm(
            "LiftoffIngestionRefused",
            "collector-throttles",
            **_simple("AWS/Lambda", "Throttles", {"FunctionName": args.collector_function}),
        )
        self._alarm(
            "LiftoffIngestionRefused",
            "stream-write-throttled",
            **_simple(
                "AWS/Kinesis",
                "WriteProvisionedThroughputExceeded",
                {"StreamName": args.stream_name},
            ),
        )
        self._alarm(
            "LiftoffIngestionLatency",
            "api-p99",
            namespace="AWS/ApiGateway",
            metric_name="Latency",
            dimensions=api,
            extended_statistic="p99",
            period=300,
            evaluation_periods=2,
            comparison_operator="GreaterThanThreshold",
            threshold=self._threshold("ingestionLatencySeconds") * 1000,  # milliseconds
        )

    def _consumers(self) -> None:
        args = self._args
        self._alarm(
            "LiftoffConsumerLag",
            "stream-read-throttled",
            **_simple(
                "AWS/Kinesis", "ReadProvisionedThroughputExceeded", {"StreamName": args.stream_name}
            ),
        )
        for consumer in args.consumers:
            function = {"FunctionName": consumer.function_name}
            self._alarm(
                "LiftoffConsumerLagAge",
                consumer.name,
                namespace="AWS/Lambda",
                metric_name="IteratorAge",
                dimensions=function,
                statistic="Maximum",
                period=60,
                evaluation_periods=5,
                comparison_operator="GreaterThanThreshold",
                threshold=self._threshold("consumerLagSeconds") * 1000,  # milliseconds
            )
            if consumer.queue_name is not None:
                self._alarm(
                    "LiftoffDeadLetters",
                    consumer.name,
                    namespace="AWS/SQS",
                    metric_name="ApproximateNumberOfMessagesVisible",
                    dimensions={"QueueName": consumer.queue_name},
                    statistic="Maximum",
                    period=300,
                    evaluation_periods=1,
                    comparison_operator="GreaterThanThreshold",
                    threshold=self._threshold("deadLetters"),
                )
            if consumer.broadcaster:
                self._alarm(
                    "LiftoffDestinationFailing",
                    consumer.name,
                    **_simple("AWS/Lambda", "Errors", function),
                )
        if args.reconcile_function is not None:
            self._alarm(
                "LiftoffReconcileFailed",
                "function-errors",
                **_simple("AWS/Lambda", "Errors", {"FunctionName": args.reconcile_function}),
            )

    def _database(self) -> None:
        args = self._args
        database = {"DBInstanceIdentifier": args.db_instance}

        def rds(metric: str, statistic: str, periods: int, **spec: Any) -> dict[str, Any]:
            return {
                "namespace": "AWS/RDS",
                "metric_name": metric,
                "dimensions": database,
                "statistic": statistic,
                "period": 300,
                "evaluation_periods": periods,
                **spec,
            }

        # RDS publishes DatabaseConnections every minute while the instance runs: no data for
        # 5 minutes means it is down (or stopped).
        self._alarm(
            "LiftoffPostgresDown",
            "no-metrics",
            namespace="AWS/RDS",
            metric_name="DatabaseConnections",
            dimensions=database,
            statistic="SampleCount",
            period=60,
            evaluation_periods=5,
            comparison_operator="LessThanThreshold",
            threshold=1,
            treat_missing_data="breaching",
        )
        maximum = rds_max_connections(args.db_instance_class)
        if maximum is not None:
            self._alarm(
                "LiftoffPostgresConnections",
                "connections",
                **rds(
                    "DatabaseConnections",
                    "Maximum",
                    2,
                    comparison_operator="GreaterThanThreshold",
                    threshold=round(self._threshold("postgresConnectionsRatio") * maximum),
                ),
            )
        self._alarm(
            "LiftoffPostgresStorage",
            "free-storage",
            **rds(
                "FreeStorageSpace",
                "Minimum",
                3,
                comparison_operator="LessThanThreshold",
                threshold=self._threshold("postgresFreeStorageRatio") * args.db_storage_gb * GIB,
            ),
        )
        self._alarm(
            "LiftoffPostgresCpu",
            "cpu",
            **rds(
                "CPUUtilization",
                "Average",
                3,
                comparison_operator="GreaterThanThreshold",
                threshold=self._threshold("postgresCpuRatio") * 100,
            ),
        )

    # --- dashboard ------------------------------------------------------------------------------

    def _dashboard_body(self) -> pulumi.Output[str]:
        args = self._args
        region = args.region
        names = {
            "api": args.api_id,
            "stage": args.stage,
            "collector": args.collector_function,
            "stream": args.stream_name,
            "db": args.db_instance,
            **{f"fn:{c.name}": c.function_name for c in args.consumers},
            **{f"q:{c.name}": c.queue_name for c in args.consumers if c.queue_name is not None},
        }
        alarm_arns = [alarm.arn for alarm in self.alarms.values()]
        consumers = [c.name for c in args.consumers]
        keys = sorted(names)

        def body(values: list[Any]) -> str:
            resolved = dict(zip(keys, values[: len(keys)], strict=True))
            arns = values[len(keys) :]
            return json.dumps(
                cloudwatch_dashboard(resolved, consumers, region, sorted(arns)), sort_keys=True
            )

        return pulumi.Output.all(*(names[k] for k in keys), *alarm_arns).apply(body)


def _simple(namespace: str, metric: str, dimensions: Mapping[str, Any]) -> dict[str, Any]:
    """Sum over 5 minutes above zero: any occurrence is worth a look."""
    return {
        "namespace": namespace,
        "metric_name": metric,
        "dimensions": dict(dimensions),
        "statistic": "Sum",
        "period": 300,
        "evaluation_periods": 1,
        "comparison_operator": "GreaterThanThreshold",
        "threshold": 0,
    }


def _topic_policy(topic_arn: str, key_arn: str, region: str, prefix: str) -> str:
    # arn:<partition>:kms:<region>:<account>:key/<id>
    parts = key_arn.split(":")
    partition, account = (parts[1], parts[4]) if len(parts) > 4 else ("aws", "")
    return aws_iam.document(
        [
            {
                "Sid": "CloudWatchAlarmsOfThisStack",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{partition}:cloudwatch:{region}:{account}:alarm:"
                        f"{prefix}-*"
                    },
                },
            },
        ]
    )
