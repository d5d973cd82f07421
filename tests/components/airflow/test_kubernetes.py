"""Airflow on Kubernetes: the official chart on the platform's Postgres."""

from __future__ import annotations

import json

import pytest

from components.airflow.kubernetes import check_values, fernet_key
from components.charts import load_chart_pin
from components.config import load_config
from components.validation import ConfigError
from tests.conftest import stack_run
from tests.harness import run_program
from tests.kubernetes_schema import schema_errors

CHART = "kubernetes:helm.sh/v4:Chart"


def _chart(run):
    return run.one(CHART, "liftoff-airflow-chart")


def test_chart_is_the_pinned_official_chart():
    pin = load_chart_pin("airflow")
    chart = _chart(stack_run("dev")).inputs
    assert (chart["chart"], chart["version"]) == ("airflow", pin.version)
    assert chart["repositoryOpts"] == {"repo": "https://airflow.apache.org"}
    mirrored = _chart(stack_run("kubernetes-private-cloud")).inputs
    assert mirrored["repositoryOpts"] == {"repo": "https://charts.corp.example/airflow"}


def test_metadata_lives_on_the_platform_postgres_with_generated_keys():
    run = stack_run("dev")
    values = _chart(run).inputs["values"]
    assert values["postgresql"] == {"enabled": False}
    assert values["data"] == {"metadataSecretName": "airflow-metadata"}
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key].startswith("airflow-")
    metadata = run.one("kubernetes:core/v1:Secret", "liftoff-airflow-metadata-secret")
    assert "stringData" in metadata.secret_paths
    connection = metadata.inputs["stringData"]["connection"]
    assert connection.startswith("postgresql://airflow:")
    assert "@postgres.liftoff-dev.svc.cluster.local:5432/airflow" in connection
    # The Airflow role is created before the chart is installed.
    job = run.one("kubernetes:batch/v1:Job", "liftoff-postgres-airflow-setup")
    assert job.urn in _chart(run).dependencies


def test_fernet_key_is_urlsafe_base64_of_32_bytes():
    import base64

    key = fernet_key(base64.b64encode(bytes(range(250, 256)) * 5 + b"ab").decode())
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert "+" not in key and "/" not in key


def test_jobs_run_without_helm_hooks_and_admin_password_stays_in_a_file():
    run = stack_run("dev")
    values = _chart(run).inputs["values"]
    assert values["migrateDatabaseJob"]["useHelmHooks"] is False
    assert values["webserver"]["defaultUser"] == {"enabled": False}
    assert values["apiServer"]["defaultUser"] == {"enabled": False}
    assert "createUserJob" not in values
    job = run.one("kubernetes:batch/v1:Job", "liftoff-airflow-admin-user")
    (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
    assert "cat /etc/airflow-admin/password" in container["command"][-1]
    assert all("valueFrom" not in variable for variable in container["env"])
    assert _chart(run).urn in job.dependencies


def test_images_go_through_the_mirror_with_pinned_tags():
    values = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]
    assert values["defaultAirflowRepository"] == "registry.corp.example/mirror/apache/airflow"
    assert values["defaultAirflowTag"] == "3.2.2"
    for image in values["images"].values():
        assert image["repository"].startswith("registry.corp.example/mirror/")
        assert image["tag"]
    dev = _chart(stack_run("dev")).inputs["values"]
    assert dev["defaultAirflowRepository"] == "apache/airflow"
    assert dev["images"]["gitSync"]["repository"] == "registry.k8s.io/git-sync/git-sync"


def test_restricted_security_contexts_and_resources():
    values = _chart(stack_run("dev")).inputs["values"]
    pod = values["securityContexts"]["pod"]
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["securityContexts"]["containers"]["capabilities"] == {"drop": ["ALL"]}
    for component in ("scheduler", "apiServer", "dagProcessor", "triggerer", "workers"):
        assert values[component]["resources"]["limits"]


def test_dags_from_the_repository_or_git_sync():
    dev = _chart(stack_run("dev")).inputs["values"]
    assert dev["dags"]["gitSync"] == {"enabled": False}
    assert dev["volumeMounts"] == [
        {"name": "liftoff-dags", "mountPath": "/opt/airflow/dags", "readOnly": True}
    ]
    assert "dag_processor" not in dev["config"]
    stack_run("dev").one("kubernetes:core/v1:ConfigMap", "liftoff-airflow-dags")
    private = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]
    assert private["dags"]["gitSync"]["repo"] == "https://git.corp.example/data/dags.git"
    assert private["dags"]["gitSync"]["subPath"] == "dags"


