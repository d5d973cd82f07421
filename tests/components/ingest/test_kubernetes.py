"""Ingestion on Kubernetes: collector Deployment, Service, autoscaler, PDB, Ingress."""

from __future__ import annotations

import json

from tests.conftest import stack_run
from tests.harness import run_program

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _container(run):
    return run.one(DEPLOYMENT, "liftoff-ingest-deployment").inputs["spec"]["template"]["spec"][
        "containers"
    ][0]


def test_collector_pod_is_restricted_probed_and_mirrored():
    run = stack_run("kubernetes-private-cloud")
    pod = run.one(DEPLOYMENT, "liftoff-ingest-deployment").inputs["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.corp.example/mirror/data/liftoff-services:0.1.0"
    assert container["args"] == ["collector"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}


def test_write_keys_come_from_a_mounted_secret():
    run = stack_run("dev")
    container = _container(run)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LIFTOFF_WRITE_KEYS_FILE"] == "/etc/liftoff/write-keys/write-keys.json"
    assert "LIFTOFF_WRITE_KEYS" not in env
    # No Ingress, no restricted source: the collector answers with the request's own host.
    assert "LIFTOFF_PUBLIC_URL" not in env and "LIFTOFF_ALLOWED_ORIGINS" not in env
    assert env["LIFTOFF_STREAM_URL"] == "nats://nats.liftoff-dev.svc.cluster.local:4222/EVENTS"
    secret = run.one("kubernetes:core/v1:Secret", "liftoff-ingest-write-keys")
    assert "stringData" in secret.secret_paths
    assert run.outputs["writeKeys"].keys() == {"web", "backend"}
    assert "writeKeys" in run.secret_outputs


def test_autoscaler_and_disruption_budget_follow_the_settings():
    run = stack_run("kubernetes-private-cloud")
    hpa = run.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["scaleTargetRef"]["name"] == "collector"
    pdb = run.one("kubernetes:policy/v1:PodDisruptionBudget", "liftoff-ingest-pdb").inputs
    assert pdb["spec"]["maxUnavailable"] == 1
    assert run.one(DEPLOYMENT, "liftoff-ingest-deployment").inputs["spec"]["replicas"] == 3


def test_ingress_with_tls_when_a_host_is_configured():
    run = stack_run("kubernetes-private-cloud")
    ingress = run.one("kubernetes:networking.k8s.io/v1:Ingress").inputs["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["events.corp.example"], "secretName": "events-tls"}]
    paths = ingress["rules"][0]["http"]["paths"]
    assert [p["path"] for p in paths] == ["/v1", "/analytics.js", "/analytics-next"]
    assert run.outputs["collectorUrl"] == "https://events.corp.example"
    # analytics.js's settings name the public URL, not what the pod sees behind the Ingress.
    env = {e["name"]: e["value"] for e in _container(run)["env"]}
    assert env["LIFTOFF_PUBLIC_URL"] == "https://events.corp.example"
    assert json.loads(env["LIFTOFF_ALLOWED_ORIGINS"]) == {"web": ["https://shop.corp.example"]}


def test_in_cluster_url_without_a_host():
    run = stack_run("dev")
    assert run.of_type("kubernetes:networking.k8s.io/v1:Ingress") == []
    assert run.outputs["collectorUrl"] == "http://collector.liftoff-dev.svc.cluster.local"


def test_collector_runtime_accepts_the_environment_it_is_given(any_stack):
    """Every environment variable the component sets parses in the collector's own config."""
    from services.collector.config import CollectorConfig
    from services.collector.contract import parse

    if not any_stack.of_type(DEPLOYMENT):
        return
    env = {e["name"]: e["value"] for e in _container(any_stack)["env"]}
    write_keys = {name: f"key-{name}" for name in any_stack.outputs["writeKeys"]}
    files = {"LIFTOFF_WRITE_KEYS_FILE": "", "LIFTOFF_SUPPRESSION_KEY_FILE": ""}
    inline = {"LIFTOFF_WRITE_KEYS": json.dumps(write_keys), "LIFTOFF_SUPPRESSION_KEY": "k" * 48}
    runtime = CollectorConfig.load(parse({**env, **files, **inline}))
    assert runtime.quarantine_url and runtime.quarantine_url.endswith("/DEADLETTER")
    # The suppression list is a KV bucket beside the stream, its key the mounted Secret's.
    assert runtime.suppression is not None
    assert runtime.suppression.url.endswith(":4222/liftoff-suppressed")
    mounts = {m["name"]: m["mountPath"] for m in _container(any_stack)["volumeMounts"]}
    assert env["LIFTOFF_SUPPRESSION_KEY_FILE"] == mounts["suppression-key"] + "/key"


def test_ip_collection_trusted_proxies_and_http_limits_reach_the_collector():
    env = {e["name"]: e["value"] for e in _container(stack_run("kubernetes-private-cloud"))["env"]}
    assert env["LIFTOFF_IP_COLLECTION_OFF"] == "backend"
    assert env["LIFTOFF_TRUSTED_PROXIES"] == "10.42.0.0/16"
    assert env["LIFTOFF_HTTP_MAX_HEADER_BYTES"] == "65536"
    assert env["LIFTOFF_HTTP_HEADER_TIMEOUT_SECONDS"] == "10"
    assert env["LIFTOFF_HTTP_BODY_TIMEOUT_SECONDS"] == "30"
    assert env["LIFTOFF_HTTP_MAX_CONNECTIONS"] == "512"
    dev = {e["name"]: e["value"] for e in _container(stack_run("dev"))["env"]}
    assert "LIFTOFF_TRUSTED_PROXIES" not in dev  # X-Forwarded-For is never trusted by default
    assert "LIFTOFF_IP_COLLECTION_OFF" not in dev


def test_a_public_url_wins_over_the_ingress_host():
    """TLS terminated in front of a plain-HTTP Ingress: browsers still reach https://."""
    run = run_program(
        "Pulumi.dev.yaml",
        overrides={
            "liftoff:ingest": {
                "host": "events.corp.example",
                "publicUrl": "https://events.corp.example:8443",
            }
        },
    )
    env = {e["name"]: e["value"] for e in _container(run)["env"]}
    assert env["LIFTOFF_PUBLIC_URL"] == "https://events.corp.example:8443"
    assert run.outputs["collectorUrl"] == "https://events.corp.example:8443"
