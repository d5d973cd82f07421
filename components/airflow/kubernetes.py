"""Airflow on Kubernetes: the official Apache Airflow chart on the platform's Postgres."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import kube
from components.airflow import RECONCILE, AirflowEndpoint, dag_files
from components.airflow.settings import AirflowSettings
from components.archive import ArchiveClient
from components.archive.kubernetes import ExternalArchive
from components.archive.settings import ArchiveSettings
from components.charts import ChartPin, deep_merge, load_chart_pin
from components.config import ChartSource
from components.network import KubernetesPeer
from components.network.kubernetes import KubernetesNetwork
from components.postgres import ClientDatabase
from components.postgres.kubernetes import KubernetesPostgres

RELEASE = "airflow"
AIRFLOW_UID = 50000
API_PORT = 8080
# Labels the chart puts on every Airflow pod of release `airflow`.
AIRFLOW_PODS = {"tier": "airflow", "release": RELEASE}
SECRET_NAMES = {
    "metadata": "airflow-metadata",
    "fernet": "airflow-fernet-key",
    "api": "airflow-api-secret-key",
    "jwt": "airflow-jwt-secret",
    "webserver": "airflow-webserver-secret-key",
    "admin": "airflow-admin",
    "redis": "airflow-redis-password",
    "broker": "airflow-broker-url",
    "git-https": "airflow-git-credentials",
    "git-ssh": "airflow-git-ssh-key",
}
DAGS_CONFIG_MAP = "airflow-dags"
METADATA_DIR = "/etc/airflow-metadata"
# Where liftoff's own DAGs are mounted when the customer's DAGs come from git or an image;
# Airflow reads them as a second DAG bundle.
LIFTOFF_DAGS_DIR = "/opt/airflow/liftoff-dags"
# The Airflow connection remote logging writes task logs through (the archive).
ARCHIVE_CONNECTION_ID = "liftoff_archive"
REDIS_PORT = 6379
# The official redis image's `redis` user.
REDIS_UID = 999
# The chart's default user for the statsd exporter (nobody).
STATSD_UID = 65534
# git-sync's image runs as this user (registry.k8s.io/git-sync); it writes only to the
# shared dags volume, group-owned through fsGroup 0.
GIT_SYNC_UID = 65533
COMPONENT_RESOURCES = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}
SMALL_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "250m", "memory": "256Mi"},
}


@dataclass(frozen=True)
class KubernetesAirflowArgs:
    context: kube.StackContext
    """The stack, its tags, the image registry, the services image and the storage
    class: what every Kubernetes capability of the stack shares."""
    settings: AirflowSettings
    network: KubernetesNetwork
    postgres: KubernetesPostgres
    warehouse: ClientDatabase | None
    """The warehouse database the reconciliation DAG repairs; None without a warehouse."""
    chart_source: ChartSource | None = None
    archive: ExternalArchive | None = None


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _dag_bundles() -> str:
    """Airflow 3 DAG bundles: the default DAG folder, plus liftoff's own DAGs."""
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    return json.dumps(
        [
            {"name": "dags-folder", "classpath": local, "kwargs": {}},
            {"name": "liftoff", "classpath": local, "kwargs": {"path": LIFTOFF_DAGS_DIR}},
        ]
    )


def fernet_key(raw_base64: str) -> str:
    """Airflow's Fernet key: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(base64.b64decode(raw_base64)).decode()


def _image_repository(pin: ChartPin, name: str, registry: str | None) -> str:
    """The repository of a chart image (no tag), through the registry override."""
    return kube.ImageReference.parse(pin.images[name]).repository(registry)


def _image_values(pin: ChartPin, name: str, registry: str | None) -> dict[str, str]:
    """`{repository, tag}` for one of the chart's auxiliary images, pinned in charts/."""
    return {
        "repository": _image_repository(pin, name, registry),
        "tag": kube.ImageReference.parse(pin.images[name]).tag or "",
    }