@pytest.mark.parametrize(
    "dags",
    [
        {"source": "git", "repository": "https://git.example/dags.git"},
        {"source": "image", "image": "registry.example/airflow-dags:1.0.0"},
    ],
)
def test_reconciliation_dag_runs_when_dags_come_from_git_or_an_image(dags):
    run = run_program("Pulumi.dev.yaml", overrides={"liftoff:airflow": {"dags": dags}})
    config_map = run.one("kubernetes:core/v1:ConfigMap", "liftoff-airflow-dags")
    assert "liftoff_reconcile.py" in config_map.inputs["data"]
    values = _chart(run).inputs["values"]
    mount = {"name": "liftoff-dags", "mountPath": "/opt/airflow/liftoff-dags", "readOnly": True}
    assert mount in values["volumeMounts"]
    assert {"name": "liftoff-dags", "configMap": {"name": "airflow-dags"}} in values["volumes"]
    bundles = json.loads(values["config"]["dag_processor"]["dag_bundle_config_list"])
    assert {b["name"]: b["kwargs"] for b in bundles} == {
        "dags-folder": {},
        "liftoff": {"path": "/opt/airflow/liftoff-dags"},
    }


def test_git_sync_over_https_uses_a_token_secret():
    run = stack_run("kubernetes-private-cloud")
    git_sync = _chart(run).inputs["values"]["dags"]["gitSync"]
    assert git_sync["credentialsSecret"] == "airflow-git-credentials"
    assert "sshKeySecret" not in git_sync
    secret = run.one("kubernetes:core/v1:Secret", "liftoff-airflow-git-https-secret")
    assert "stringData" in secret.secret_paths
    data = secret.inputs["stringData"]
    assert set(data) == {
        "GIT_SYNC_USERNAME",
        "GIT_SYNC_PASSWORD",
        "GITSYNC_USERNAME",
        "GITSYNC_PASSWORD",
    }
    assert data["GITSYNC_USERNAME"] == "liftoff-dags"
    assert data["GITSYNC_PASSWORD"].startswith("mock-secret-")


def test_git_sync_over_ssh_uses_a_key_secret_and_known_hosts():
    known_hosts = "git.corp.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"
    run = run_program(
        "Pulumi.dev.yaml",
        overrides={
            "liftoff:airflow": {
                "dags": {
                    "source": "git",
                    "repository": "git@git.corp.example:data/dags.git",
                    "sshKey": {"secure": "v1:placeholder-ssh-key"},
                    "knownHosts": known_hosts,
                }
            }
        },
    )
    git_sync = _chart(run).inputs["values"]["dags"]["gitSync"]
    assert git_sync["sshKeySecret"] == "airflow-git-ssh-key"
    assert git_sync["knownHosts"] == known_hosts
    secret = run.one("kubernetes:core/v1:Secret", "liftoff-airflow-git-ssh-secret")
    assert "stringData" in secret.secret_paths
    assert list(secret.inputs["stringData"]) == ["gitSshKey"]


def test_high_availability_profile():
    values = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]
    assert values["executor"] == "CeleryExecutor" and values["redis"]["enabled"] is True
    assert values["scheduler"]["replicas"] == 2 and values["workers"]["replicas"] == 3
    assert values["apiServer"]["replicas"] == 2


@pytest.mark.parametrize("stack", ["dev", "kubernetes-private-cloud"])
def test_no_pgbouncer_and_the_values_check_refuses_it(stack):
    # Airflow 3 tasks reach the metadata DB through the API server; see README (PgBouncer).
    values = _chart(stack_run(stack)).inputs["values"]
    assert values["pgbouncer"] == {"enabled": False}
    with pytest.raises(ValueError, match=r"pgbouncer\.enabled must be false"):
        check_values({**values, "pgbouncer": {"enabled": True}})


