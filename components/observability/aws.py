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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.consumers import AwsConsumersContract, ConsumerFunction
from components.ingest import AwsIngestContract
from components.observability import SIGNALS_BY_NAME, CloudWatchMetrics
from components.observability.dashboards import CloudWatchSources, cloudwatch_dashboard
from components.observability.settings import AwsObservabilitySettings
from components.postgres import AwsPostgresContract
from components.stream import AwsStreamContract
from services.consumers.broadcaster.contract import FILTERED_LOG_MESSAGE, FILTERED_LOG_TOTAL
from services.consumers.loader.contract import DISCARDS_LOG_MESSAGE, DISCARDS_LOG_TOTAL
from services.consumers.loader.contract import NAME as LOADER

# Counters the consumer functions log (metric filters on their log groups), in
# `Liftoff/<prefix>`: one namespace per stack.
LOG_METRICS_NAMESPACE = "Liftoff"
DISCARDS_METRIC = "WarehouseDiscards"
FILTERED_METRIC = "BroadcasterFiltered"

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
ABOVE, BELOW = "GreaterThanThreshold", "LessThanThreshold"


def rds_max_connections(instance_class: str) -> int | None:
    memory = RDS_MEMORY_GIB.get(instance_class)
    if memory is None:
        return None
    return min(int(memory * GIB / 9531392), 5000)


@dataclass(frozen=True)
class AwsObservabilityArgs:
    settings: AwsObservabilitySettings
    prefix: str
    """Alarm and dashboard names start with it (`liftoff-<stack>`)."""
    region: str
    kms_key_arn: pulumi.Input[str]
    ingest: AwsIngestContract
    stream: AwsStreamContract
    consumers: AwsConsumersContract
    postgres: AwsPostgresContract
    db_instance_class: str
    """The RDS instance class (its memory bounds max_connections)."""
    db_storage_gb: int
    tags: Mapping[str, str] = field(default_factory=dict)


