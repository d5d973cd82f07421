"""Airflow on Kubernetes: the official Apache Airflow chart on the platform's Postgres."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import kube
from components.airflow import (
    DAGS_IGNORE_PATH,
    RECONCILE,
    REGULATION,
    AirflowEndpoint,
    dag_files,
)
from components.airflow.chart import (
    AIRFLOW_PODS,
    AIRFLOW_UID,
    API_PORT,
    DAGS_CONFIG_MAP,
    DAGS_IGNORE,
    DAGS_IGNORE_FILE,
    METADATA_DIR,
    REDIS_PORT,
    RELEASE,
    SECRET_NAMES,
    SMALL_RESOURCES,
    chart_values,
    check_values,
    image_repository,
)
from components.airflow.pods import (
    REPLAY_TARGETS_FILE,
    operation_pods,
    replay_pods,
    replay_targets_document,
)
from components.airflow.settings import KubernetesAirflowSettings
from components.archive import KubernetesArchiveContract
from components.charts import ChartPin, ChartSource, load_chart_pin
from components.consumers.kubernetes import allow_internet_egress, allow_private_egress
from components.consumers.settings import Destination
from components.network import Grant, KubernetesPeer
from components.postgres import ClientDatabase, KubernetesPostgresContract, PostgresConnection
from components.stream import KubernetesStreamContract


@dataclass(frozen=True)
class KubernetesAirflowArgs(kube.CapabilityArgs):
    settings: KubernetesAirflowSettings
    postgres: KubernetesPostgresContract
    warehouse: ClientDatabase | None
    """The warehouse database the reconciliation DAG repairs; None without a warehouse."""
    chart_source: ChartSource | None = None
    archive: KubernetesArchiveContract | None = None
    warehouse_columns: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None
    """The declared column types the reconcile and rebuild pods write typed tables with."""
    stream: KubernetesStreamContract | None = None
    """The stream whose servers keep the suppression list and the dead letters (the
    regulation pod's); None: no regulation pod."""
    suppression_key_secret: str | None = None
    """The collector's Secret holding the suppression list's key (the regulation pod's)."""
    destinations: tuple[Destination, ...] = ()
    """The stack's destinations: a replay pod for each (`pods.REPLAY_TARGETS_FILE`)."""


def fernet_key(raw_base64: str) -> str:
    """Airflow's Fernet key: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(base64.b64decode(raw_base64)).decode()


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
        self.values = chart_values(args, pin)
        check_values(self.values)
        # The chart's pods (and the task pods they launch) start once their access exists.
        depends = [
            self.metadata_database.ready,
            network.default_deny,
            *self.secrets,
            *self._grant_access(),
        ]
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

    def _secrets(
        self, name: str, connection: PostgresConnection, labels: Mapping[str, str]
    ) -> list[k8s.core.v1.Secret]:
        """Every Secret the chart reads (names in SECRET_NAMES), its values as secrets."""
        values = {**self._generated_secrets(name, connection), **self._git_credentials()}
        return [
            k8s.core.v1.Secret(
                f"{name}-{role}-secret",
                metadata=self._args.network.metadata(SECRET_NAMES[role], labels),
                type="Opaque",
                string_data={k: pulumi.Output.secret(v) for k, v in data.items()},
                opts=pulumi.ResourceOptions(parent=self),
            )
            for role, data in values.items()
        ]

    def _generated_secrets(
        self, name: str, connection: PostgresConnection
    ) -> dict[str, dict[str, pulumi.Input[str]]]:
        """The metadata connection, and the keys and passwords generated once with
        pulumi-random and kept in state (the chart's own would change on every render, with
        no Helm hooks under Pulumi, while a running Redis keeps the first one)."""
        opts = pulumi.ResourceOptions(parent=self)

        def random_key(role: str, length: int = 48) -> pulumi.Output[str]:
            return random.RandomPassword(
                f"{name}-{role}-key", length=length, special=False, opts=opts
            ).result

        fernet = random.RandomBytes(f"{name}-fernet-bytes", length=32, opts=opts)
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
        if self._args.settings.executor == "CeleryExecutor":
            redis_password = random_key("redis", 32)
            values["redis"] = {"password": redis_password}
            values["broker"] = {
                "connection": pulumi.Output.format(
                    "redis://:{0}@{1}-redis:{2}/0", redis_password, RELEASE, REDIS_PORT
                )
            }
        return values

    def _git_credentials(self) -> dict[str, dict[str, pulumi.Input[str]]]:
        """git-sync's HTTPS token or SSH key, when DAGs come from git with one."""
        dags = self._args.settings.dags
        values: dict[str, dict[str, pulumi.Input[str]]] = {}
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
        return values

    def _dags_config_map(
        self, name: str, labels: Mapping[str, str]
    ) -> k8s.core.v1.ConfigMap | None:
        # Always: with DAGs from git or an image, the platform's DAGs still come from here.
        files = dag_files()
        return k8s.core.v1.ConfigMap(
            f"{name}-dags",
            metadata=self._args.network.metadata(DAGS_CONFIG_MAP, labels),
            data={
                **{path.name: path.read_text() for path in files},
                REPLAY_TARGETS_FILE: replay_targets_document(self._args),
                # The kubelet's entries, then what `dags/` itself skips (the shared module).
                DAGS_IGNORE_FILE: DAGS_IGNORE + DAGS_IGNORE_PATH.read_text(),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    # --- admin user and network --------------------------------------------------------------

    def _admin_user_job(self, name: str, labels: Mapping[str, str], pin: ChartPin) -> None:
        """Create the UI admin (idempotent), reading the password from a mounted Secret."""
        args = self._args
        component = "airflow-admin-user"
        job_labels = {
            **kube.labels(component, args.context.stack, args.context.tags),
            **AIRFLOW_PODS,
        }
        repository = image_repository(pin, "airflow", args.context.image_registry)
        container = _admin_user_container(f"{repository}:{args.settings.version}")
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
                            kube.secret_volume("admin", SECRET_NAMES["admin"]),
                            kube.secret_volume("metadata", SECRET_NAMES["metadata"]),
                            {"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}},
                        ],
                    },
                },
            },
            # After the chart: its migration job creates the tables the user is written to.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart]),
        )

    def _grant_access(self) -> list[pulumi.Resource]:
        """Airflow's pods reach Postgres (metadata) and write task logs to the archive; the
        DAGs' pods (services image) reach what their work needs: the reconcile and rebuild
        pods Postgres and the archive (read), the regulation pod Postgres, the archive
        (rewritten) and the stream's servers (the suppression list, the dead letters)."""
        args = self._args
        airflow = KubernetesPeer("airflow", pod_labels=AIRFLOW_PODS)
        reconcile = self._dag_pods(RECONCILE)
        grants = [args.postgres.grant_connect(airflow), args.postgres.grant_connect(reconcile)]
        if args.archive is not None:
            grants += [args.archive.grant_read(reconcile), args.archive.grant_write(airflow)]
        if "regulation" in operation_pods(args):
            assert args.stream is not None
            regulation = self._dag_pods(REGULATION)
            grants += [args.postgres.grant_connect(regulation), args.stream.grant_write(regulation)]
            if args.archive is not None:
                grants.append(args.archive.grant_write(regulation))
        grants += self._grant_replays()
        return [resource for grant in grants for resource in grant.resources]

    def _grant_replays(self) -> list[Grant]:
        """Each replay pod: the archive (read, and its progress object written), the stream's
        servers (the suppression list) when the stack has one, and its target: Postgres, or
        HTTPS out and the private ranges its destination lists."""
        args = self._args
        destinations = {f"destination:{d.name}": d for d in args.destinations}
        grants = []
        for target, (component, _) in replay_pods(args).items():
            peer = self._dag_pods(component)
            assert args.archive is not None
            grants.append(args.archive.grant_write(peer))
            if args.stream is not None and args.suppression_key_secret:
                grants.append(args.stream.grant_read(peer))
            destination = destinations.get(target)
            if destination is None:
                grants.append(args.postgres.grant_connect(peer))
                continue
            labels = kube.labels(component, args.context.stack, args.context.tags)
            name = f"{self._name}-{component}"
            network = args.network
            grants.append(allow_internet_egress(f"{name}-internet", network, peer, labels, self))
            if destination.private_networks:
                networks = destination.private_networks
                grants.append(
                    allow_private_egress(f"{name}-private", network, peer, networks, labels, self)
                )
        return grants

    def _dag_pods(self, component: str) -> KubernetesPeer:
        """The DAG pods of `component` (`RECONCILE`, `REGULATION`), as policies select them."""
        return KubernetesPeer(
            component, pod_labels=kube.selector(component, self._args.context.stack)
        )

    def _network_policies(self, name: str, labels: Mapping[str, str]) -> None:
        """Airflow's pods among themselves, to the Kubernetes API and git, and the UI."""
        args = self._args
        network = args.network
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


def _admin_user_container(image: str) -> dict[str, Any]:
    """Creates the UI admin unless it exists (idempotent), with the password from its
    mounted Secret and the metadata connection from the chart's."""
    script = (
        "if airflow users list --output plain | awk '{print $2}' | grep -qx \"$ADMIN_USER\"; "
        "then echo admin exists; else "
        'airflow users create --role Admin --username "$ADMIN_USER" '
        '--password "$(cat /etc/airflow-admin/password)" --firstname Admin --lastname User '
        '--email "$ADMIN_USER@localhost"; fi'
    )
    return {
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