def test_logs_go_to_the_archive_without_a_shared_volume():
    run = stack_run("kubernetes-private-cloud")
    values = _chart(run).inputs["values"]
    assert values["logs"]["persistence"] == {"enabled": False}
    assert values["config"]["logging"] == {
        "colored_console_log": "False",
        "remote_logging": "True",
        "remote_base_log_folder": "s3://liftoff-events/airflow-logs",
        "remote_log_conn_id": "liftoff_archive",
    }
    env = {e["name"]: e["value"] for e in values["env"]}
    connection = json.loads(env["AIRFLOW_CONN_LIFTOFF_ARCHIVE"])
    assert connection == {
        "conn_type": "aws",
        "extra": {"endpoint_url": "https://objects.corp.example:9000", "region_name": "us-east-1"},
    }
    # The keys never travel in values or env: boto3 reads the mounted archive Secret.
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/liftoff/archive/credentials"
    assert {
        "name": "archive-credentials",
        "secret": {"secretName": "archive-credentials", "defaultMode": 0o440},
    } in values["volumes"]
    assert "liftoff-archive-write-airflow" in {
        r.name for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    dev = _chart(stack_run("dev")).inputs["values"]
    assert dev["logs"]["persistence"] == {"enabled": False}
    assert "remote_logging" not in dev["config"]["logging"] and "env" not in dev


def test_celery_secrets_are_generated_once_and_passed_by_name():
    run = stack_run("kubernetes-private-cloud")
    values = _chart(run).inputs["values"]
    assert values["redis"]["passwordSecretName"] == "airflow-redis-password"
    assert values["data"]["brokerUrlSecretName"] == "airflow-broker-url"
    redis = run.one("kubernetes:core/v1:Secret", "liftoff-airflow-redis-secret")
    broker = run.one("kubernetes:core/v1:Secret", "liftoff-airflow-broker-secret")
    password = redis.inputs["stringData"]["password"]
    assert broker.inputs["stringData"]["connection"] == f"redis://:{password}@airflow-redis:6379/0"
    assert "stringData" in redis.secret_paths and "stringData" in broker.secret_paths
    assert run.one("random:index/randomPassword:RandomPassword", "liftoff-airflow-redis-key")
    with pytest.raises(ValueError, match="passwordSecretName"):
        check_values({**values, "redis": {**values["redis"], "passwordSecretName": None}})


def test_ui_ingress_has_the_collector_shape_and_an_honest_url():
    overrides = {
        "liftoff:airflow": {
            "webAccess": "public",
            "host": "airflow.example.com",
            "ingressClass": "nginx",
            "tlsSecret": "airflow-tls",
        }
    }
    run = run_program("Pulumi.dev.yaml", overrides=overrides)
    ingress = _chart(run).inputs["values"]["ingress"]["apiServer"]
    assert ingress == {
        "enabled": True,
        "ingressClassName": "nginx",
        "hosts": [
            {"name": "airflow.example.com", "tls": {"enabled": True, "secretName": "airflow-tls"}}
        ],
    }
    assert run.outputs["airflowUrl"] == "https://airflow.example.com"
    del overrides["liftoff:airflow"]["tlsSecret"]
    plain = run_program("Pulumi.dev.yaml", overrides=overrides)
    assert _chart(plain).inputs["values"]["ingress"]["apiServer"]["hosts"] == [
        {"name": "airflow.example.com", "tls": {"enabled": False}}
    ]
    assert plain.outputs["airflowUrl"] == "http://airflow.example.com"


def test_reconciliation_settings_reach_the_dag_through_airflow_config():
    liftoff = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]["config"]["liftoff"]
    assert liftoff["target"] == "kubernetes" and liftoff["stack"] == "kubernetes-private-cloud"
    secrets = {item["secret"] for item in json.loads(liftoff["reconcile_secrets"])}
    assert secrets == {"postgres-warehouse", "archive-credentials"}
    environment = json.loads(liftoff["reconcile_environment"])
    assert environment["PGHOST"] == "postgres.liftoff-data.svc.cluster.local"
    assert (
        "reconcile_environment"
        not in _chart(stack_run("dev")).inputs["values"]["config"]["liftoff"]
    ), "no archive: nothing to repair from"
    assert liftoff["services_image"] == "registry.corp.example/mirror/data/liftoff-services:0.1.0"


def test_network_paths_for_airflow_and_its_reconcile_pods():
    run = stack_run("kubernetes-private-cloud")
    names = {r.name for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert {
        "liftoff-airflow-internal",
        "liftoff-airflow-outbound",
        "liftoff-postgres-from-airflow-ingress",
        "liftoff-postgres-from-reconcile-ingress",
        "liftoff-archive-read-reconcile",
    } <= names
    assert schema_errors(run.kubernetes_objects()) == []


def test_values_are_checked_before_use():
    with pytest.raises(ValueError, match=r"postgresql\.enabled must be false"):
        check_values({"postgresql": {"enabled": True}})
    values = _chart(stack_run("dev")).inputs["values"]
    check_values(values)
    with pytest.raises(ValueError, match=r"apiServer\.defaultUser\.enabled must be false"):
        check_values({**values, "apiServer": {**values["apiServer"], "defaultUser": {}}})


def test_airflow_can_be_turned_off_and_the_url_is_exported():
    assert stack_run("dev").outputs["airflowUrl"] == (
        "http://airflow-api-server.liftoff-dev.svc.cluster.local:8080"
    )
    run = run_program("Pulumi.dev.yaml", overrides={"liftoff:airflow": {"enabled": False}})
    assert "airflowUrl" not in run.outputs
    assert not [r for r in run.resources if r.name.startswith("liftoff-airflow")]


def test_shared_log_volume_only_with_a_read_write_many_class():
    run = run_program(
        "Pulumi.dev.yaml",
        overrides={"liftoff:airflow": {"logsStorageClass": "cephfs", "logsStorageGb": 50}},
    )
    assert _chart(run).inputs["values"]["logs"]["persistence"] == {
        "enabled": True,
        "size": "50Gi",
        "storageClassName": "cephfs",
    }
    with pytest.raises(ConfigError, match=r"liftoff:airflow\.logsStorageGb: got 50"):
        load_config(
            {"liftoff:target": "kubernetes", "liftoff:airflow": '{"logsStorageGb": 50}'},
            project="liftoff",
            stack="dev",
        )