def check_values(values: dict[str, Any]) -> None:
    """Refuse values that would deploy an insecure or self-contradicting Airflow."""
    problems = []
    if values.get("postgresql", {}).get("enabled"):
        problems.append("postgresql.enabled must be false (the platform's Postgres is used)")
    if not values.get("data", {}).get("metadataSecretName"):
        problems.append("data.metadataSecretName must name the metadata connection Secret")
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        if not values.get(key):
            problems.append(f"{key} must be set (never the chart's generated default)")
    for component in ("webserver", "apiServer"):
        if values.get(component, {}).get("defaultUser", {}).get("enabled", True):
            problems.append(
                f"{component}.defaultUser.enabled must be false (the chart's user job puts "
                "the password in args)"
            )
    if values.get("migrateDatabaseJob", {}).get("useHelmHooks", True):
        problems.append("migrateDatabaseJob.useHelmHooks must be false (Pulumi runs no hooks)")
    if values.get("pgbouncer", {}).get("enabled"):
        problems.append("pgbouncer.enabled must be false (see README: PgBouncer)")
    logs = values.get("logs", {}).get("persistence", {})
    if logs.get("enabled") and not logs.get("storageClassName"):
        problems.append(
            "logs.persistence needs an explicit ReadWriteMany storageClassName (the chart's "
            "claim is ReadWriteMany)"
        )
    executor = values.get("executor")
    if executor not in ("KubernetesExecutor", "CeleryExecutor"):
        problems.append(f"executor {executor!r} is not supported")
    if executor == "CeleryExecutor" and not values.get("redis", {}).get("enabled"):
        problems.append("CeleryExecutor needs redis.enabled")
    if executor == "CeleryExecutor" and not (
        values.get("redis", {}).get("passwordSecretName")
        and values.get("data", {}).get("brokerUrlSecretName")
    ):
        problems.append(
            "redis.passwordSecretName and data.brokerUrlSecretName must be set (the chart "
            "would generate a new password on every render)"
        )
    pod = values.get("securityContexts", {}).get("pod", {})
    if not pod.get("runAsNonRoot") or pod.get("seccompProfile") != {"type": "RuntimeDefault"}:
        problems.append("securityContexts.pod must be restricted (non-root, seccomp)")
    if problems:
        raise ValueError("invalid Airflow chart values: " + "; ".join(problems))