def alarm_key_statement(
    account_id: str, region: str, prefix: str, partition: str = "aws"
) -> dict[str, Any]:
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
        self.log_metrics: dict[str, aws.cloudwatch.LogMetricFilter] = {}
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

    def _dead_letter_alarm(self, what: str, queue: CloudWatchMetrics) -> None:
        """Events kept in an SQS queue for someone to look at (every queue the stack has)."""
        depth = self._threshold("deadLetters")
        self._alarm(
            "LiftoffDeadLetters",
            what,
            **_condition(queue, "ApproximateNumberOfMessagesVisible", ABOVE, depth, "Maximum"),
        )

    def _threshold(self, key: str) -> float:
        return self._args.settings.threshold(key)

    def _ingestion(self) -> None:
        args = self._args
        api, collector = args.ingest.api_metrics, args.ingest.function_metrics

        def api_metric(metric_id: str, metric: str) -> dict[str, Any]:
            return {
                "id": metric_id,
                "metric": {**_metric(api, metric), "period": 300, "stat": "Sum"},
                "return_data": False,
            }

        # HTTP APIs count 503 (stream refused) among 5xx: the ratio covers both.
        self._alarm(
            "LiftoffIngestionErrors",
            "api-5xx",
            comparison_operator=ABOVE,
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
        self._alarm("LiftoffIngestionErrors", "collector-errors", **_simple(collector, "Errors"))
        # Invalid events the collector kept (their valid neighbours were accepted): the
        # clients sending them lose those events until someone looks.
        self._dead_letter_alarm("collector-quarantine", args.ingest.quarantine_metrics)
        self._alarm(
            "LiftoffIngestionRefused", "collector-throttles", **_simple(collector, "Throttles")
        )
        self._alarm(
            "LiftoffIngestionRefused",
            "stream-write-throttled",
            **_simple(args.stream.metrics, "WriteProvisionedThroughputExceeded"),
        )
        self._alarm(
            "LiftoffIngestionLatency",
            "api-p99",
            **_metric(api, "Latency"),
            extended_statistic="p99",
            period=300,
            evaluation_periods=2,
            comparison_operator=ABOVE,
            threshold=self._threshold("ingestionLatencySeconds") * 1000,  # milliseconds
        )

    def _consumers(self) -> None:
        args = self._args
        self._alarm(
            "LiftoffConsumerLag",
            "stream-read-throttled",
            **_simple(args.stream.metrics, "ReadProvisionedThroughputExceeded"),
        )
        for consumer in args.consumers.functions:
            lag = self._threshold("consumerLagSeconds") * 1000  # milliseconds
            self._alarm(
                "LiftoffConsumerLagAge",
                consumer.name,
                **_condition(consumer.metrics, "IteratorAge", ABOVE, lag, "Maximum", 60, 5),
            )
            self._dead_letter_alarm(consumer.name, consumer.dead_letter_metrics)
            if consumer.broadcaster:
                self._alarm(
                    "LiftoffDestinationFailing",
                    consumer.name,
                    **_simple(consumer.metrics, "Errors"),
                )
                self._log_metric(
                    consumer, FILTERED_METRIC, FILTERED_LOG_MESSAGE, FILTERED_LOG_TOTAL
                )
            if consumer.name == LOADER:
                self._warehouse_discards(consumer)
        reconcile = args.consumers.reconcile
        if reconcile is not None:
            self._alarm(
                "LiftoffReconcileFailed", "function-errors", **_simple(reconcile.metrics, "Errors")
            )
            self._dead_letter_alarm(reconcile.name, reconcile.dead_letter_metrics)

    def _log_metric(
        self, consumer: ConsumerFunction, metric: str, message: str, total: str
    ) -> CloudWatchMetrics:
        """`metric` in the stack's namespace, from the `total` field of the consumer's log
        line `message` (the names are in its contract: a Lambda serves no /metrics)."""
        assert consumer.log_group_name is not None
        namespace = f"{LOG_METRICS_NAMESPACE}/{self._args.prefix}"
        transformation: dict[str, Any] = {
            "name": metric,
            "namespace": namespace,
            "value": f"$.{total}",
        }
        if consumer.broadcaster:  # a broadcaster's line names its destination
            transformation["dimensions"] = {"Destination": "$.destination"}
        self.log_metrics[f"{consumer.name}-{metric}"] = aws.cloudwatch.LogMetricFilter(
            f"{self._name}-{consumer.name}-{metric}",
            name=f"{self._args.prefix}-{consumer.name}-{metric}",
            log_group_name=consumer.log_group_name,
            pattern=f'{{ $.message = "{message}" }}',
            metric_transformation={**transformation, "unit": "Count"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        return CloudWatchMetrics(namespace, {})

    def _warehouse_discards(self, loader: ConsumerFunction) -> None:
        """Typed values the loader discarded, summed over 15 minutes, every table together."""
        metrics = self._log_metric(
            loader, DISCARDS_METRIC, DISCARDS_LOG_MESSAGE, DISCARDS_LOG_TOTAL
        )
        threshold = self._threshold("warehouseDiscards")
        self._alarm(
            "LiftoffWarehouseDiscards",
            "loader",
            **_condition(metrics, DISCARDS_METRIC, ABOVE, threshold, "Sum", 900),
        )

    def _database(self) -> None:
        args = self._args
        database = args.postgres.metrics
        # RDS publishes DatabaseConnections every minute while the instance runs: no data for
        # 5 minutes means it is down (or stopped).
        self._alarm(
            "LiftoffPostgresDown",
            "no-metrics",
            **_condition(database, "DatabaseConnections", BELOW, 1, "SampleCount", 60, 5),
            treat_missing_data="breaching",
        )
        maximum = rds_max_connections(args.db_instance_class)
        if maximum is not None:
            connections = round(self._threshold("postgresConnectionsRatio") * maximum)
            self._alarm(
                "LiftoffPostgresConnections",
                "connections",
                **_condition(
                    database,
                    "DatabaseConnections",
                    ABOVE,
                    connections,
                    "Maximum",
                    periods=2,
                ),
            )
        free = self._threshold("postgresFreeStorageRatio") * args.db_storage_gb * GIB
        self._alarm(
            "LiftoffPostgresStorage",
            "free-storage",
            **_condition(database, "FreeStorageSpace", BELOW, free, "Minimum", periods=3),
        )
        cpu = self._threshold("postgresCpuRatio") * 100
        self._alarm(
            "LiftoffPostgresCpu",
            "cpu",
            **_condition(database, "CPUUtilization", ABOVE, cpu, "Average", periods=3),
        )

    # --- dashboard ------------------------------------------------------------------------------

    def _dashboard_body(self) -> pulumi.Output[str]:
        args = self._args
        region = args.region
        consumers = args.consumers.functions
        sources = pulumi.Output.all(
            _resolved(args.ingest.api_metrics),
            _resolved(args.ingest.function_metrics),
            _resolved(args.stream.metrics),
            _resolved(args.postgres.metrics),
            *(_resolved(c.metrics) for c in consumers),
            *(_resolved(c.dead_letter_metrics) for c in consumers),
        )
        alarm_arns = pulumi.Output.all(*(alarm.arn for alarm in self.alarms.values()))

        def body(resolved: list[Any]) -> str:
            metrics, arns = resolved
            functions, queues = metrics[4 : 4 + len(consumers)], metrics[4 + len(consumers) :]
            dashboard = CloudWatchSources(
                api=metrics[0],
                collector=metrics[1],
                stream=metrics[2],
                database=metrics[3],
                consumers=list(zip(functions, queues, strict=True)),
            )
            return json.dumps(cloudwatch_dashboard(dashboard, region, sorted(arns)), sort_keys=True)

        return pulumi.Output.all(sources, alarm_arns).apply(body)


def _metric(metrics: CloudWatchMetrics, metric: str) -> dict[str, Any]:
    """A metric of `metrics` as an alarm names it."""
    return {
        "namespace": metrics.namespace,
        "metric_name": metric,
        "dimensions": dict(metrics.dimensions),
    }


def _resolved(metrics: CloudWatchMetrics) -> pulumi.Output[CloudWatchMetrics]:
    """`metrics` with every dimension resolved (a dashboard body is plain JSON)."""
    keys = list(metrics.dimensions)
    return pulumi.Output.all(*metrics.dimensions.values()).apply(
        lambda values: CloudWatchMetrics(metrics.namespace, dict(zip(keys, values, strict=True)))
    )


def _condition(
    metrics: CloudWatchMetrics,
    metric: str,
    comparison: str,
    threshold: float,
    statistic: str = "Sum",
    period: int = 300,
    periods: int = 1,
) -> dict[str, Any]:
    """An alarm's condition: `statistic` of `metric` over `periods` periods of `period` s
    compared with `threshold`."""
    return {
        **_metric(metrics, metric),
        "statistic": statistic,
        "period": period,
        "evaluation_periods": periods,
        "comparison_operator": comparison,
        "threshold": threshold,
    }


def _simple(metrics: CloudWatchMetrics, metric: str) -> dict[str, Any]:
    """Sum over 5 minutes above zero: any occurrence is worth a look."""
    return _condition(metrics, metric, ABOVE, 0)


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
