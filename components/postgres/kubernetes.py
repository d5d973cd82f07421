"""Postgres on Kubernetes: a StatefulSet of the official image on retained volumes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import kube
from components.archive import Archive
from components.deployed import check_storage_size, deployed_storage_gb, own_stack
from components.network import Grant, KubernetesPeer
from components.postgres import (
    CLIENT_LABEL,
    PORT,
    ClientDatabase,
    PostgresConnection,
    check_client_name,
)
from components.postgres.major_version import check_major_version, deployed_major_version
from components.postgres.pods import (
    IMAGE_REPOSITORY,
    SERVICE_NAME,
    backup_pod_spec,
    ensure_database_container,
    stateful_set_spec,
)
from components.postgres.settings import KubernetesPostgresSettings

# The input path of the data claim template's labels (see _declare_server).
CLAIM_TEMPLATE_LABELS = "spec.volumeClaimTemplates[0].metadata.labels"


@dataclass(frozen=True)
class KubernetesPostgresArgs(kube.CapabilityArgs):
    settings: KubernetesPostgresSettings


class KubernetesPostgres(pulumi.ComponentResource):
    """One Postgres server as a StatefulSet with a PVC per pod, retained on delete and scale-down.

    `postgres.<namespace>.svc.<domain>` is the discovery name (a ClusterIP Service); a headless
    Service gives the pod its stable identity. Only pods granted access (or carrying the client
    label) may connect. The admin password is generated and kept in a Secret.
    """

    def __init__(
        self,
        name: str,
        args: KubernetesPostgresArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("liftoff:postgres:KubernetesPostgres", name, None, opts)
        settings = args.settings
        network = args.network
        self._name = name
        self._network = network
        self.host = network.service_host(SERVICE_NAME)
        """The Service's cluster DNS name, as a plain string."""
        self.port = PORT
        self._args = args
        self.labels = kube.labels("postgres", args.context.stack, args.context.tags)
        self.selector = kube.selector("postgres", args.context.stack)
        child = pulumi.ResourceOptions(parent=self, depends_on=[network.default_deny])

        password = random.RandomPassword(
            f"{name}-password", length=40, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        self.secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=network.metadata("postgres-credentials", self.labels),
            type="Opaque",
            string_data={
                "username": settings.username,
                "password": password.result,
                "database": settings.database,
            },
            opts=child,
        )
        self._declare_services(name, child)
        self._declare_server(name, args, child)
        self._declare_access(name, child)

        dns_name = network.dns_name(SERVICE_NAME)
        self.connection = PostgresConnection(
            host=dns_name,
            port=pulumi.Output.from_input(PORT),
            database=pulumi.Output.from_input(settings.database),
            dns_name=dns_name,
            username=pulumi.Output.from_input(settings.username),
            password=pulumi.Output.secret(password.result),
        )
        self.register_outputs({"dnsName": dns_name, "secretName": self.secret.metadata.name})

    def _declare_services(self, name: str, child: pulumi.ResourceOptions) -> None:
        """The headless Service (the pod's identity) and the ClusterIP Service (discovery)."""
        network = self._network
        self.headless_service = k8s.core.v1.Service(
            f"{name}-headless",
            metadata=network.metadata(f"{SERVICE_NAME}-headless", self.labels),
            spec={
                "clusterIP": "None",
                "selector": self.selector,
                # Lets the pod's DNS record exist before it is ready, as initdb needs none.
                "publishNotReadyAddresses": True,
                "ports": [{"name": "postgres", "port": PORT, "targetPort": "postgres"}],
            },
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=network.metadata(SERVICE_NAME, self.labels),
            spec={
                "type": "ClusterIP",
                "selector": self.selector,
                "ports": [{"name": "postgres", "port": PORT, "targetPort": "postgres"}],
            },
            opts=child,
        )

    def _declare_server(
        self, name: str, args: KubernetesPostgresArgs, child: pulumi.ResourceOptions
    ) -> None:
        settings = args.settings
        network = self._network
        # A new major cannot start on the old data directory, a new size cannot reach the
        # volume: refuse either change before the StatefulSet is touched (the image is only
        # known once the checks have passed).
        image = kube.image(f"{IMAGE_REPOSITORY}:{settings.image_tag}", args.context.image_registry)

        def checked(deployed: list[Any]) -> str:
            major, storage_gb = deployed
            check_major_version(
                major,
                settings.version,
                upgrade_in_place=False,
                migrated_from=settings.major_upgrade_from,
            )
            check_storage_size(
                "postgres", storage_gb, settings.storage_gb, settings.storage_resized_from
            )
            return image

        reference = own_stack(name, self)
        checked_image = pulumi.Output.all(
            deployed_major_version(reference), deployed_storage_gb(reference, "postgres")
        ).apply(checked)
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=network.metadata(SERVICE_NAME, self.labels),
            spec=stateful_set_spec(
                args.context, settings, self.labels, self.selector, checked_image
            ),
            # The claim template carries the stack's tags as labels, and any template change
            # replaces the StatefulSet; the existing claim keeps its labels either way (a
            # template only shapes new claims), so a tags change leaves the template alone.
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(ignore_changes=[CLAIM_TEMPLATE_LABELS])
            ),
        )

    def _declare_access(self, name: str, child: pulumi.ResourceOptions) -> None:
        """Its disruption budget, and the clients (labelled pods) it admits."""
        network = self._network
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=network.metadata(SERVICE_NAME, self.labels),
            # One server: `minAvailable: 1` would block every node drain forever. Allowing the
            # one eviction lets drains and upgrades proceed; the StatefulSet recreates the pod
            # on its retained volume (a short outage, which a single server has anyway).
            spec={"maxUnavailable": 1, "selector": {"matchLabels": self.selector}},
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-clients",
            metadata=network.metadata("postgres-clients", self.labels),
            spec={
                "podSelector": {"matchLabels": self.selector},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": dict(CLIENT_LABEL)}}],
                        "ports": [{"protocol": "TCP", "port": PORT}],
                    }
                ],
            },
            opts=child,
        )

    def grant_connect(self, peer: KubernetesPeer) -> Grant:
        """Admit `peer`'s pods to Postgres.

        Declares a NetworkPolicy pair (egress from the peer, ingress to Postgres) scoped to
        exactly the peer's pods. (Pods outside the platform may instead carry CLIENT_LABEL.)
        """
        if not peer.pod_labels:
            raise ValueError(
                f"grant_connect({peer.name!r}) on Kubernetes needs the peer's pod labels"
            )
        policies = self._network.allow(
            f"{self._name}-from-{peer.name}",
            source=peer.pod_labels,
            destination=self.selector,
            port=PORT,
            labels=self.labels,
            parent=self,
        )
        return Grant(peer.name, policies)

    def add_database(
        self, client: str, database: str | None = None, *, member_of: tuple[str, ...] = ()
    ) -> ClientDatabase:
        """Give `client` a login role and a database it owns (`database`, default: `client`),
        and membership of the predefined roles `member_of` (such as `pg_monitor`).

        Its credentials go into the Secret `postgres-<client>`; a Job running
        `python -m services ensure-database` with the admin credentials creates (or updates)
        the role and database. The Job is renamed when its inputs change (Jobs are immutable).
        """
        database = database or client
        check_client_name(client, database)
        if not self._args.context.services_image:
            raise ValueError("add_database needs KubernetesPostgresArgs.services_image")
        password = random.RandomPassword(
            f"{self._name}-{client}-password",
            length=40,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        secret_name = f"postgres-{client.replace('_', '-')}"
        secret = k8s.core.v1.Secret(
            f"{self._name}-{client}-credentials",
            metadata=self._network.metadata(secret_name, self.labels),
            type="Opaque",
            string_data={
                "username": client,
                "password": password.result,
                "database": database,
                "host": self.host,
                "port": str(PORT),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        job = self._setup_job(client, database, member_of, secret_name, secret)
        connection = PostgresConnection(
            host=pulumi.Output.from_input(self.host),
            port=pulumi.Output.from_input(PORT),
            database=pulumi.Output.from_input(database),
            dns_name=pulumi.Output.from_input(self.host),
            username=pulumi.Output.from_input(client),
            password=pulumi.Output.secret(password.result),
        )
        return ClientDatabase(
            connection=connection, ready=job, role=client, secret_name=secret_name
        )

    def _setup_job(
        self,
        client: str,
        database: str,
        member_of: tuple[str, ...],
        secret_name: str,
        secret: k8s.core.v1.Secret,
    ) -> k8s.batch.v1.Job:
        """The Job creating `client`'s role and database with the admin credentials, admitted
        to Postgres; named after its inputs (a change is a new Job: Jobs are immutable)."""
        context, settings = self._args.context, self._args.settings
        component = f"postgres-setup-{client.replace('_', '-')}"
        selector = kube.selector(component, context.stack)
        connect = self.grant_connect(KubernetesPeer(component, pod_labels=selector))
        job_labels = kube.labels(component, context.stack, context.tags)
        digest = _setup_digest(
            database, client, context.services_image, settings.version, member_of
        )
        container = ensure_database_container(
            context, settings, self.host, client, database, member_of
        )
        volumes = [
            kube.secret_volume("admin", "postgres-credentials"),
            kube.secret_volume("client", secret_name),
        ]
        return k8s.batch.v1.Job(
            f"{self._name}-{client}-setup",
            metadata=self._network.metadata(f"{component}-{digest}", job_labels),
            spec=kube.setup_job_spec(job_labels, container, volumes=volumes),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.stateful_set, self.secret, secret, *connect.resources],
            ),
        )

    def add_backups(self, archive: Archive[KubernetesPeer]) -> None:
        """Nightly `pg_dump` of every database into the archive, pruned past the retention.

        A CronJob: an init container of the server's own image dumps each database (custom
        format) into a scratch volume with the admin password read from its mounted Secret;
        the services image then uploads the dumps (`backup-upload`) with the archive's
        credentials file and deletes dumps older than `backupRetentionDays`.
        """
        args = self._args
        if not args.context.services_image:
            raise ValueError("add_backups needs KubernetesPostgresArgs.services_image")
        settings = args.settings
        network = self._network
        component = "postgres-backup"
        selector = kube.selector(component, args.context.stack)
        labels = kube.labels(component, args.context.stack, args.context.tags)
        peer = KubernetesPeer(component, pod_labels=selector)
        connect = self.grant_connect(peer)
        client = archive.client(peer, write=True)
        host = self.host
        pod = backup_pod_spec(args.context, settings, host, client)
        k8s.batch.v1.CronJob(
            f"{self._name}-backup",
            metadata=network.metadata(component, labels),
            spec={
                "schedule": settings.backup_schedule,
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 3600,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "backoffLimit": 3,
                        "activeDeadlineSeconds": 3 * 3600,
                        "template": {"metadata": {"labels": labels}, "spec": pod},
                    },
                },
            },
            # A run starts once it may reach the server and the archive.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.stateful_set, *connect.resources, *client.ready]
            ),
        )


def _setup_digest(
    database: str, client: str, services_image: str, version: str, member_of: tuple[str, ...]
) -> str:
    """What names a setup Job: it is renamed (re-run) when any of these change.

    The server's major version is part of it: after a major upgrade (a new, empty data
    directory) the roles and databases are created again. Only a non-empty member_of joins
    it, so existing clients keep their Job names.
    """
    inputs: list[Any] = [database, client, services_image, version]
    if member_of:
        inputs.append(list(member_of))
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:8]
