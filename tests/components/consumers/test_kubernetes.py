"""Consumers on Kubernetes: one Deployment and durable JetStream consumer per consumer."""

from __future__ import annotations

import json

from tests.conftest import stack_run

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def _deployments(run):
    return {r.inputs["metadata"]["name"]: r.inputs for r in run.of_type(DEPLOYMENT)}


def _env(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_one_single_replica_deployment_per_consumer():
    deployments = _deployments(stack_run("kubernetes-private-cloud"))
    consumers = {"archiver", "loader", "broadcaster-crm", "broadcaster-amplitude"}
    assert consumers <= set(deployments)
    for name in consumers:
        spec = deployments[name]["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
        env = _env(deployments[name])
        assert env["LIFTOFF_CONSUMER_NAME"] == name
        assert env["LIFTOFF_DEAD_LETTER_URL"].endswith(":4222/DEADLETTER")
        (container,) = spec["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["port"] == "health"


def test_every_consumer_holds_at_most_a_quarter_of_its_memory_limit_of_the_stream():
    """The byte budget every partition runner of the process shares (items held before they
    are acknowledged): derived from the pod's own declared limit, so both change together."""
    for name, deployment in _deployments(stack_run("kubernetes-private-cloud")).items():
        if name in ("collector", "postgres-exporter"):
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        limit = container["resources"]["limits"]["memory"]
        assert limit == "512Mi", name
        assert _env(deployment)["LIFTOFF_CONSUMER_BUFFER_BYTES"] == str(128 * 2**20), name


def test_no_credential_is_ever_an_environment_value():
    for deployment in _deployments(stack_run("kubernetes-private-cloud")).values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for variable in container["env"]:
            assert "valueFrom" not in variable, variable["name"]
            assert "PASSWORD" not in variable["name"] or variable["name"].endswith("_FILE")


def test_archiver_reads_object_store_credentials_from_a_file():
    run = stack_run("kubernetes-private-cloud")
    archiver = _deployments(run)["archiver"]
    env = _env(archiver)
    assert env["AWS_ENDPOINT_URL_S3"] == "https://objects.corp.example:9000"
    assert env["LIFTOFF_ARCHIVE_BUCKET"] == "liftoff-events"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/liftoff/archive/credentials"
    secret = run.one("kubernetes:core/v1:Secret", "liftoff-archive-credentials")
    assert "stringData" in secret.secret_paths
    assert secret.inputs["stringData"]["credentials"].startswith("[default]\n")
    egress = run.one(POLICY, "liftoff-archive-write-archiver").inputs["spec"]["egress"][0]
    assert egress["ports"] == [{"protocol": "TCP", "port": 9000}]


def test_loader_reaches_postgres_with_its_own_role():
    run = stack_run("dev")
    env = _env(_deployments(run)["loader"])
    assert env["PGUSER"] == "warehouse" and env["PGDATABASE"] == "warehouse"
    assert env["PGPASSWORD_FILE"] == "/etc/liftoff/postgres/password"
    policies = {r.name for r in run.of_type(POLICY)}
    assert {
        "liftoff-postgres-from-loader-ingress",
        "liftoff-postgres-from-loader-egress",
    } <= policies
    assert {"liftoff-stream-read-loader-ingress", "liftoff-stream-read-loader-egress"} <= policies


def test_broadcaster_may_reach_the_internet_but_not_private_ranges():
    run = stack_run("kubernetes-private-cloud")
    policy = run.one(POLICY, "liftoff-consumers-broadcaster-crm-internet").inputs["spec"]
    (rule,) = policy["egress"]
    assert rule["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
    env = _env(_deployments(run)["broadcaster-crm"])
    assert json.loads(env["LIFTOFF_DESTINATION"])["settings"] == {
        "url": "https://crm.corp.example/hooks/liftoff"
    }
    assert env["LIFTOFF_DESTINATION_SECRETS_FILE"] == (
        "/etc/liftoff/destination/destination-secrets.json"
    )


def test_a_destination_may_reach_only_its_listed_private_ranges():
    run = stack_run("kubernetes-private-cloud")
    policy = run.one(POLICY, "liftoff-consumers-broadcaster-crm-private").inputs["spec"]
    assert policy["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    # Destinations without allowPrivate stay public-only.
    names = {r.name for r in run.of_type(POLICY)}
    assert "liftoff-consumers-broadcaster-amplitude-private" not in names
    assert "liftoff-consumers-broadcaster-amplitude-internet" in names


def test_without_an_archive_there_is_no_archiver():
    assert "archiver" not in _deployments(stack_run("dev"))
