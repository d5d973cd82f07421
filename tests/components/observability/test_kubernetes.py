"""The signal contract on Kubernetes under mocks: monitors, rules, dashboard and the
NetworkPolicies that admit the monitoring namespace to exactly the metrics ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.observability import SIGNALS
from tests.harness import load_stack_config, run_with_config
from tests.kubernetes_schema import schema_errors

STACK = Path(__file__).resolve().parents[3] / "stacks" / "kubernetes-private-cloud.yaml"
CR = "kubernetes:monitoring.coreos.com/v1:"
POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


@pytest.fixture(scope="module")
def run():
    config, secrets = load_stack_config(STACK)
    config["liftoff:observability"] = json.dumps(
        {
            "enabled": True,
            "monitoringNamespace": "observability",
            "monitoringPodLabels": {"app.kubernetes.io/name": "prometheus"},
            "monitorLabels": {"release": "kps"},
            "thresholds": {"consumerLagSeconds": 600},
        }
    )
    return run_with_config(config, stack="kubernetes-private-cloud", secret_keys=secrets)


def _crs(run, kind):
    return [r.inputs for r in run.of_type(CR + kind)]


def test_every_object_passes_its_schema(run):
    """Plain objects: the Kubernetes schema (strict); custom resources: the fields of their
    monitoring.coreos.com/v1 CRDs (tests/kubernetes_schema.py)."""
    objects = run.kubernetes_objects()
    assert {o["kind"] for o in objects} >= {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert schema_errors(objects) == []
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        for obj in _crs(run, kind):
            assert obj["metadata"]["labels"]["release"] == "kps"  # selected by the Prometheus


def test_a_misspelt_custom_resource_field_is_caught():
    broken = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {
            "selector": {},
            "podMetricsEndpoints": [{"port": 8081, "intervall": "30s"}],
        },
    }
    errors = schema_errors([broken])
    assert len(errors) == 2 and all(
        e.startswith("PodMonitor/y/x: spec.podMetricsEndpoints[0].") for e in errors
    )
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r", "namespace": "y"},
        "spec": {
            "groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 minutes"}]}]
        },
    }
    assert schema_errors([rule]) == [
        "PrometheusRule/y/r: spec.groups[0].rules[0].for: not a duration"
    ]


def test_the_rule_carries_every_signal_with_configured_thresholds(run):
    (rule,) = _crs(run, "PrometheusRule")
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(rules) == {s.name for s in SIGNALS}
    assert rules["LiftoffConsumerLagAge"]["expr"].endswith("> 600")
    assert rules["LiftoffConsumerLag"]["labels"]["liftoff_stack"] == "kubernetes-private-cloud"


def test_monitors_select_the_pods_that_serve_metrics(run):
    deployments = {
        r.inputs["metadata"]["name"]: r.inputs for r in run.of_type("kubernetes:apps/v1:Deployment")
    }
    monitors = {o["metadata"]["name"]: o["spec"] for o in _crs(run, "PodMonitor")}
    consumers = monitors["liftoff-consumers"]
    for name in ("archiver", "loader", "broadcaster-crm"):
        pod = deployments[name]["spec"]["template"]
        assert consumers["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert consumers["podMetricsEndpoints"][0]["port"] in ports
    exporter = deployments["postgres-exporter"]["spec"]["template"]
    assert monitors["liftoff-postgres-exporter"]["selector"]["matchLabels"].items() <= (
        exporter["metadata"]["labels"].items()
    )
    (service_monitor,) = _crs(run, "ServiceMonitor")
    collector = run.one("kubernetes:core/v1:Service", "liftoff-ingest-service").inputs
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= (
        collector["metadata"]["labels"].items()
    )
    assert service_monitor["spec"]["endpoints"][0]["port"] in {
        p["name"] for p in collector["spec"]["ports"]
    }


def test_scrape_policies_admit_the_monitoring_namespace_to_exactly_the_metrics_ports(run):
    policies = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in run.of_type(POLICY)
        if r.inputs["metadata"]["name"].startswith("scrape-")
    }
    expected = {
        "scrape-collector": 8080,
        "scrape-consumers": 8081,
        "scrape-nats": 7777,
        "scrape-postgres-exporter": 9187,
    }
    assert {name: spec["ingress"][0]["ports"] for name, spec in policies.items()} == {
        name: [{"protocol": "TCP", "port": port}] for name, port in expected.items()
    }
    for spec in policies.values():
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]  # namespace AND pod labels in one peer
        assert peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "observability"}
        }
        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
        assert spec["policyTypes"] == ["Ingress"]


def test_postgres_exporter_is_restricted_with_a_pg_monitor_role_of_its_own(run):
    exporter = run.one("kubernetes:apps/v1:Deployment", "liftoff-observability-postgres-exporter")
    pod = exporter.inputs["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == (
        "registry.corp.example/mirror/prometheuscommunity/postgres-exporter:v0.17.1"
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert all("valueFrom" not in e for e in container["env"])  # credentials are files
    assert env["DATA_SOURCE_PASS_FILE"] == "/etc/postgres-exporter/password"
    assert env["DATA_SOURCE_URI"].endswith(":5432/monitoring?sslmode=disable")
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "postgres-monitoring"  # not the admin Secret
    setup = [
        r.inputs
        for r in run.of_type("kubernetes:batch/v1:Job")
        if r.inputs["metadata"]["name"].startswith("postgres-setup-monitoring-")
    ]
    (job,) = setup
    (job_container,) = job["spec"]["template"]["spec"]["containers"]
    job_env = {e["name"]: e.get("value") for e in job_container["env"]}
    assert job_env["LIFTOFF_DATABASE_MEMBER_OF"] == "pg_monitor"
    assert job_env["LIFTOFF_DATABASE_ROLE"] == "monitoring"


def test_nats_chart_runs_its_exporter(run):
    chart = run.one("kubernetes:helm.sh/v4:Chart", "liftoff-stream-chart")
    exporter = chart.inputs["values"]["promExporter"]
    assert exporter["enabled"] is True and exporter["port"] == 7777
    assert exporter["merge"]["securityContext"]["runAsNonRoot"] is True


def test_dashboard_configmap_for_the_grafana_sidecar(run):
    dashboard = run.one("kubernetes:core/v1:ConfigMap", "liftoff-observability-dashboard").inputs
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["liftoff.json"])["panels"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "liftoff_collector_events_accepted_total",
        "liftoff_collector_requests_total",
        "liftoff_consumer_lag_events",
        'outcome="park"',
        "nats_server_total_message_bytes",
        "pg_stat_database_numbackends",
    ):
        assert metric in exprs
