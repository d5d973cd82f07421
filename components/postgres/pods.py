"""The pod specs of Postgres on Kubernetes: the server, its setup Jobs and its backups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from components import kube
from components.archive import ArchiveClient
from components.postgres import PORT
from components.postgres.major_version import UPGRADE_PROCEDURE
from components.postgres.settings import KubernetesPostgresSettings
from services.postgres import contract as postgres

# The official image's `postgres` user.
POSTGRES_UID = 999
IMAGE_REPOSITORY = "docker.io/library/postgres"
SERVICE_NAME = "postgres"
DATA_MOUNT = "/var/lib/postgresql/data"
CREDENTIALS_DIR = "/etc/liftoff/postgres"
CLIENT_CREDENTIALS_DIR = "/etc/liftoff/postgres-client"


def stateful_set_spec(
    context: kube.StackContext,
    settings: KubernetesPostgresSettings,
    labels: Mapping[str, str],
    selector: Mapping[str, str],
    image: pulumi.Input[str],
) -> dict[str, Any]:
    """One server on a retained volume, its credentials mounted, read-only root."""
    volume_claim = {
        "metadata": {"name": "data", "labels": labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{settings.storage_gb}Gi"}},
        },
    }
    if context.storage_class:
        volume_claim["spec"]["storageClassName"] = context.storage_class
    return {
        "serviceName": f"{SERVICE_NAME}-headless",
        "replicas": 1,
        "selector": {"matchLabels": selector},
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate"},
        # The data outlives the StatefulSet: PVCs stay on delete and on scale-down.
        "persistentVolumeClaimRetentionPolicy": {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        },
        "volumeClaimTemplates": [volume_claim],
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": kube.pod_security_context(POSTGRES_UID),
                "terminationGracePeriodSeconds": 60,
                "initContainers": [_version_guard(settings.version, image)],
                "containers": [_server_container(settings, image)],
                "volumes": [
                    {
                        "name": "credentials",
                        "secret": {"secretName": "postgres-credentials", "defaultMode": 0o440},
                    },
                    {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                ],
            },
        },
    }


def _server_container(
    settings: KubernetesPostgresSettings, image: pulumi.Input[str]
) -> dict[str, Any]:
    # Readiness of the server itself; pg_isready needs no credentials.
    probe_command = ["pg_isready", "-h", "127.0.0.1", "-p", str(PORT), "-q"]
    return {
        "name": "postgres",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "postgres", "containerPort": PORT}],
        "env": kube.env(
            postgres.SERVER.environment(
                postgres.PostgresServerSettings(
                    user=settings.username,
                    database=settings.database,
                    # The image reads the password from the mounted Secret.
                    password_file=f"{CREDENTIALS_DIR}/password",
                    # A subdirectory: the volume root may hold lost+found.
                    data=f"{DATA_MOUNT}/pgdata",
                )
            )
        ),
        "resources": settings.resources.to_kubernetes(),
        "securityContext": kube.container_security_context(),
        "startupProbe": {
            "exec": {"command": probe_command},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "exec": {"command": probe_command},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "exec": {"command": probe_command},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            # The root filesystem is read-only; the socket and temp files
            # need writable scratch space.
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
            {
                "name": "credentials",
                "mountPath": CREDENTIALS_DIR,
                "readOnly": True,
            },
        ],
    }


def _version_guard(major: str, image: pulumi.Input[str]) -> dict[str, Any]:
    """An init container that refuses to start the server on a data directory of another
    major version (the backstop to the deploy-time check, e.g. for a lost stack state)."""
    script = (
        f'v="$(cat {DATA_MOUNT}/pgdata/PG_VERSION 2>/dev/null || true)"\n'
        f'if [ -n "$v" ] && [ "$v" != "{major}" ]; then\n'
        f'  echo "The data directory holds PostgreSQL $v; this image is {major}. '
        f'A major upgrade is a data migration: see {UPGRADE_PROCEDURE}." >&2\n'
        "  exit 1\n"
        "fi\n"
    )
    return {
        "name": "check-data-version",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
        "securityContext": kube.container_security_context(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT, "readOnly": True}],
    }


def ensure_database_container(
    context: kube.StackContext,
    settings: KubernetesPostgresSettings,
    host: str,
    client: str,
    database: str,
    member_of: tuple[str, ...],
) -> dict[str, Any]:
    """`ensure-database` with the admin credentials and the client's password mounted."""
    env = kube.env(
        postgres.ENSURE_DATABASE.environment(
            postgres.EnsureDatabaseSettings(
                admin=postgres.PostgresAccess(
                    host=host,
                    port=str(PORT),
                    database=postgres.DEFAULT_ADMIN_DATABASE,
                    user=settings.username,
                    password_file=f"{CREDENTIALS_DIR}/password",
                ),
                database=database,
                role=client,
                password_file=f"{CLIENT_CREDENTIALS_DIR}/password",
                member_of=member_of or None,
            )
        )
    )
    return {
        "name": "ensure-database",
        "image": kube.image(context.services_image, context.image_registry),
        "imagePullPolicy": "IfNotPresent",
        "args": ["ensure-database"],
        "env": env,
        "volumeMounts": [
            {"name": "admin", "mountPath": CREDENTIALS_DIR, "readOnly": True},
            {"name": "client", "mountPath": CLIENT_CREDENTIALS_DIR, "readOnly": True},
        ],
    }


