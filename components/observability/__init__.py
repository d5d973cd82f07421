"""The signal contract: the conditions under which events are at risk, defined once.

Each :class:`Signal` names one condition, what it means, its threshold (configurable under
`liftoff:observability.thresholds` where customers differ) and what to do. The two targets
realise the same list natively: `kubernetes.py` renders every signal's PromQL into one
`PrometheusRule` (the same rules `promtool` tests), `aws.py` builds CloudWatch alarms named
after the signals AWS can observe. A signal a target cannot observe says why in `aws`.

Where the figures come from is each observed capability's contract, not its internals: on AWS
a capability names its CloudWatch namespace and dimensions (`CloudWatchMetrics`), on
Kubernetes the pods and port serving its `/metrics` (`MetricsTarget`).

`settings.py` reads `liftoff:observability`; this module imports no provider SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi


@dataclass(frozen=True)
class CloudWatchMetrics:
    """Where one AWS resource's CloudWatch metrics are: the namespace and the dimensions that
    name the resource (`AWS/Kinesis`, `{"StreamName": <name>}`). A capability's contract
    carries it, as CDK's `IStream` carries its metrics; observability reads nothing else."""

    namespace: str
    dimensions: Mapping[str, pulumi.Input[str]]

    def dashboard_row(self, metric: str, *options: dict[str, Any]) -> list[Any]:
        """The metric as a CloudWatch dashboard widget names it (dimensions resolved)."""
        return [
            self.namespace,
            metric,
            *(p for pair in self.dimensions.items() for p in pair),
            *options,
        ]


@dataclass(frozen=True)
class MetricsTarget:
    """Pods serving `/metrics` on a named container port (what a PodMonitor scrapes and a
    scrape NetworkPolicy admits Prometheus to)."""

    name: str
    pod_selector: Mapping[str, str]
    port_name: str
    port: int


Severity = Literal["critical", "warning"]


@dataclass(frozen=True)
class Threshold:
    key: str
    """Config key under `liftoff:observability.thresholds`."""
    default: float
    minimum: float
    maximum: float
    unit: str
    """Shown in docs and errors: `ratio`, `seconds`, `events`, `hours`."""


@dataclass(frozen=True)
class Signal:
    name: str
    """Alert name on Kubernetes, alarm name suffix on AWS (stable: dashboards and routes use it)."""
    severity: Severity
    meaning: str
    runbook: str
    expr: str
    """PromQL with `{threshold}` where the configured threshold goes. Aggregated by namespace
    (one stack per namespace) and the signal's own labels, so one Prometheus can watch many."""
    for_: str
    """How long the condition must hold before the alert fires (Prometheus duration)."""
    threshold: Threshold | None = None
    kubernetes: str = ""
    """Where the Kubernetes figure comes from."""
    aws: str = ""
    """The CloudWatch alarm(s) realising it on AWS, or why there is none."""

    def promql(self, thresholds: Mapping[str, float]) -> str:
        if self.threshold is None:
            return self.expr
        value = thresholds.get(self.threshold.key, self.threshold.default)
        return self.expr.replace("{threshold}", number_text(value))


def number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


