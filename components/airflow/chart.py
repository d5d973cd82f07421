"""The values liftoff gives the official Airflow chart (pinned in `charts/airflow.yaml`), and the
names they share with the rest of the Kubernetes realization."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from components import kube
from components.airflow.pods import operation_pods
from components.airflow.settings import KubernetesAirflowSettings
from components.archive import ArchiveClient
from components.archive.settings import KubernetesArchiveSettings
from components.charts import ChartPin, deep_merge
from services.archive.contract import ArchiveAccess
from services.contract import environment

if TYPE_CHECKING:
    from components.airflow.kubernetes import KubernetesAirflowArgs

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
# A ConfigMap volume holds `..data -> ..<timestamp>/` and a symlink per key through `..data`;
# Airflow walks DAG bundles following symlinks and stops at the second sight of a directory
# ("Detected recursive loop"), so the bundle's ignore file skips the kubelet's `..` entries
# and the DAGs are read through their own symlinks. Glob syntax: DAG_IGNORE_FILE_SYNTAX.
DAGS_IGNORE_FILE = ".airflowignore"
DAGS_IGNORE = "# The kubelet's ConfigMap volume internals (..data, ..<timestamp>)\n..*\n"
DAG_IGNORE_FILE_SYNTAX = "glob"
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
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


def image_repository(pin: ChartPin, name: str, registry: str | None) -> str:
    """The repository of a chart image (no tag), through the registry override."""
    return kube.ImageReference.parse(pin.images[name]).repository(registry)


def _image_values(pin: ChartPin, name: str, registry: str | None) -> dict[str, str]:
    """`{repository, tag}` for one of the chart's auxiliary images, pinned in charts/."""
    return {
        "repository": image_repository(pin, name, registry),
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


def chart_values(args: KubernetesAirflowArgs, pin: ChartPin) -> dict[str, Any]:
    settings = args.settings
    values: dict[str, Any] = {
        **_identity_values(args, pin),
        **_component_values(args),
        "dags": _dag_values(args),
        "config": {
            "core": {
                "auth_manager": FAB_AUTH_MANAGER,
                # Airflow 3's default, pinned: DAGS_IGNORE is written in it.
                "dag_ignore_file_syntax": DAG_IGNORE_FILE_SYNTAX,
            },
            "liftoff": _liftoff_config(args),
        },
    }
    if settings.executor == "CeleryExecutor":
        values["redis"]["passwordSecretName"] = SECRET_NAMES["redis"]
        values["data"]["brokerUrlSecretName"] = SECRET_NAMES["broker"]
    _add_mounts(args, values)
    if settings.host:
        values["ingress"] = {"apiServer": _ingress_values(settings)}
    return deep_merge(pin.values, values)


def _identity_values(args: KubernetesAirflowArgs, pin: ChartPin) -> dict[str, Any]:
    """Images (through the registry override), labels, Secret names and restricted contexts."""
    settings = args.settings
    registry = args.context.image_registry
    return {
        "airflowVersion": settings.version,
        "defaultAirflowRepository": image_repository(pin, "airflow", registry),
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
    }


def _component_values(args: KubernetesAirflowArgs) -> dict[str, Any]:
    """Each Airflow component's replicas, resources and volumes."""
    settings = args.settings
    high_availability = settings.high_availability
    return {
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
            "persistence": _volume(args, 8),
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
        "triggerer": {"resources": COMPONENT_RESOURCES, "persistence": _volume(args, 5)},
        "workers": {
            "replicas": settings.workers,
            "resources": COMPONENT_RESOURCES,
            "persistence": _volume(args, 10),
        },
        "migrateDatabaseJob": {"resources": SMALL_RESOURCES},
        "logs": {"persistence": _logs_volume(args)},
    }


def _add_mounts(args: KubernetesAirflowArgs, values: dict[str, Any]) -> None:
    """The DAG ConfigMap, the DAG image and the archive's credentials, on every Airflow pod."""
    settings = args.settings
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, str]] = []
    dags_volume = {"name": "liftoff-dags", "configMap": {"name": DAGS_CONFIG_MAP}}
    if settings.dags.kind == "repository":
        volumes.append(dags_volume)
        mounts.append({"name": "liftoff-dags", "mountPath": "/opt/airflow/dags", "readOnly": True})
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
        env.extend(_archive_connection_env(args.archive.settings, archive))
        values["config"]["logging"] = {
            "remote_logging": "True",
            "remote_base_log_folder": f"s3://{args.archive.settings.bucket_name}/airflow-logs",
            "remote_log_conn_id": ARCHIVE_CONNECTION_ID,
        }
    values["volumes"] = volumes
    values["volumeMounts"] = mounts
    if env:
        values["env"] = env


