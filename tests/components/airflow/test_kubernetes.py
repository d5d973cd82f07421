"""Airflow on Kubernetes: the official chart on the platform's Postgres."""

from __future__ import annotations

import pytest

from components.airflow.kubernetes import check_values, fernet_key
from components.charts import load_chart_pin
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
    assert values["createUserJob"]["enabled"] is False
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
        {"name": "dags", "mountPath": "/opt/airflow/dags", "readOnly": True}
    ]
    stack_run("dev").one("kubernetes:core/v1:ConfigMap", "liftoff-airflow-dags")
    private = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]
    assert private["dags"]["gitSync"]["repo"] == "https://git.corp.example/data/dags.git"
    assert private["dags"]["gitSync"]["subPath"] == "dags"
    assert "volumeMounts" not in private


def test_high_availability_profile():
    values = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]
    assert values["executor"] == "CeleryExecutor" and values["redis"]["enabled"] is True
    assert values["pgbouncer"]["enabled"] is True
    assert values["scheduler"]["replicas"] == 2 and values["workers"]["replicas"] == 3
    assert values["logs"]["persistence"] == {
        "enabled": True,
        "size": "50Gi",
        "storageClassName": "ceph-rbd-retain",
    }


def test_reconciliation_settings_reach_the_dag_through_airflow_config():
    liftoff = _chart(stack_run("kubernetes-private-cloud")).inputs["values"]["config"]["liftoff"]
    assert liftoff["target"] == "kubernetes" and liftoff["stack"] == "kubernetes-private-cloud"
    assert liftoff["warehouse_secret"] == "postgres-warehouse"
    assert liftoff["archive_secret"] == "archive-credentials"
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
    with pytest.raises(ValueError, match="createUserJob must stay disabled"):
        check_values({**values, "createUserJob": {"enabled": True}})


def test_airflow_can_be_turned_off_and_the_url_is_exported():
    assert stack_run("dev").outputs["airflowUrl"] == (
        "http://airflow-api-server.liftoff-dev.svc.cluster.local:8080"
    )
    run = run_program("Pulumi.dev.yaml", overrides={"liftoff:airflow": {"enabled": False}})
    assert "airflowUrl" not in run.outputs
    assert not [r for r in run.resources if r.name.startswith("liftoff-airflow")]
