"""The contract's dashboards: CloudWatch (AWS) and Grafana (Kubernetes). Plain data, no
provider imported: each target's module declares its own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from components.observability import SIGNALS, CloudWatchMetrics


@dataclass(frozen=True)
class CloudWatchSources:
    """Where the CloudWatch dashboard's figures are, each capability's metrics resolved (every
    dimension a plain string): the API, the collector function, the stream, the database, and
    each stream consumer's function with its on-failure queue."""

    api: CloudWatchMetrics
    collector: CloudWatchMetrics
    stream: CloudWatchMetrics
    database: CloudWatchMetrics
    consumers: Sequence[tuple[CloudWatchMetrics, CloudWatchMetrics]]


def cloudwatch_dashboard(
    sources: CloudWatchSources, region: str, alarms: list[str]
) -> dict[str, Any]:
    """The contract's dashboard on CloudWatch: one widget per part of the data path, two a
    row, and the contract's alarms below."""
    return {
        "widgets": [
            _cloudwatch_widget(region, title, metrics, (i % 2) * 12, (i // 2) * 6, stat)
            for i, (title, metrics, stat) in enumerate(_cloudwatch_panels(sources))
        ]
        + [_alarms_widget(alarms)]
    }


def _cloudwatch_panels(sources: CloudWatchSources) -> list[tuple[str, list[list[Any]], str]]:
    """(title, metrics, statistic) of each widget."""
    api, collector, stream = sources.api, sources.collector, sources.stream
    return [
        (
            "Ingestion: requests, 4xx, 5xx",
            [api.dashboard_row(m) for m in ("Count", "4xx", "5xx")],
            "Sum",
        ),
        (
            "Ingestion: latency p50 / p99 (ms)",
            [api.dashboard_row("Latency", {"stat": p}) for p in ("p50", "p99")],
            "Sum",
        ),
        (
            "Collector function: errors, throttles; stream write throttling",
            [
                collector.dashboard_row("Errors"),
                collector.dashboard_row("Throttles"),
                stream.dashboard_row("WriteProvisionedThroughputExceeded"),
                stream.dashboard_row("IncomingRecords"),
            ],
            "Sum",
        ),
        (
            "Consumer lag: IteratorAge (ms) per consumer",
            [function.dashboard_row("IteratorAge") for function, _ in sources.consumers],
            "Maximum",
        ),
        (
            "Dead letters: on-failure queue depth",
            [
                queue.dashboard_row("ApproximateNumberOfMessagesVisible")
                for _, queue in sources.consumers
            ],
            "Maximum",
        ),
        (
            "Database: CPU %, connections, free storage",
            [
                sources.database.dashboard_row("CPUUtilization"),
                sources.database.dashboard_row("DatabaseConnections"),
                sources.database.dashboard_row("FreeStorageSpace", {"yAxis": "right"}),
            ],
            "Average",
        ),
    ]


def _alarms_widget(alarms: list[str]) -> dict[str, Any]:
    """The state of every alarm of the signal contract, full width below the metrics."""
    return {
        "type": "alarm",
        "x": 0,
        "y": 18,
        "width": 24,
        "height": 6,
        "properties": {"title": "Alarms of the signal contract", "alarms": alarms},
    }


def _cloudwatch_widget(
    region: str, title: str, metrics: list[list[Any]], x: int, y: int, stat: str = "Sum"
) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 12,
        "height": 6,
        "properties": {
            "title": title,
            "region": region,
            "stat": stat,
            "period": 300,
            "view": "timeSeries",
            "metrics": metrics,
        },
    }


def _panel(
    panel_id: int, title: str, exprs: dict[str, str], unit: str, x: int, y: int
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(exprs.items())
        ],
    }


def grafana_dashboard(namespace: str) -> dict[str, Any]:
    """The contract's dashboard: one row per part of the data path, for one stack."""
    ns = f'namespace="{namespace}"'
    panels = [*_data_path_panels(ns), *_store_panels(ns)]
    return {
        "title": f"liftoff ({namespace})",
        "uid": f"liftoff-{namespace}"[:40],
        "schemaVersion": 39,
        "editable": False,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "tags": ["liftoff"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                }
            ]
        },
        "panels": [
            _panel(i + 1, title, exprs, unit, (i % 2) * 12, (i // 2) * 8)
            for i, (title, exprs, unit) in enumerate(panels)
        ],
    }


def _data_path_panels(ns: str) -> list[tuple[str, dict[str, str], str]]:
    """Ingestion, consumer lag and dead letters: (title, legend -> PromQL, unit) each."""
    return [
        (
            "Ingestion: events accepted / s",
            {
                "{{source}}": "sum by (source) "
                f"(rate(liftoff_collector_events_accepted_total{{{ns}}}[5m]))"
            },
            "ops",
        ),
        (
            "Ingestion: requests / s by status",
            {"{{status}}": f"sum by (status) (rate(liftoff_collector_requests_total{{{ns}}}[5m]))"},
            "reqps",
        ),
        (
            "Ingestion: latency",
            {
                f"p{q}": f"histogram_quantile(0.{q}, sum by (le) (rate("
                f"liftoff_collector_request_duration_seconds_bucket{{{ns}}}[5m])))"
                for q in ("50", "99")
            },
            "s",
        ),
        (
            "Consumer lag (events)",
            {
                "{{consumer}} {{stream}}": "max by (consumer, stream) "
                f"(liftoff_consumer_lag_events{{{ns}}})"
            },
            "short",
        ),
        (
            "Consumer lag (age of oldest event)",
            {
                "{{consumer}} {{stream}}": "max by (consumer, stream) "
                f"(liftoff_consumer_lag_seconds{{{ns}}})"
            },
            "s",
        ),
        (
            "Dead letters and quarantine (per 15 min)",
            {
                "parked {{consumer}}": "sum by (consumer) (increase(liftoff_consumer_events_total"
                f'{{{ns},outcome="park"}}[15m]))',
                "quarantined": "sum (increase(liftoff_collector_events_quarantined_total"
                f"{{{ns}}}[15m]))",
            },
            "short",
        ),
    ]


def _store_panels(ns: str) -> list[tuple[str, dict[str, str], str]]:
    """Destinations, stream storage, the database and the contract's alerts."""
    return [
        (
            "Destinations: attempts / s by status class",
            {
                "{{destination}} {{status_class}}": "sum by (destination, status_class) "
                f"(rate(liftoff_broadcast_requests_total{{{ns}}}[5m]))"
            },
            "reqps",
        ),
        (
            "Stream: JetStream storage used / limit",
            {
                "{{server_id}}": f"nats_server_total_message_bytes{{{ns}}} / "
                f"nats_server_max_storage{{{ns}}}"
            },
            "percentunit",
        ),
        (
            "Database: connections / max, up",
            {
                "connections": f"sum (pg_stat_database_numbackends{{{ns}}}) / "
                f"max (pg_settings_max_connections{{{ns}}})",
                "up": f"min (pg_up{{{ns}}})",
            },
            "percentunit",
        ),
        (
            "Alerts of the signal contract",
            {
                "{{alertname}} {{alertstate}}": "sum by (alertname, alertstate) "
                f'(ALERTS{{{ns},alertname=~"{"|".join(s.name for s in SIGNALS)}"}})'
            },
            "short",
        ),
    ]