def _ingress_values(settings: KubernetesAirflowSettings) -> dict[str, Any]:
    tls: dict[str, Any] = {"enabled": bool(settings.tls_secret)}
    if settings.tls_secret:
        tls["secretName"] = settings.tls_secret
    ingress: dict[str, Any] = {
        "enabled": True,
        "hosts": [{"name": settings.host, "tls": tls}],
    }
    if settings.ingress_class:
        ingress["ingressClassName"] = settings.ingress_class
    return ingress


def _archive_connection_env(
    archive: KubernetesArchiveSettings, client: ArchiveClient
) -> list[dict[str, Any]]:
    """The remote-logging connection (no secret in it) and where boto3 finds the keys."""
    connection = {
        "conn_type": "aws",
        "extra": {"endpoint_url": archive.endpoint or "", "region_name": archive.region},
    }
    credentials = ArchiveAccess(credentials_file=client.access.credentials_file)
    return [
        {
            "name": f"AIRFLOW_CONN_{ARCHIVE_CONNECTION_ID.upper()}",
            "value": json.dumps(connection, sort_keys=True),
        },
        *kube.env(environment(credentials)),
    ]


def _volume(args: KubernetesAirflowArgs, size_gb: int) -> dict[str, Any]:
    volume: dict[str, Any] = {"enabled": True, "size": f"{size_gb}Gi"}
    if args.context.storage_class:
        volume["storageClassName"] = args.context.storage_class
    return volume


def _logs_volume(args: KubernetesAirflowArgs) -> dict[str, Any]:
    """The chart's shared log claim is ReadWriteMany: only with a class that offers it."""
    settings = args.settings
    if not settings.logs_storage_class:
        return {"enabled": False}
    return {
        "enabled": True,
        "size": f"{settings.logs_storage_gb}Gi",
        "storageClassName": settings.logs_storage_class,
    }


def _dag_values(args: KubernetesAirflowArgs) -> dict[str, Any]:
    dags = args.settings.dags
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


def config_json(value: Any, *, sort_keys: bool = False) -> str:
    """``value`` as JSON for a chart `config` value. The chart passes each one through Helm's
    `tpl` into `airflow.cfg`, where ConfigParser interpolates `%` and Airflow expands `$VAR`;
    in JSON those characters (and `{{`) can only stand inside strings, so they are written as
    `\\u` escapes, which the DAG's `json.loads` reads back as they were (a destination URL
    with `%20`, a filter on `$price`)."""
    text = json.dumps(value, sort_keys=sort_keys)
    return text.replace("%", "\\u0025").replace("$", "\\u0024").replace("{{", "{\\u007b")


def _liftoff_config(args: KubernetesAirflowArgs) -> dict[str, str]:
    """The `[liftoff]` section liftoff's DAGs read (no secrets: names only): where their pods
    run and, for each pod the stack can run (`components/airflow/pods.py`), its whole
    environment (built by the process's contract) and the Secrets it mounts, passed through by
    the DAG."""
    config = {
        "target": "kubernetes",
        "stack": args.context.stack,
        "namespace": args.network.namespace_name,
        "services_image": kube.image(args.context.services_image, args.context.image_registry),
    }
    for key, (variables, secrets) in sorted(operation_pods(args).items()):
        config[f"{key}_environment"] = config_json(variables, sort_keys=True)
        config[f"{key}_secrets"] = config_json(secrets)
    return dict(sorted(config.items()))
