"""Postgres on Kubernetes: a StatefulSet on retained volumes behind a stable Service name."""

from __future__ import annotations

import pytest

from components.kube import StackContext
from components.network import KubernetesPeer
from components.network.kubernetes import KubernetesNetwork, KubernetesNetworkArgs
from components.network.settings import KubernetesSettings
from components.postgres.kubernetes import KubernetesPostgres, KubernetesPostgresArgs
from components.postgres.settings import KubernetesPostgresSettings
from tests.conftest import stack_run
from tests.harness import mock_password, run_program, run_with_config
from tests.kubernetes_schema import schema_errors

STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"


def test_volume_claim_template_uses_the_configured_class_and_size():
    spec = stack_run("kubernetes-private-cloud").one(STATEFUL_SET).inputs["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "ceph-rbd-retain"
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def test_default_storage_class_is_left_to_the_cluster():
    (claim,) = stack_run("dev").one(STATEFUL_SET).inputs["spec"]["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"]


def test_image_goes_through_the_registry_mirror():
    pod = stack_run("kubernetes-private-cloud").one(STATEFUL_SET).inputs["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == (
        "registry.corp.example/mirror/library/postgres:17.7"
    )
    dev_pod = stack_run("dev").one(STATEFUL_SET).inputs["spec"]["template"]
    assert dev_pod["spec"]["containers"][0]["image"] == "docker.io/library/postgres:17.7"


def test_pod_meets_the_restricted_profile_with_probes_and_resources():
    pod = stack_run("kubernetes-private-cloud").one(STATEFUL_SET).inputs["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert "pg_isready" in " ".join(container[probe]["exec"]["command"])


def test_password_comes_from_a_secret_never_a_plain_env_value():
    run = stack_run("dev")
    secret = run.one("kubernetes:core/v1:Secret", "liftoff-postgres-credentials")
    assert "stringData" in secret.secret_paths
    pod = run.one(STATEFUL_SET).inputs["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"] == "/etc/liftoff/postgres/password"
    mounted = {v["name"]: v for v in pod["volumes"]}["credentials"]
    assert mounted["secret"]["secretName"] == "postgres-credentials"


def test_service_dns_name_is_the_exported_discovery_name():
    run = stack_run("kubernetes-private-cloud")
    services = {
        r.inputs["metadata"]["name"]: r.inputs for r in run.of_type("kubernetes:core/v1:Service")
    }
    assert services["postgres"]["spec"]["type"] == "ClusterIP"
    assert services["postgres-headless"]["spec"]["clusterIP"] == "None"
    assert run.one(STATEFUL_SET).inputs["spec"]["serviceName"] == "postgres-headless"
    name = services["postgres"]["metadata"]["name"]
    namespace = services["postgres"]["metadata"]["namespace"]
    assert run.outputs["postgres"]["dnsName"] == f"{name}.{namespace}.svc.cluster.local"
    assert run.outputs["postgres"]["host"] == run.outputs["postgres"]["dnsName"]


def test_only_labelled_clients_reach_port_5432_and_drains_may_evict_the_one_server():
    run = stack_run("dev")
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "liftoff-postgres-clients")
    (rule,) = policy.inputs["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"liftoff.io/postgres-client": "true"}}}
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    pdb = run.one("kubernetes:policy/v1:PodDisruptionBudget", "liftoff-postgres-pdb").inputs["spec"]
    # A single server: minAvailable 1 would block every node drain.
    assert pdb == {"maxUnavailable": 1, "selector": pdb["selector"]}


def test_grant_connect_declares_both_halves_of_the_policy():
    def program():
        network = KubernetesNetwork(
            "net",
            KubernetesNetworkArgs(
                settings=KubernetesSettings(namespace="ns"), context=StackContext(stack="unit")
            ),
        )
        postgres = KubernetesPostgres(
            "db",
            KubernetesPostgresArgs(
                settings=KubernetesPostgresSettings(),
                network=network,
                context=StackContext(stack="unit"),
            ),
        )
        postgres.grant_connect(
            KubernetesPeer("loader", pod_labels={"app.kubernetes.io/component": "loader"})
        )

    run = run_with_config({}, stack="unit", program=program)
    policies = {
        r.name: r.inputs["spec"]
        for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    ingress = policies["db-from-loader-ingress"]
    egress = policies["db-from-loader-egress"]
    loader = {"app.kubernetes.io/component": "loader"}
    assert ingress["ingress"][0]["from"] == [{"podSelector": {"matchLabels": loader}}]
    assert ingress["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "postgres"
    assert egress["podSelector"] == {"matchLabels": loader}
    assert egress["egress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]


def _kubernetes_client_database(client="warehouse"):
    def program():
        network = KubernetesNetwork(
            "net",
            KubernetesNetworkArgs(
                settings=KubernetesSettings(namespace="ns"), context=StackContext(stack="unit")
            ),
        )
        postgres = KubernetesPostgres(
            "db",
            KubernetesPostgresArgs(
                settings=KubernetesPostgresSettings(),
                network=network,
                context=StackContext(
                    stack="unit",
                    services_image="registry.example/liftoff-services:1.0.0",
                    image_registry="mirror.example",
                ),
            ),
        )
        postgres.add_database(client)

    return run_with_config({}, stack="unit", program=program)


def test_add_database_runs_an_idempotent_job_with_admin_and_client_secrets():
    run = _kubernetes_client_database()
    job = run.one("kubernetes:batch/v1:Job")
    assert job.inputs["metadata"]["name"].startswith("postgres-setup-warehouse-")
    (container,) = job.inputs["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["ensure-database"]
    assert container["image"] == "mirror.example/liftoff-services:1.0.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LIFTOFF_DATABASE_NAME"] == "warehouse"
    assert env["PGPASSWORD_FILE"] == "/etc/liftoff/postgres/password"
    assert env["LIFTOFF_DATABASE_PASSWORD_FILE"] == "/etc/liftoff/postgres-client/password"
    volumes = {
        v["name"]: v["secret"]["secretName"]
        for v in job.inputs["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert volumes == {"admin": "postgres-credentials", "client": "postgres-warehouse"}
    assert schema_errors(run.kubernetes_objects()) == []


def test_client_secret_holds_only_the_client_credentials():
    run = _kubernetes_client_database()
    secret = run.one("kubernetes:core/v1:Secret", "db-warehouse-credentials")
    assert secret.inputs["metadata"]["name"] == "postgres-warehouse"
    data = secret.inputs["stringData"]
    assert data["username"] == "warehouse" and data["database"] == "warehouse"
    assert data["password"] == mock_password("db-warehouse-password")
    assert data["password"] != mock_password("db-password")
    assert "stringData" in secret.secret_paths
    # The setup job may reach Postgres.
    policies = {r.name for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert "db-from-postgres-setup-warehouse-ingress" in policies


def test_client_names_are_checked():
    import pytest

    with pytest.raises(Exception, match="client 'Bad-Name' is not allowed"):
        _kubernetes_client_database("Bad-Name")


def test_nightly_backups_go_to_the_archive_with_the_password_only_in_a_file():
    run = stack_run("kubernetes-private-cloud")
    cron = run.one("kubernetes:batch/v1:CronJob").inputs["spec"]
    assert cron["schedule"] == "17 3 * * *" and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (dumper,) = pod["initContainers"]
    (uploader,) = pod["containers"]
    assert dumper["image"] == "registry.corp.example/mirror/library/postgres:17.7"
    assert "pg_dump --format=custom" in dumper["command"][-1]
    assert uploader["args"] == ["backup-upload", "--dir", "/backup"]
    env = {e["name"]: e["value"] for e in uploader["env"]}
    assert env["LIFTOFF_BACKUP_RETENTION_DAYS"] == "7"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/liftoff/archive/credentials"
    for container in (dumper, uploader):
        assert all("valueFrom" not in variable for variable in container["env"])
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    policies = {r.name for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    assert "liftoff-postgres-from-postgres-backup-ingress" in policies
    assert "liftoff-archive-write-postgres-backup" in policies


def test_no_backup_job_without_an_archive():
    assert stack_run("dev").of_type("kubernetes:batch/v1:CronJob") == []


def test_a_major_version_change_is_refused_with_the_upgrade_procedure():
    # The stack's previous update exported the major version its data directory holds. (The
    # runtime may wrap the error in its own ValueError; the message is what users see.)
    with pytest.raises(ValueError) as error:
        run_program("Pulumi.dev.yaml", previous_outputs={"postgresMajorVersion": "16"})
    message = str(error.value)
    assert "liftoff:postgres.version: got '17'; allowed: '16'" in message
    assert "Postgres major version upgrade" in message and "pg_upgrade" in message
    # The same major (a minor image bump) and a new stack go ahead.
    same = run_program("Pulumi.dev.yaml", previous_outputs={"postgresMajorVersion": "17"})
    assert same.outputs["postgresMajorVersion"] == "17"
    # After the documented procedure, the operator names the major the data came from; the
    # setup jobs then run again (new names) to recreate roles and databases on the new server.
    migrated = run_program(
        "Pulumi.dev.yaml",
        overrides={"liftoff:postgres": {"version": "17", "majorUpgradeFrom": "16"}},
        previous_outputs={"postgresMajorVersion": "16"},
    )
    old = run_program("Pulumi.dev.yaml", overrides={"liftoff:postgres": {"version": "16"}})

    def setup_jobs(run):
        return {
            r.inputs["metadata"]["name"]
            for r in run.of_type("kubernetes:batch/v1:Job")
            if r.name.startswith("liftoff-postgres-")
        }

    assert setup_jobs(migrated) and not setup_jobs(migrated) & setup_jobs(old)


def test_the_server_never_starts_on_a_data_directory_of_another_major():
    spec = (
        stack_run("dev")
        .one("kubernetes:apps/v1:StatefulSet", "liftoff-postgres-statefulset")
        .inputs["spec"]["template"]["spec"]
    )
    (guard,) = spec["initContainers"]
    (server,) = spec["containers"]
    assert guard["image"] == server["image"] == "docker.io/library/postgres:17.7"
    script = guard["command"][-1]
    assert "/var/lib/postgresql/data/pgdata/PG_VERSION" in script
    assert '!= "17"' in script and "exit 1" in script
    assert {"name": "data", "mountPath": "/var/lib/postgresql/data", "readOnly": True} in guard[
        "volumeMounts"
    ]


def test_a_tags_change_leaves_the_claim_template_alone():
    """Tags are labels everywhere, the claim template's too; a changed template replaces the
    StatefulSet, so the engine keeps the template's labels as they were (the existing claim's
    labels never change anyway)."""
    sts = stack_run("kubernetes-private-cloud").one(
        "kubernetes:apps/v1:StatefulSet", "liftoff-postgres-statefulset"
    )
    assert sts.ignore_changes == ["spec.volumeClaimTemplates[0].metadata.labels"]
    labels = sts.inputs["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"]
    assert labels["owner"] == "data-platform"  # the path really holds the tags
