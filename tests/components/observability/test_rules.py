"""Every alert of the signal contract checked by the real `promtool` (Debian package
`prometheus`, installed by .ci/run): the rendered rules pass `promtool check rules`, and for each
alert `promtool test rules` feeds synthetic series that must make it fire and series that must
leave it silent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.observability import SIGNALS, SIGNALS_BY_NAME, prometheus_rule_groups

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NS = {"namespace": "liftoff-dev"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    merged = {**NS, **labels}
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(merged.items()))
    return {"series": f"{name}{{{label_text}}}", "values": values}


def _requests(status: str, values: str, route: str = "/v1/batch") -> dict[str, str]:
    return _series("liftoff_collector_requests_total", {"route": route, "status": status}, values)


def _buckets(counts: dict[str, str]) -> list[dict[str, str]]:
    return [
        _series(
            "liftoff_collector_request_duration_seconds_bucket",
            {"route": "/v1/batch", "le": le},
            values,
        )
        for le, values in counts.items()
    ]


def _broadcast(status_class: str, values: str) -> dict[str, str]:
    return _series(
        "liftoff_broadcast_requests_total",
        {"destination": "mixpanel", "result": "x", "status_class": status_class},
        values,
    )


def _pg(numbackends: str) -> list[dict[str, str]]:
    return [
        _series(
            "pg_stat_database_numbackends", {"instance": "pg:9187", "datname": "a"}, numbackends
        ),
        _series("pg_settings_max_connections", {"instance": "pg:9187"}, "100x30"),
    ]


def _dead_letter_fill(used: str) -> list[dict[str, str]]:
    # Reported by every consumer process (instance), as the lag is.
    return [
        series
        for instance in ("archiver", "loader")
        for series in (
            _series(
                "liftoff_dead_letter_stream_bytes",
                {"stream": "DEADLETTER", "instance": instance},
                used,
            ),
            _series(
                "liftoff_dead_letter_stream_max_bytes",
                {"stream": "DEADLETTER", "instance": instance},
                "1000x15",
            ),
        )
    ]


def _volume(available: str) -> list[dict[str, str]]:
    pvc = {"persistentvolumeclaim": "data-postgres-0"}
    return [
        _series("kubelet_volume_stats_available_bytes", pvc, available),
        _series("kubelet_volume_stats_capacity_bytes", pvc, "100x30"),
    ]


def _cpu(used_per_minute: str) -> list[dict[str, str]]:
    pod = {"pod": "postgres-0", "container": "postgres"}
    return [
        _series("container_cpu_usage_seconds_total", pod, f"0+{used_per_minute}x30"),
        _series("kube_pod_container_resource_limits", {**pod, "resource": "cpu"}, "0.5x30"),
    ]


def _storage(used: str) -> list[dict[str, str]]:
    server = {"server_id": "nats-0"}
    return [
        _series("nats_server_total_message_bytes", server, used),
        _series("nats_server_max_storage", server, "100x30"),
    ]


# alert -> (eval time, labels the firing alert carries beyond namespace/severity/signal,
#           series that must fire it, series that must not)
CASES: dict[str, tuple[str, dict[str, str], list[dict], list[dict]]] = {
    "LiftoffIngestionErrors": (
        "15m",
        {},
        [_requests("200", "0+100x20"), _requests("500", "0+5x20")],
        # 503s are refusals, not errors; a flat 500 counter is no error at all.
        [_requests("200", "0+100x20"), _requests("503", "0+50x20"), _requests("500", "7x20")],
    ),
    "LiftoffIngestionRefused": (
        "15m",
        {},
        [_requests("200", "0+100x20"), _requests("503", "0+5x20")],
        [_requests("200", "0+100x20"), _requests("503", "3x20"), _requests("500", "0+50x20")],
    ),
    "LiftoffIngestionLatency": (
        "18m",
        {},
        _buckets({"0.5": "0+10x20", "1": "0+10x20", "2.5": "0+100x20", "+Inf": "0+100x20"}),
        _buckets({"0.5": "0+99x20", "1": "0+100x20", "2.5": "0+100x20", "+Inf": "0+100x20"}),
    ),
    "LiftoffConsumerLag": (
        "15m",
        {"stream": "EVENTS", "consumer": "loader"},
        [
            _series(
                "liftoff_consumer_lag_events",
                {"stream": "EVENTS", "consumer": "loader", "instance": "a"},
                "200000x20",
            )
        ],
        [
            _series(
                "liftoff_consumer_lag_events",
                {"stream": "EVENTS", "consumer": "loader", "instance": "a"},
                "5000x20",
            )
        ],
    ),
    "LiftoffConsumerLagAge": (
        "10m",
        {"stream": "EVENTS", "consumer": "archiver"},
        [
            _series(
                "liftoff_consumer_lag_seconds",
                {"stream": "EVENTS", "consumer": "archiver", "instance": "a"},
                "1000x20",
            )
        ],
        [
            _series(
                "liftoff_consumer_lag_seconds",
                {"stream": "EVENTS", "consumer": "archiver", "instance": "a"},
                "10x20",
            )
        ],
    ),
    "LiftoffDeadLetters": (
        "10m",
        {"consumer": "broadcast-mixpanel"},
        [
            _series(
                "liftoff_consumer_events_total",
                {"consumer": "broadcast-mixpanel", "outcome": "park"},
                "0 0 0 0 0 2 2 2 2 2 2 2",
            )
        ],
        [
            _series(
                "liftoff_consumer_events_total",
                {"consumer": "broadcast-mixpanel", "outcome": "park"},
                "2x12",
            ),
            _series(
                "liftoff_consumer_events_total",
                {"consumer": "broadcast-mixpanel", "outcome": "done"},
                "0+100x12",
            ),
        ],
    ),
    "LiftoffWarehouseDiscards": (
        "30m",
        {"source": "web", "table": "signed_up"},
        # A series made by its first discard (absent before) fires as an increase does.
        [
            _series(
                "liftoff_warehouse_discards_total",
                {"source": "web", "table": "signed_up"},
                "_x20 3x15",
            )
        ],
        [
            _series(
                "liftoff_warehouse_discards_total",
                {"source": "web", "table": "signed_up"},
                "3x40",
            )
        ],
    ),
    "LiftoffDeadLetterStorage": (
        "10m",
        {"stream": "DEADLETTER"},
        _dead_letter_fill("1000x15"),  # at its bound: the oldest are being dropped
        _dead_letter_fill("500x15"),
    ),
    "LiftoffDestinationFailing": (
        "40m",
        {"destination": "mixpanel"},
        [_broadcast("2xx", "0+10x45"), _broadcast("5xx", "0+10x45")],
        [_broadcast("2xx", "0+10x45"), _broadcast("5xx", "0+1x45")],
    ),
    "LiftoffStreamStorage": ("20m", {"server_id": "nats-0"}, _storage("90x30"), _storage("50x30")),
    "LiftoffPostgresDown": (
        "5m",
        {},
        [_series("pg_up", {"instance": "pg:9187"}, "0x10")],
        [_series("pg_up", {"instance": "pg:9187"}, "1x10")],
    ),
    "LiftoffPostgresConnections": ("15m", {}, _pg("90x30"), _pg("10x30")),
    "LiftoffPostgresStorage": (
        "20m",
        {"persistentvolumeclaim": "data-postgres-0"},
        _volume("5x30"),
        _volume("50x30"),
    ),
    "LiftoffPostgresCpu": ("20m", {"pod": "postgres-0"}, _cpu("54"), _cpu("6")),
    "LiftoffReconcileFailed": (
        "3m",
        {},
        [
            _series(
                "kube_pod_status_phase", {"phase": "Failed", "pod": "liftoff-reconcile-x1"}, "1x5"
            )
        ],
        [
            _series(
                "kube_pod_status_phase", {"phase": "Failed", "pod": "liftoff-reconcile-x1"}, "0x5"
            ),
            _series("kube_pod_status_phase", {"phase": "Failed", "pod": "other-job-x1"}, "1x5"),
        ],
    ),
}
# Backups are daily: this one is evaluated on an hourly grid.
HOURLY_CASES = {
    "LiftoffBackupMissing": (
        "27h",
        {"cronjob": "postgres-backup"},
        # Last success at time 0 and never again: 27 h old.
        [
            _series(
                "kube_cronjob_status_last_successful_time", {"cronjob": "postgres-backup"}, "0x30"
            )
        ],
        # A success every hour (the value is the time of the last success).
        [
            _series(
                "kube_cronjob_status_last_successful_time",
                {"cronjob": "postgres-backup"},
                "0+3600x30",
            )
        ],
    ),
}


def _expected(alert: str, extra: dict[str, str]) -> dict[str, Any]:
    signal = SIGNALS_BY_NAME[alert]
    return {
        "exp_labels": {**NS, **extra, "severity": signal.severity, "signal": alert},
        "exp_annotations": {"summary": signal.meaning, "runbook": signal.runbook},
    }


def _tests() -> list[dict[str, Any]]:
    tests = []
    for interval, cases in (("1m", CASES), ("1h", HOURLY_CASES)):
        for alert, (at, labels, firing, silent) in cases.items():
            tests.append(
                {
                    "name": f"{alert} fires",
                    "interval": interval,
                    "input_series": firing,
                    "alert_rule_test": [
                        {
                            "eval_time": at,
                            "alertname": alert,
                            "exp_alerts": [_expected(alert, labels)],
                        }
                    ],
                }
            )
            tests.append(
                {
                    "name": f"{alert} stays silent",
                    "interval": interval,
                    "input_series": silent,
                    "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
                }
            )
    return tests


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert Path(PROMTOOL).exists(), "promtool missing: .ci/run installs the Debian package"
    path = tmp_path_factory.mktemp("rules") / "liftoff.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": prometheus_rule_groups()}, sort_keys=False))
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_every_signal_has_a_promtool_case() -> None:
    assert set(CASES) | set(HOURLY_CASES) == {signal.name for signal in SIGNALS}


def test_promtool_check_rules(rule_file: Path) -> None:
    result = _promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SIGNALS)} rules found" in result.stdout


def test_promtool_unit_tests_fire_and_stay_silent(rule_file: Path, tmp_path: Path) -> None:
    tests = tmp_path / "liftoff.test.yaml"
    tests.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": _tests()},
            sort_keys=False,
        )
    )
    result = _promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_fails(rule_file: Path, tmp_path: Path) -> None:
    """The harness can fail: a silent case that expects an alert is reported by promtool."""
    at, labels, _, silent = CASES["LiftoffConsumerLag"]
    tests = tmp_path / "broken.test.yaml"
    case = {
        "interval": "1m",
        "input_series": silent,
        "alert_rule_test": [
            {
                "eval_time": at,
                "alertname": "LiftoffConsumerLag",
                "exp_alerts": [_expected("LiftoffConsumerLag", labels)],
            }
        ],
    }
    tests.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "tests": [case]}))
    result = _promtool("test", "rules", str(tests))
    assert result.returncode != 0


def test_thresholds_from_config_reach_the_expression() -> None:
    groups = prometheus_rule_groups({"consumerLagSeconds": 60, "ingestionErrorRatio": 0.05})
    rules = {rule["alert"]: rule for rule in groups[0]["rules"]}
    assert rules["LiftoffConsumerLagAge"]["expr"].endswith("> 60")
    assert rules["LiftoffIngestionErrors"]["expr"].endswith("> 0.05")
    assert "{threshold}" not in yaml.safe_dump(groups)


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """The Grafana panels' PromQL, checked by promtool as recording rules (syntax, functions)."""
    from components.observability.kubernetes import grafana_dashboard

    panels = grafana_dashboard("liftoff-data")["panels"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    assert len(exprs) >= 10
    rules = [{"record": f"liftoff:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_collector_quarantine_growth_fires_the_dead_letter_alert(
    rule_file: Path, tmp_path: Path
) -> None:
    """The dead-letter signal's other half: invalid events quarantined by the collector."""
    quarantined = _series(
        "liftoff_collector_events_quarantined_total",
        {"source": "web", "code": "invalid_event"},
        "0 0 0 0 0 3 3 3 3 3 3 3",
    )
    flat = _series(
        "liftoff_collector_events_quarantined_total",
        {"source": "web", "code": "invalid_event"},
        "3x12",
    )
    tests = []
    for series, expected in (([quarantined], [_expected("LiftoffDeadLetters", {})]), ([flat], [])):
        tests.append(
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "LiftoffDeadLetters", "exp_alerts": expected}
                ],
            }
        )
    path = tmp_path / "quarantine.test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "tests": tests}))
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