class KubernetesAirflow(pulumi.ComponentResource):
    """The official Airflow chart (pinned in `charts/airflow.yaml`) wired to the platform:

    - metadata in a database of its own on the platform Postgres (role `airflow`, created
      idempotently before the chart); no PgBouncer (Airflow 3 tasks use the API server);
    - Fernet, API, JWT keys and the Redis password / broker URL generated once with
      pulumi-random into Secrets (the chart's own would change on every render);
    - the migration job rendered as an ordinary Job (no Helm hooks under Pulumi), and an admin
      user job of liftoff's own that reads the password from a mounted Secret;
    - DAGs from this repository (a ConfigMap), git-sync (HTTPS token or SSH key Secrets), or
      an image, with the platform's own DAGs always present; task logs to the archive by
      remote logging, a shared ReadWriteMany volume only when a class for it is configured;
    - every image through the registry override; restricted security contexts; resources;
    - NetworkPolicies: Airflow pods among themselves, to Postgres, to the Kubernetes API
      (to launch task pods), and reconcile pods to Postgres and the archive.
    """

    def __init__(
        self, name: str, args: KubernetesAirflowArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:airflow:KubernetesAirflow", name, None, opts)
        self._name = name
        self._args = args
        network = args.network
        labels = kube.labels(RELEASE, args.context.stack, args.context.tags)
        self.labels = labels

        self.metadata_database = args.postgres.add_database("airflow")
        connection = self.metadata_database.connection
        self.secrets = self._secrets(name, connection, labels)
        dags_config_map = self._dags_config_map(name, labels)
        pin = load_chart_pin("airflow")
        self.values = self.chart_values(pin)
        check_values(self.values)
        depends = [self.metadata_database.ready, network.default_deny, *self.secrets]
        if dags_config_map is not None:
            depends.append(dags_config_map)
        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            name=RELEASE,
            namespace=network.namespace_name,
            values=self.values,
            **pin.source_args(args.chart_source),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
        self._admin_user_job(name, labels, pin)
        self._network_policies(name, labels)

        if args.settings.host:
            # https only where the Ingress terminates TLS (a tlsSecret is configured).
            scheme = "https" if args.settings.tls_secret else "http"
            url = pulumi.Output.from_input(f"{scheme}://{args.settings.host}")
        else:
            url = pulumi.Output.from_input(
                f"http://{network.service_host(f'{RELEASE}-api-server')}:{API_PORT}"
            )
        self.endpoint = AirflowEndpoint(url=url)
        self.register_outputs({"url": url})

    # --- secrets -------------------------------------------------------------------------------

    def _secrets(self, name: str, connection, labels) -> list[k8s.core.v1.Secret]:
        network = self._args.network
        opts = pulumi.ResourceOptions(parent=self)

        def random_key(role: str, length: int = 48) -> pulumi.Output[str]:
            return random.RandomPassword(
                f"{name}-{role}-key", length=length, special=False, opts=opts
            ).result

        fernet = random.RandomBytes(f"{name}-fernet-bytes", length=32, opts=opts)
        secrets = []
        values: dict[str, dict[str, pulumi.Input[str]]] = {
            "metadata": {
                # The chart reads the SQLAlchemy URL from the `connection` key.
                "connection": pulumi.Output.format(
                    "postgresql://{0}:{1}@{2}:{3}/{4}?sslmode=prefer",
                    connection.username,
                    connection.password,
                    connection.host,
                    connection.port,
                    connection.database,
                )
            },
            "fernet": {"fernet-key": fernet.base64.apply(fernet_key)},
            "api": {"api-secret-key": random_key("api")},
            "jwt": {"jwt-secret": random_key("jwt")},
            "webserver": {"webserver-secret-key": random_key("webserver")},
            "admin": {"username": "admin", "password": random_key("admin", 32)},
        }
        settings = self._args.settings
        if settings.executor == "CeleryExecutor":
            # Generated once and kept in state: the chart's own would change on every render
            # (no Helm hooks under Pulumi) while the running Redis keeps the first one.
            redis_password = random_key("redis", 32)
            values["redis"] = {"password": redis_password}
            values["broker"] = {
                "connection": pulumi.Output.format(
                    "redis://:{0}@{1}-redis:{2}/0", redis_password, RELEASE, REDIS_PORT
                )
            }
        dags = settings.dags
        if dags.token:
            # git-sync v4 reads GITSYNC_*; the chart's template maps the GIT_SYNC_* keys.
            values["git-https"] = {
                key: value
                for prefix in ("GIT_SYNC_", "GITSYNC_")
                for key, value in (
                    (f"{prefix}USERNAME", dags.username or "git"),
                    (f"{prefix}PASSWORD", dags.token),
                )
            }
        if dags.ssh_key:
            values["git-ssh"] = {"gitSshKey": dags.ssh_key}
        for role, data in values.items():
            secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-{role}-secret",
                    metadata=network.metadata(SECRET_NAMES[role], labels),
                    type="Opaque",
                    string_data={k: pulumi.Output.secret(v) for k, v in data.items()},
                    opts=opts,
                )
            )
        return secrets

    def _dags_config_map(self, name: str, labels) -> k8s.core.v1.ConfigMap | None:
        # Always: with DAGs from git or an image, the reconciliation DAG still comes from here.
        files = dag_files()
        return k8s.core.v1.ConfigMap(
            f"{name}-dags",
            metadata=self._args.network.metadata(DAGS_CONFIG_MAP, labels),
            data={path.name: path.read_text() for path in files},
            opts=pulumi.ResourceOptions(parent=self),
        )

    # --- values --------------------------------------------------------------------------------

    def chart_values(self, pin: ChartPin) -> dict[str, Any]:
        args = self._args
        settings = args.settings
        registry = args.context.image_registry
        high_availability = settings.high_availability
        values: dict[str, Any] = {
            "airflowVersion": settings.version,
            "defaultAirflowRepository": _image_repository(pin, "airflow", registry),
            "defaultAirflowTag": settings.version,
            "images": {
                name: _image_values(pin, name, registry)
                for name in ("gitSync", "pgbouncer", "pgbouncerExporter", "redis")
            },
            "executor": settings.executor,
            "labels": dict(sorted(args.context.tags.items())),
            "data": {"metadataSecretName": SECRET_NAMES["metadata"]},
            "fernetKeySecretName": SECRET_NAMES["fernet"],
            "apiSecretKeySecretName": SECRET_NAMES["api"],
            "jwtSecretName": SECRET_NAMES["jwt"],
            "webserverSecretKeySecretName": SECRET_NAMES["webserver"],
            "uid": AIRFLOW_UID,
            "gid": 0,
            "securityContexts": {
                "pod": {
                    "runAsNonRoot": True,
                    "runAsUser": AIRFLOW_UID,
                    "runAsGroup": 0,
                    "fsGroup": 0,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                # The chart's default for every Airflow-image container (scheduler, API
                # server, workers, triggerer, DAG processor, jobs, their wait-for-migrations
                # init containers and log groomers). The templates read `containers`, the
                # schema documents `container`: both, so either chart reading applies.
                "containers": RESTRICTED_CONTAINER,
                "container": RESTRICTED_CONTAINER,
            },
            # Airflow 3 tasks reach the metadata database through the API server, not
            # directly, so the connection fan-out PgBouncer absorbs is gone; the chart's
            # PgBouncer also cannot be configured from a metadata Secret (see README).
            "pgbouncer": {"enabled": False},
            # Off in charts/airflow.yaml; restricted all the same should a customer enable it.
            "statsd": {
                "securityContexts": {
                    "pod": kube.pod_security_context(STATSD_UID),
                    "container": RESTRICTED_CONTAINER,
                }
            },
            "redis": {
                "enabled": settings.executor == "CeleryExecutor",
                "resources": SMALL_RESOURCES,
                "persistence": self._volume(8),
                # Redis and git-sync do not inherit the global contexts (the chart's
                # localPodSecurityContext / localContainerSecurityContext helpers).
                "securityContexts": {
                    "pod": kube.pod_security_context(REDIS_UID),
                    "container": RESTRICTED_CONTAINER,
                },
            },
            "scheduler": {
                "replicas": 2 if high_availability else 1,
                "resources": COMPONENT_RESOURCES,
            },
            "apiServer": {
                "replicas": 2 if high_availability else 1,
                "resources": COMPONENT_RESOURCES,
            },
            "dagProcessor": {"resources": COMPONENT_RESOURCES},
            "triggerer": {"resources": COMPONENT_RESOURCES, "persistence": self._volume(5)},
            "workers": {
                "replicas": settings.workers,
                "resources": COMPONENT_RESOURCES,
                "persistence": self._volume(10),
            },
            "migrateDatabaseJob": {"resources": SMALL_RESOURCES},
            "logs": {"persistence": self._logs_volume()},
            "dags": self._dag_values(),
            "config": {
                "core": {
                    "auth_manager": "airflow.providers.fab.auth_manager.fab_auth_manager."
                    "FabAuthManager"
                },
                "liftoff": self._liftoff_config(),
            },
        }
        if settings.executor == "CeleryExecutor":
            values["redis"]["passwordSecretName"] = SECRET_NAMES["redis"]
            values["data"]["brokerUrlSecretName"] = SECRET_NAMES["broker"]
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []
        env: list[dict[str, str]] = []
        dags_volume = {"name": "liftoff-dags", "configMap": {"name": DAGS_CONFIG_MAP}}
        if settings.dags.kind == "repository":
            volumes.append(dags_volume)
            mounts.append(
                {"name": "liftoff-dags", "mountPath": "/opt/airflow/dags", "readOnly": True}
            )
        else:
            # The customer's DAGs fill the default bundle; the platform's reconciliation DAG
            # runs alongside them from a bundle of its own.
            volumes.append(dags_volume)
            mounts.append({"name": "liftoff-dags", "mountPath": LIFTOFF_DAGS_DIR, "readOnly": True})
            values["config"]["dag_processor"] = {"dag_bundle_config_list": _dag_bundles()}
        if settings.dags.kind == "image":
            dags_image = kube.ImageReference.parse(settings.dags.image or "", qualified=False)
            values["images"]["airflow"] = {"repository": dags_image.name, "tag": dags_image.tag}
        if args.archive is not None:
            # Task logs go to the archive (S3-compatible) with Airflow remote logging; the
            # credentials stay in the archive's Secret, mounted as an AWS credentials file.
            # (The grant to the Airflow pods is made with the other network paths.)
            archive = args.archive.client()
            volumes.append(archive.volume("archive-credentials"))
            mounts.append(archive.mount("archive-credentials"))
            env.extend(self._archive_connection_env(args.archive.settings, archive))
            values["config"]["logging"] = {
                "remote_logging": "True",
                "remote_base_log_folder": f"s3://{args.archive.settings.bucket_name}/airflow-logs",
                "remote_log_conn_id": ARCHIVE_CONNECTION_ID,
            }
        values["volumes"] = volumes
        values["volumeMounts"] = mounts
        if env:
            values["env"] = env
        if settings.host:
            tls: dict[str, Any] = {"enabled": bool(settings.tls_secret)}
            if settings.tls_secret:
                tls["secretName"] = settings.tls_secret
            ingress: dict[str, Any] = {
                "enabled": True,
                "hosts": [{"name": settings.host, "tls": tls}],
            }
            if settings.ingress_class:
                ingress["ingressClassName"] = settings.ingress_class
            values["ingress"] = {"apiServer": ingress}
        return deep_merge(pin.values, values)

    @staticmethod
    def _archive_connection_env(
        archive: ArchiveSettings, client: ArchiveClient
    ) -> list[dict[str, Any]]:
        """The remote-logging connection (no secret in it) and where boto3 finds the keys."""
        connection = {
            "conn_type": "aws",
            "extra": {"endpoint_url": archive.endpoint or "", "region_name": archive.region},
        }
        return [
            {
                "name": f"AIRFLOW_CONN_{ARCHIVE_CONNECTION_ID.upper()}",
                "value": json.dumps(connection, sort_keys=True),
            },
            {
                "name": "AWS_SHARED_CREDENTIALS_FILE",
                "value": client.connection["AWS_SHARED_CREDENTIALS_FILE"],
            },
        ]

    def _volume(self, size_gb: int) -> dict[str, Any]:
        volume: dict[str, Any] = {"enabled": True, "size": f"{size_gb}Gi"}
        if self._args.context.storage_class:
            volume["storageClassName"] = self._args.context.storage_class
        return volume

    def _logs_volume(self) -> dict[str, Any]:
        """The chart's shared log claim is ReadWriteMany: only with a class that offers it."""
        settings = self._args.settings
        if not settings.logs_storage_class:
            return {"enabled": False}
        return {
            "enabled": True,
            "size": f"{settings.logs_storage_gb}Gi",
            "storageClassName": settings.logs_storage_class,
        }

    def _dag_values(self) -> dict[str, Any]:
        dags = self._args.settings.dags
        if dags.kind != "git":
            return {"gitSync": {"enabled": False}, "persistence": {"enabled": False}}
        git_sync: dict[str, Any] = {
            "enabled": True,
            "repo": dags.repository,
            "branch": dags.ref,
            "rev": "HEAD",
            "subPath": dags.path,
            "resources": SMALL_RESOURCES,
            "uid": GIT_SYNC_UID,
            "securityContexts": {"container": {**RESTRICTED_CONTAINER, "runAsUser": GIT_SYNC_UID}},
        }
        if dags.token:
            git_sync["credentialsSecret"] = SECRET_NAMES["git-https"]
        if dags.ssh_key:
            git_sync["sshKeySecret"] = SECRET_NAMES["git-ssh"]
            git_sync["knownHosts"] = dags.known_hosts
        return {"persistence": {"enabled": False}, "gitSync": git_sync}

    def _liftoff_config(self) -> dict[str, str]:
        """The `[liftoff]` section the reconciliation DAG reads (no secrets: names only)."""
        args = self._args
        config = {
            "target": "kubernetes",
            "stack": args.context.stack,
            "namespace": args.network.namespace_name,
            "services_image": kube.image(args.context.services_image, args.context.image_registry),
        }
        if args.warehouse is not None and args.warehouse.secret_name:
            config.update(
                {
                    "warehouse_host": args.postgres.host,
                    "warehouse_port": str(args.postgres.port),
                    "warehouse_database": args.warehouse.role,
                    "warehouse_user": args.warehouse.role,
                    "warehouse_secret": args.warehouse.secret_name,
                }
            )
        if args.archive is not None:
            config.update(
                {
                    "archive_bucket": args.archive.settings.bucket_name or "",
                    "archive_endpoint": args.archive.settings.endpoint or "",
                    "archive_region": args.archive.settings.region,
                    "archive_secret": args.archive.secret_name,
                }
            )
        return dict(sorted(config.items()))

    # --- admin user and network --------------------------------------------------------------

    def _admin_user_job(self, name: str, labels, pin: ChartPin) -> None:
        """Create the UI admin (idempotent), reading the password from a mounted Secret."""
        args = self._args
        component = "airflow-admin-user"
        job_labels = {
            **kube.labels(component, args.context.stack, args.context.tags),
            **AIRFLOW_PODS,
        }
        repository = _image_repository(pin, "airflow", args.context.image_registry)
        image = f"{repository}:{args.settings.version}"
        script = (
            "if airflow users list --output plain | awk '{print $2}' | grep -qx \"$ADMIN_USER\"; "
            "then echo admin exists; else "
            'airflow users create --role Admin --username "$ADMIN_USER" '
            '--password "$(cat /etc/airflow-admin/password)" --firstname Admin --lastname User '
            '--email "$ADMIN_USER@localhost"; fi'
        )
        container = {
            "name": "create-admin-user",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["bash", "-c", script],
            "env": kube.env(
                {
                    "ADMIN_USER": "admin",
                    # Airflow reads the connection from the mounted Secret (the _CMD form).
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"cat {METADATA_DIR}/connection",
                    "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager."
                    "fab_auth_manager.FabAuthManager",
                    # The root filesystem is read-only; Airflow writes its config under HOME.
                    "AIRFLOW_HOME": "/tmp/airflow",
                }
            ),
            "resources": SMALL_RESOURCES,
            "securityContext": kube.container_security_context(),
            "volumeMounts": [
                {"name": "admin", "mountPath": "/etc/airflow-admin", "readOnly": True},
                {"name": "metadata", "mountPath": METADATA_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        k8s.batch.v1.Job(
            f"{name}-admin-user",
            metadata=args.network.metadata(component, job_labels),
            spec={
                "backoffLimit": 20,
                "activeDeadlineSeconds": 1800,
                "template": {
                    "metadata": {"labels": job_labels},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "automountServiceAccountToken": False,
                        "securityContext": kube.pod_security_context(AIRFLOW_UID, 0),
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "admin",
                                "secret": {
                                    "secretName": SECRET_NAMES["admin"],
                                    "defaultMode": 0o440,
                                },
                            },
                            {
                                "name": "metadata",
                                "secret": {
                                    "secretName": SECRET_NAMES["metadata"],
                                    "defaultMode": 0o440,
                                },
                            },
                            {"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}},
                        ],
                    },
                },
            },
            # After the chart: its migration job creates the tables the user is written to.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart]),
        )

    def _network_policies(self, name: str, labels) -> None:
        args = self._args
        network = args.network
        airflow = KubernetesPeer("airflow", pod_labels=AIRFLOW_PODS)
        args.postgres.grant_connect(airflow)
        opts = pulumi.ResourceOptions(parent=self, depends_on=[network.default_deny])
        # Components talk to each other (task execution API, logs, PgBouncer, Redis).
        k8s.networking.v1.NetworkPolicy(
            f"{name}-internal",
            metadata=network.metadata("airflow-internal", labels),
            spec={
                "podSelector": {"matchLabels": AIRFLOW_PODS},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": AIRFLOW_PODS}}]}],
                "egress": [{"to": [{"podSelector": {"matchLabels": AIRFLOW_PODS}}]}],
            },
            opts=opts,
        )
        # The scheduler and workers launch task pods through the Kubernetes API, and git-sync
        # reaches the git host; neither has a fixed in-cluster address to select.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-outbound",
            metadata=network.metadata("airflow-outbound", labels),
            spec={
                "podSelector": {"matchLabels": AIRFLOW_PODS},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "ports": [
                            {"protocol": "TCP", "port": 443},
                            {"protocol": "TCP", "port": 6443},
                            {"protocol": "TCP", "port": 22},
                        ]
                    }
                ],
            },
            opts=opts,
        )
        if args.settings.host:
            k8s.networking.v1.NetworkPolicy(
                f"{name}-ui",
                metadata=network.metadata("airflow-ui", labels),
                spec={
                    "podSelector": {"matchLabels": {**AIRFLOW_PODS, "component": "api-server"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"ports": [{"protocol": "TCP", "port": API_PORT}]}],
                },
                opts=opts,
            )
        # Pods the reconciliation DAG launches (services image) reach Postgres and the archive.
        reconcile = KubernetesPeer(
            RECONCILE, pod_labels=kube.selector(RECONCILE, args.context.stack)
        )
        args.postgres.grant_connect(reconcile)
        if args.archive is not None:
            args.archive.grant_read(reconcile)
            # Remote logging: every Airflow pod writes task logs to the archive.
            args.archive.grant_write(airflow)