SIGNALS: tuple[Signal, ...] = (
    Signal(
        name="LiftoffIngestionErrors",
        severity="critical",
        meaning="The collector answers 5xx (other than 503) to more than the threshold share of "
        "requests: SDKs retry, but events are at risk if it persists.",
        runbook="Read the collector's logs for `unexpected error` lines (field `route`); a "
        "deploy is the usual cause: roll it back. On AWS also check the collector function's "
        "Errors and its log group.",
        expr='sum by (namespace) (rate(liftoff_collector_requests_total{status=~"5..",'
        'status!="503"}[5m])) / sum by (namespace) (rate(liftoff_collector_requests_total[5m]))'
        " > {threshold}",
        for_="5m",
        threshold=Threshold("ingestionErrorRatio", 0.01, 0.0, 1.0, "ratio"),
        kubernetes="collector `/metrics`: liftoff_collector_requests_total{route,status}",
        aws="API Gateway `5xx` / `Count` over 5 min (HTTP APIs count 503 refusals among 5xx) "
        "and collector Lambda `Errors` > 0",
    ),
    Signal(
        name="LiftoffIngestionRefused",
        severity="critical",
        meaning="The collector answers 503: the stream did not acknowledge every event (no "
        "quorum, full, throttled or unreachable). Clients retry with Retry-After; nothing "
        "was accepted that is not durable, but new events wait on the clients.",
        runbook="Check the stream: on Kubernetes the NATS pods, `nats stream info` (quorum, "
        "storage) and the LiftoffStreamStorage alert; on AWS Kinesis "
        "WriteProvisionedThroughputExceeded (raise shards or use on-demand) and Lambda "
        "Throttles (raise reserved concurrency).",
        expr='sum by (namespace) (rate(liftoff_collector_requests_total{status="503"}[5m])) / '
        "sum by (namespace) (rate(liftoff_collector_requests_total[5m])) > {threshold}",
        for_="5m",
        threshold=Threshold("ingestionRefusalRatio", 0.01, 0.0, 1.0, "ratio"),
        kubernetes='collector `/metrics`: liftoff_collector_requests_total{status="503"}',
        aws="Kinesis `WriteProvisionedThroughputExceeded` > 0 and collector Lambda `Throttles` > 0",
    ),
    Signal(
        name="LiftoffIngestionLatency",
        severity="warning",
        meaning="The 99th percentile of ingestion request time is above the threshold: the "
        "stream is slow to acknowledge or the collector is saturated.",
        runbook="Compare with the stream's health (fsync latency, disk) and the collector's "
        "CPU; scale the collector out (HPA max replicas) or the stream up.",
        expr="histogram_quantile(0.99, sum by (namespace, le) "
        '(rate(liftoff_collector_request_duration_seconds_bucket{route=~"/v1/.*"}[5m]))) '
        "> {threshold}",
        for_="10m",
        threshold=Threshold("ingestionLatencySeconds", 1.0, 0.01, 60.0, "seconds"),
        kubernetes="collector `/metrics`: liftoff_collector_request_duration_seconds histogram",
        aws="API Gateway `Latency` p99",
    ),
    Signal(
        name="LiftoffConsumerLag",
        severity="warning",
        meaning="A consumer (archiver, loader, broadcaster) has more unprocessed events on a "
        "stream than the threshold.",
        runbook="Look at the consumer's logs (field `consumer`): `sink unavailable` means its "
        "destination is down (it retries; fix the destination), otherwise it is too slow for "
        "the traffic: raise its batch size (`batchMaxEvents` of its settings). Events wait in "
        "the stream up to its retention.",
        expr="max by (namespace, stream, consumer) (liftoff_consumer_lag_events) > {threshold}",
        for_="10m",
        threshold=Threshold("consumerLagEvents", 100000, 1, 1e12, "events"),
        kubernetes="every consumer process reports every durable consumer of its stream "
        "(liftoff_consumer_lag_events), so a stopped consumer is still seen",
        aws="Kinesis `ReadProvisionedThroughputExceeded` > 0 (consumers throttled reading; "
        "Lambda reports lag as age: LiftoffConsumerLagAge)",
    ),
    Signal(
        name="LiftoffConsumerLagAge",
        severity="critical",
        meaning="The oldest event a consumer has not processed is older than the threshold: "
        "archive, warehouse or destinations are that far behind, and events near the "
        "stream's retention are at risk of expiring unprocessed.",
        runbook="As LiftoffConsumerLag. If the lag approaches the stream retention, raise the "
        "retention before events expire; the hourly reconciliation repairs the warehouse "
        "from the archive once the archiver has caught up.",
        expr="max by (namespace, stream, consumer) (liftoff_consumer_lag_seconds) > {threshold}",
        for_="5m",
        threshold=Threshold("consumerLagSeconds", 900, 1, 30 * 86400, "seconds"),
        kubernetes="every consumer process: liftoff_consumer_lag_seconds{stream,consumer}",
        aws="Lambda `IteratorAge` (maximum) per consumer function",
    ),
    Signal(
        name="LiftoffDeadLetters",
        severity="warning",
        meaning="Events were parked in the dead letter (a destination refused them for good) "
        "or quarantined by the collector (invalid events in a valid batch).",
        runbook="Inspect the parked events (the dead-letter stream / on-failure queue) and "
        "their reason; fix the cause (mapping, credentials, schema) and replay them.",
        expr='sum by (namespace, consumer) (increase(liftoff_consumer_events_total{outcome="park"}'
        "[15m])) > {threshold} or sum by (namespace) "
        "(increase(liftoff_collector_events_quarantined_total[15m])) > {threshold}",
        for_="0m",
        threshold=Threshold("deadLetters", 0, 0, 1e9, "events per 15 min"),
        kubernetes='consumers: liftoff_consumer_events_total{outcome="park"}; collector: '
        "liftoff_collector_events_quarantined_total",
        aws="SQS `ApproximateNumberOfMessagesVisible` > threshold on each on-failure queue "
        "and on the collector's quarantine queue",
    ),
    Signal(
        name="LiftoffDeadLetterStorage",
        severity="warning",
        meaning="The JetStream dead-letter stream (the collector's quarantine and the events "
        "consumers parked) holds more than the threshold share of its byte bound: at the bound "
        "its oldest messages are dropped to make room for new ones.",
        runbook="Find what fills it: `python -m services quarantine list` and the "
        "LiftoffDeadLetters counters by source and code (a client sending invalid events: fix "
        "it or revoke its write key) or by consumer (a destination refusing everything). "
        "Replay or copy what you need before it is dropped; the bound is 10 % of "
        "`liftoff:stream.storageGb`.",
        expr="max by (namespace, stream) (liftoff_dead_letter_stream_bytes / "
        "liftoff_dead_letter_stream_max_bytes) > {threshold}",
        for_="5m",
        threshold=Threshold("deadLetterStorageRatio", 0.9, 0.05, 1.0, "ratio"),
        kubernetes="every consumer process reads the stream's state: "
        "liftoff_dead_letter_stream_bytes and liftoff_dead_letter_stream_max_bytes{stream}",
        aws="not applicable: the quarantine and dead letters are SQS queues, which have no byte "
        "bound (14 days' retention, 1 MiB per message)",
    ),
    Signal(
        name="LiftoffWarehouseDiscards",
        severity="warning",
        meaning="Values did not fit their typed warehouse column (a property that changed "
        "type): each is stored NULL in its typed table and kept in the source schema's "
        "`discards` table; the raw `events` row is complete and nothing was blocked.",
        runbook="Query `<source>.discards` (table_name, column_name, column_type, value, "
        "message_id): fix the client that sends the other type, or declare the column's type "
        "(`liftoff:warehouse.columns`) and rebuild the table from the raw events.",
        expr="sum by (namespace, source, table) (increase(liftoff_warehouse_discards_total"
        "[15m])) > {threshold} or sum by (namespace, source, table) "
        "(liftoff_warehouse_discards_total unless liftoff_warehouse_discards_total offset 15m) "
        "> {threshold}",
        for_="0m",
        threshold=Threshold("warehouseDiscards", 0, 0, 1e9, "values per 15 min"),
        kubernetes="the loader: liftoff_warehouse_discards_total{source,table} (a series is "
        "made by its first discard, so a new one counts whole)",
        aws="a metric filter on the loader Lambda's log line `typed values discarded` (its "
        "`discarded` total; by source and table in the line and the `discards` tables): "
        "`Liftoff/<prefix>` `WarehouseDiscards` summed over 15 min, every table together",
    ),
    Signal(
        name="LiftoffDestinationFailing",
        severity="warning",
        meaning="More than the threshold share of HTTP attempts to a third-party destination "
        "fail (5xx, 429, network): its events are retried and lag grows.",
        runbook="Check the destination's status page and credentials (4xx); the broadcaster "
        "retries with backoff and parks what can never succeed.",
        expr="sum by (namespace, destination) (rate(liftoff_broadcast_requests_total"
        '{status_class!="2xx"}[15m])) / sum by (namespace, destination) '
        "(rate(liftoff_broadcast_requests_total[15m])) > {threshold}",
        for_="15m",
        threshold=Threshold("destinationFailureRatio", 0.2, 0.0, 1.0, "ratio"),
        kubernetes="broadcasters: liftoff_broadcast_requests_total{destination,result,"
        "status_class}",
        aws="broadcaster Lambda `Errors` (a failing destination fails the batch)",
    ),
    Signal(
        name="LiftoffStreamStorage",
        severity="warning",
        meaning="JetStream file storage is above the threshold share of its limit: when full, "
        "the stream refuses writes and ingestion answers 503.",
        runbook="Shorten `liftoff:stream.retentionHours` (applied in place), or grow the "
        "JetStream volumes by README 'Resizing a volume (Kubernetes)' (a changed "
        "`liftoff:stream.storageGb` alone is refused: it would replace the NATS StatefulSet); "
        "check that consumers are not lagging (storage holds retention, not lag).",
        expr="max by (namespace, server_id) (nats_server_total_message_bytes / "
        "nats_server_max_storage) > {threshold}",
        for_="15m",
        threshold=Threshold("streamStorageRatio", 0.8, 0.05, 1.0, "ratio"),
        kubernetes="the NATS chart's prometheus-nats-exporter (jsz, `-prefix=nats`)",
        aws="not applicable: Kinesis has no storage limit (retention bounds it)",
    ),
    Signal(
        name="LiftoffPostgresDown",
        severity="critical",
        meaning="The platform database does not answer: the warehouse loader retries, Airflow "
        "stops.",
        runbook="Check the Postgres pod (events, PVC, OOM) or the RDS instance's events; "
        "consumers resume by themselves when it is back.",
        expr="min by (namespace) (pg_up) == 0",
        for_="2m",
        kubernetes="postgres_exporter sidecar: pg_up",
        aws="RDS `DatabaseConnections` has no data (the alarm treats missing data as breaching)",
    ),
    Signal(
        name="LiftoffPostgresConnections",
        severity="warning",
        meaning="Connections are above the threshold share of max_connections: new clients "
        "(Airflow tasks, loaders) will be refused.",
        runbook="Find the clients holding connections (pg_stat_activity); enable PgBouncer "
        "(Airflow highAvailability) or raise max_connections with a larger instance.",
        expr="max by (namespace) (sum by (namespace, instance) (pg_stat_database_numbackends) / "
        "on (namespace, instance) pg_settings_max_connections) > {threshold}",
        for_="10m",
        threshold=Threshold("postgresConnectionsRatio", 0.8, 0.05, 1.0, "ratio"),
        kubernetes="postgres_exporter: pg_stat_database_numbackends, pg_settings_max_connections",
        aws="RDS `DatabaseConnections` > threshold x the instance class's max_connections",
    ),
    Signal(
        name="LiftoffPostgresStorage",
        severity="critical",
        meaning="The database volume's free space is below the threshold share: Postgres "
        "stops accepting writes when it is full.",
        runbook="Look for bloat or an unexpected table. Kubernetes: grow the volume by README "
        "'Resizing a volume (Kubernetes)' (a changed `liftoff:postgres.storageGb` alone is "
        "refused: it would replace the StatefulSet). AWS: raise `liftoff:postgres.storageGb` "
        "(RDS grows it in place; storage autoscaling grows it up to 4x by itself at 10 % free).",
        expr="min by (namespace, persistentvolumeclaim) "
        '(kubelet_volume_stats_available_bytes{persistentvolumeclaim=~"data-postgres-.*"} / '
        'kubelet_volume_stats_capacity_bytes{persistentvolumeclaim=~"data-postgres-.*"}) '
        "< {threshold}",
        for_="15m",
        threshold=Threshold("postgresFreeStorageRatio", 0.15, 0.01, 0.9, "ratio"),
        kubernetes="kubelet volume stats of the Postgres PVC",
        aws="RDS `FreeStorageSpace` < threshold x allocated storage",
    ),
    Signal(
        name="LiftoffPostgresCpu",
        severity="warning",
        meaning="The database has used more than the threshold share of its CPU for 15 min.",
        runbook="Look for long queries (pg_stat_activity, pg_stat_statements); move to a larger "
        "instance class or raise the Postgres CPU limit.",
        expr="max by (namespace, pod) (rate(container_cpu_usage_seconds_total"
        '{container="postgres"}[5m]) / on (namespace, pod) group_left '
        'kube_pod_container_resource_limits{container="postgres",resource="cpu"}) > {threshold}',
        for_="15m",
        threshold=Threshold("postgresCpuRatio", 0.9, 0.1, 1.0, "ratio"),
        kubernetes="cAdvisor CPU over kube-state-metrics CPU limit",
        aws="RDS `CPUUtilization` > threshold x 100 %",
    ),
    Signal(
        name="LiftoffBackupMissing",
        severity="critical",
        meaning="No Postgres backup has succeeded for longer than the threshold (the schedule "
        "is daily): a restore would lose more than a day.",
        runbook="Read the last backup Job's logs (`kubectl logs job/...-backup-...`): archive "
        "credentials, disk or pg_dump errors; run the CronJob by hand once fixed.",
        expr="time() - max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{"
        'cronjob="postgres-backup"}) > {threshold} * 3600',
        for_="0m",
        threshold=Threshold("backupMaxAgeHours", 26, 1, 24 * 14, "hours"),
        kubernetes="kube-state-metrics: kube_cronjob_status_last_successful_time",
        aws="not applicable: RDS automated backups are run and retried by AWS",
    ),
    Signal(
        name="LiftoffReconcileFailed",
        severity="warning",
        meaning="The hourly reconciliation (warehouse repair from the archive) failed.",
        runbook="Read the failed run's output (one JSON summary: corrupt archive objects, "
        "database errors; on Kubernetes the failed task pod is kept: `kubectl logs`), fix, "
        "then clear the task in Airflow to run the hour again (idempotent); on Kubernetes "
        "delete the failed pod, which clears the alert.",
        expr='max by (namespace) (kube_pod_status_phase{phase="Failed",'
        'pod=~"liftoff-reconcile-.*"}) > 0',
        for_="0m",
        kubernetes="kube-state-metrics: the failed reconcile task pod (kept: "
        "`on_finish_action=delete_succeeded_pod`)",
        aws="ops (reconcile) Lambda `Errors` > 0 (a failed rebuild or regulation invocation "
        "of the same function too: the failed task in Airflow says which)",
    ),
)


SIGNALS_BY_NAME: dict[str, Signal] = {signal.name: signal for signal in SIGNALS}
THRESHOLDS: dict[str, Threshold] = {s.threshold.key: s.threshold for s in SIGNALS if s.threshold}


def prometheus_rule_groups(
    thresholds: Mapping[str, float] | None = None,
    for_overrides: Mapping[str, str] | None = None,
    stack: str | None = None,
) -> list[dict[str, Any]]:
    """The contract as Prometheus rule groups (the `spec.groups` of a PrometheusRule and the
    `groups` of a rule file for promtool or a plain Prometheus)."""
    thresholds = thresholds or {}
    rules = []
    for signal in SIGNALS:
        labels = {"severity": signal.severity, "signal": signal.name}
        if stack:
            labels["liftoff_stack"] = stack
        rule: dict[str, Any] = {
            "alert": signal.name,
            "expr": signal.promql(thresholds),
            "labels": labels,
            "annotations": {
                "summary": signal.meaning,
                "runbook": signal.runbook,
            },
        }
        duration = (for_overrides or {}).get(signal.name, signal.for_)
        if duration != "0m":
            rule["for"] = duration
        rules.append(rule)
    return [{"name": "liftoff", "rules": rules}]