# Every database but the maintenance one, in the custom format. The password reaches pg_dump
# through the shell, never through the pod's spec.
BACKUP_DUMP_SCRIPT = (
    "set -eu\n"
    f'PGPASSWORD="$(cat {CREDENTIALS_DIR}/password)"\n'
    "export PGPASSWORD\n"
    'for db in $(psql -d postgres -Atc "SELECT datname FROM pg_database '
    "WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname\"); do\n"
    '  pg_dump --format=custom --dbname="$db" --file="/backup/$db.dump"\n'
    "done\n"
)
BACKUP_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


def backup_pod_spec(
    context: kube.StackContext,
    settings: KubernetesPostgresSettings,
    host: str,
    client: ArchiveClient,
) -> dict[str, Any]:
    """`pg_dump` of every database (an init container of the server's image) into scratch
    space, then `backup-upload` of the dumps to the archive."""
    dumper = {
        "name": "pg-dump",
        "image": kube.image(f"{IMAGE_REPOSITORY}:{settings.image_tag}", context.image_registry),
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", BACKUP_DUMP_SCRIPT],
        "env": kube.env(
            postgres.PG_DUMP.environment(
                postgres.PostgresAccess(host=host, port=str(PORT), user=settings.username)
            )
        ),
        "resources": BACKUP_RESOURCES,
        "securityContext": kube.container_security_context(),
        "volumeMounts": [
            {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
            {"name": "backup", "mountPath": "/backup"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    uploader = _uploader(context, settings, client, BACKUP_RESOURCES)
    pod = kube.services_pod_spec(
        [uploader],
        volumes=[
            {
                "name": "credentials",
                "secret": {"secretName": "postgres-credentials", "defaultMode": 0o440},
            },
            client.volume("archive"),
            {"name": "backup", "emptyDir": {"sizeLimit": f"{settings.storage_gb}Gi"}},
        ],
        restart_policy="OnFailure",
    )
    pod["initContainers"] = [dumper]
    return pod


def _uploader(
    context: kube.StackContext,
    settings: KubernetesPostgresSettings,
    client: ArchiveClient,
    small: dict[str, Any],
) -> dict[str, Any]:
    """`backup-upload` of the dumps, with the archive's credentials mounted."""
    return {
        "name": "upload",
        "image": kube.image(context.services_image, context.image_registry),
        "imagePullPolicy": "IfNotPresent",
        "args": ["backup-upload", "--dir", "/backup"],
        "env": kube.env(
            postgres.BACKUP_UPLOAD.environment(
                postgres.BackupSettings(
                    archive=client.access, retention_days=settings.backup_retention_days
                )
            )
        ),
        "resources": small,
        "volumeMounts": [
            {"name": "backup", "mountPath": "/backup", "readOnly": True},
            client.mount("archive"),
        ],
    }
