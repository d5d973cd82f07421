"""Typed stack configuration for liftoff, validated before any resource is declared.

Every `liftoff:*` key is read here and nowhere else. `load_config` is a plain function over
the raw key/value strings Pulumi passes to the program, so it is tested without a runtime;
`read_stack_config` feeds it from the running Pulumi program. All problems are collected and
raised together as one `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from components.observability import ObservabilitySettings, read_observability
from components.validation import (
    ConfigError,
    ConfigReader,
    Problem,
    parse_bool,
    read_string_map,
)

Target = Literal["aws", "kubernetes"]
TARGETS: tuple[str, ...] = ("aws", "kubernetes")

# Postgres major versions offered on both targets, with the exact image tag the Kubernetes
# target runs (pinned, so a redeploy never silently changes the server binary). RDS takes the
# major version and applies minor upgrades itself.
POSTGRES_IMAGE_TAGS: dict[str, str] = {"15": "15.15", "16": "16.11", "17": "17.7"}
DEFAULT_POSTGRES_VERSION = "17"

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_DESCRIBE = "a DNS label: lowercase letters, digits and '-', at most 63 characters"
_CPU = r"\d+(\.\d+)?m?"
_MEMORY = r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?"
_K8S_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_K8S_LABEL_KEY = rf"({DNS_LABEL}(\.{DNS_LABEL})*/)?{_K8S_LABEL_NAME}"
_K8S_LABEL_VALUE = rf"({_K8S_LABEL_NAME})?"


@dataclass(frozen=True)
class KubernetesSettings:
    """`liftoff:kubernetes` — where and how the Kubernetes target deploys."""

    namespace: str
    """Default: `liftoff-<stack>`."""
    create_namespace: bool = True
    """Default: true. Set false when a cluster admin pre-creates the namespace."""
    storage_class: str | None = None
    """Default: the cluster's default StorageClass."""
    image_registry: str | None = None
    """Default: none (images from their public registries). A mirror prefix such as
    `registry.corp.example/mirror`, applied to every image the platform runs."""
    kubeconfig: str | None = None
    """Default: the ambient kubeconfig (KUBECONFIG or ~/.kube/config). A path or the content."""
    context: str | None = None
    """Default: the kubeconfig's current context."""
    cluster_domain: str = "cluster.local"
    """Default: `cluster.local`. Used to build fully qualified Service DNS names."""
    dns_namespace: str = "kube-system"
    """Default: `kube-system`. Namespace of the cluster DNS pods every pod may reach on port 53."""
    dns_pod_labels: dict[str, str] = field(default_factory=dict)
    """`dns.podLabels`. Default: none (every pod of `dnsNamespace`). Narrows the DNS peers to
    the DNS pods, e.g. `{k8s-app: kube-dns}`."""
    dns_cidrs: tuple[str, ...] = ()
    """`dns.cidrs`. Default: none. Address ranges of DNS servers outside any pod, e.g.
    NodeLocal DNSCache's `169.254.20.10/32`."""
    dns_ports: tuple[int, ...] = (53,)
    """`dns.ports`. Default: [53]. UDP and TCP; OpenShift's DNS pods listen on 5353."""
    services_image: str = "ghcr.io/liftoff-data/liftoff-services:0.1.0"
    """Default: the released liftoff services image. Build `services/Dockerfile` and push it
    to your registry to run your own; the registry override applies to it as well."""


@dataclass(frozen=True)
class AwsSettings:
    """`liftoff:aws` — the AWS network. Region comes from `aws:region`."""

    region: str
    vpc_id: str | None = None
    """Default: a new VPC is created. Set together with `privateSubnetIds`."""
    private_subnet_ids: tuple[str, ...] = ()
    """Default: new private subnets, one per availability zone."""
    vpc_cidr: str = "10.40.0.0/16"
    """Default: `10.40.0.0/16`. Only for a new VPC."""
    availability_zones: int = 2
    """Default: 2. How many AZs a new VPC spans (2..6)."""
    log_retention_days: int = 365
    """Default: 365. Retention of every CloudWatch log group the platform writes to (Lambda,
    API access, VPC flow logs, MWAA, RDS exports); one of CloudWatch's fixed values."""

    @property
    def bring_your_own_network(self) -> bool:
        return self.vpc_id is not None


@dataclass(frozen=True)
class ComputeResources:
    """Kubernetes requests/limits for one container."""

    requests_cpu: str
    requests_memory: str
    limits_cpu: str
    limits_memory: str

    def to_kubernetes(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.requests_cpu, "memory": self.requests_memory},
            "limits": {"cpu": self.limits_cpu, "memory": self.limits_memory},
        }


@dataclass(frozen=True)
class PostgresSettings:
    """`liftoff:postgres` — the platform's Postgres (RDS on AWS, a StatefulSet on Kubernetes)."""

    version: str = DEFAULT_POSTGRES_VERSION
    """Default: `17`. A major version: 15, 16 or 17."""
    storage_gb: int = 20
    """Default: 20. Allocated storage (AWS: gp3, 20..65536) / PVC size (Kubernetes, 1..65536)."""
    instance_class: str = "db.t4g.small"
    """Default: `db.t4g.small`. AWS only."""
    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("250m", "512Mi", "1", "1Gi")
    )
    """Default: requests 250m CPU / 512Mi, limits 1 CPU / 1Gi. Kubernetes only."""
    high_availability: bool = False
    """Default: false. AWS: Multi-AZ standby."""
    backup_retention_days: int = 7
    """Default: 7 (1..35). AWS: RDS automated backups. Kubernetes: nightly `pg_dump`s kept in
    the archive (needs `liftoff:archive`)."""
    backup_schedule: str = "17 3 * * *"
    """Default: 03:17 UTC daily. Kubernetes only: cron schedule of the backup job."""
    apply_immediately: bool = False
    """Default: false. AWS only: apply instance changes (a major version upgrade included)
    now instead of in the next maintenance window."""
    major_upgrade_from: str | None = None
    """Default: none. Kubernetes only: the major version this stack ran before `version`,
    set once the data was moved by the documented upgrade procedure (README)."""
    deletion_protection: bool = True
    """Default: true. AWS: RDS deletion protection and a final snapshot; Kubernetes: the
    namespace and volumes are retained when the stack is destroyed."""
    database: str = "liftoff"
    """The admin database name; fixed."""
    username: str = "liftoff"
    """The admin user name; fixed."""

    @property
    def image_tag(self) -> str:
        return POSTGRES_IMAGE_TAGS[self.version]


@dataclass(frozen=True)
class Source:
    """One entry of `liftoff:sources`: a sender of events with its own write key."""

    name: str
    allowed_origins: tuple[str, ...] = ("*",)
    """`allowedOrigins`. Default: `["*"]` (any web page may send with this write key). A list
    of browser origins (`https://shop.example.com`, `https://*.example.com` for subdomains,
    `http://localhost:3000`): the collector answers CORS for them only and refuses (403) a
    browser request from any other origin with this source's key, on both targets. Server
    SDKs (no `Origin` header) are not affected."""
    collect_ip: bool = True
    """Default: true: `context.ip` is filled from the client's address when an event has none.
    False: the source's events keep no IP address at all (not filled, and a client-sent
    `context.ip` is removed) — for privacy."""

    @property
    def restricts_origins(self) -> bool:
        return "*" not in self.allowed_origins


@dataclass(frozen=True)
class StreamSettings:
    """`liftoff:stream` — the durable event stream (Kinesis / NATS JetStream)."""

    retention_hours: int = 168
    """Default: 168 (7 days). AWS 24..8760; Kubernetes 1..8760."""
    mode: str = "on-demand"
    """Default: `on-demand`. AWS only: `on-demand` or `provisioned`."""
    shards: int = 2
    """Default: 2. AWS only, with mode `provisioned` (1..500)."""
    replicas: int = 3
    """Default: 3. Kubernetes only: NATS servers and stream replicas (1, 3 or 5)."""
    storage_gb: int = 10
    """Default: 10. Kubernetes only: JetStream file storage per server (PVC size)."""
    durability: str = "always"
    """Kubernetes only: `always` (fsync before every acknowledgement) or `periodic`
    (the NATS default, fsync every 2 minutes). Default: `always` with 3 or more replicas,
    `periodic` below."""
    duplicate_window_minutes: int = 2
    """Default: 2. Kubernetes only: how long JetStream remembers messageIds to drop repeats."""
    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("1", "2Gi", "1", "2Gi")
    )
    """Default: 1 CPU / 2Gi, requests equal to limits. Kubernetes only: each NATS server
    (GOMEMLIMIT is set to 80% of the memory limit)."""
    partitions: int = 1
    """Kubernetes only: JetStream streams the events are spread over by user (1..64; each
    partition is its own stream with its own fsync, so durable throughput grows with it).
    Default: `PRODUCTION_PARTITIONS` with 3 or more replicas, 1 below (dev). Fixed once the
    stream exists (ensure-stream refuses a change; see the README)."""


PRODUCTION_PARTITIONS = 8
"""The partition count where the collector's durable throughput stops growing on a 2-core
node (benchmarks/collector.py's partition curve; README, "Benchmarks")."""
MAX_PARTITIONS = 64


@dataclass(frozen=True)
class IngestSettings:
    """`liftoff:ingest` — the collector (HTTP ingestion API)."""

    replicas: int = 2
    """Default: 2. Kubernetes only: collector pods at creation (then the autoscaler owns it)."""
    min_replicas: int = 2
    """Default: 2. Kubernetes only: autoscaler floor."""
    max_replicas: int = 10
    """Default: 10. Kubernetes only: autoscaler ceiling."""
    host: str | None = None
    """Default: none (no Ingress; the collector is reachable in-cluster only)."""
    ingress_class: str | None = None
    """Default: the cluster's default IngressClass. Kubernetes only."""
    tls_secret: str | None = None
    """Default: none (plain HTTP at the Ingress). Kubernetes only; needs `host`."""
    public_url: str | None = None
    """`publicUrl`. Default: `https://<host>` with `tlsSecret`, `http://<host>` without, none
    without `host`. Kubernetes only: where browsers and SDKs reach the collector when that is
    not what the Ingress alone says (TLS terminated by a load balancer in front, another
    gateway); it is the `collectorUrl` output and what analytics.js's settings name."""
    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("250m", "256Mi", "1", "512Mi")
    )
    """Default: requests 250m CPU / 256Mi, limits 1 CPU / 512Mi. Kubernetes only."""
    throttling_rate_limit: int = 1000
    """Default: 1000 requests/s steady. AWS only (API Gateway stage throttling)."""
    throttling_burst_limit: int = 2000
    """Default: 2000 requests. AWS only."""
    memory_mb: int = 512
    """Default: 512. AWS only: collector Lambda memory (CPU scales with it)."""
    trusted_proxies: tuple[str, ...] = ()
    """Default: none (`X-Forwarded-For` is never believed). Kubernetes only: addresses or CIDRs
    of the proxies in front of the collector (the ingress controller's pods) whose
    `X-Forwarded-For` gives the client address for `context.ip`."""
    max_header_bytes: int = 64 * 1024
    """Default: 65536. Kubernetes only: request line + headers; larger is refused with 431."""
    header_timeout_seconds: int = 10
    """Default: 10. Kubernetes only: time to send a request's headers (408 after it)."""
    body_timeout_seconds: int = 30
    """Default: 30. Kubernetes only: time to send a request's body (connection closed after)."""
    max_connections: int = 512
    """Default: 512. Kubernetes only: open connections per collector pod; more are closed."""


@dataclass(frozen=True)
class ChartSource:
    """Where a Helm chart comes from. Default: the pinned upstream repository in `charts/`."""

    repository: str | None = None
    """A Helm repository URL (a private mirror), replacing the upstream one."""
    path: str | None = None
    """A local chart archive (.tgz) or directory, for air-gapped clusters."""


@dataclass(frozen=True)
class ArchiveSettings:
    """`liftoff:archive` — where the archiver writes gzip NDJSON microbatches."""

    bucket_name: str | None = None
    """AWS: Default: a generated name (`liftoff-<stack>-archive-<suffix>`). Kubernetes: required."""
    lifecycle_days: int = 90
    """Default: 90. AWS only: objects move to Glacier Instant Retrieval after this many days."""
    expire_days: int | None = None
    """Default: never. AWS only: objects are deleted after this many days."""
    endpoint: str | None = None
    """Kubernetes only, required: the S3-compatible endpoint URL (https://minio.corp:9000)."""
    region: str = "us-east-1"
    """Default: `us-east-1`. Kubernetes only: the region the endpoint expects in signatures."""
    access_key_id: str | None = None
    """Kubernetes only: access key id (a secret)."""
    secret_access_key: str | None = None
    """Kubernetes only: secret access key (a secret)."""
    batch_max_events: int = 10000
    """Default: 10000. An object is written when this many events are buffered..."""
    batch_max_seconds: int = 60
    """Default: 60. ...or when the oldest buffered event is this old."""


@dataclass(frozen=True)
class Destination:
    """One entry of `liftoff:destinations`: where the broadcaster forwards events."""

    name: str
    type: str
    """`webhook`, `mixpanel`, `amplitude` or `ga4`."""
    settings: dict[str, str]
    """Non-secret settings by field name (url, region, measurementId)."""
    secrets: dict[str, str]
    """Secret settings by field name (signingSecret, projectToken, apiKey, apiSecret)."""
    sources: tuple[str, ...] = ()
    """Default: every source."""
    events: tuple[str, ...] = ()
    """Default: every event (and every type: identify, page, ... pass unless events is set)."""
    private_networks: tuple[PrivateNetwork, ...] = ()
    """Kubernetes only. Default: none — the broadcaster reaches public addresses on 443 only.
    Private CIDRs (and ports) this destination may reach, e.g. an internal webhook."""


@dataclass(frozen=True)
class PrivateNetwork:
    """`allowPrivate` entry of a destination: a CIDR inside the private network and its ports."""

    cidr: str
    ports: tuple[int, ...] = (443,)


# Per destination type: required settings, optional settings, required secrets.
DESTINATION_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "webhook": (("url",), (), ("signingSecret",)),
    "mixpanel": ((), ("region",), ("projectToken",)),
    "amplitude": ((), ("region",), ("apiKey",)),
    "ga4": (("measurementId",), (), ("apiSecret",)),
}


@dataclass(frozen=True)
class WarehouseSettings:
    """`liftoff:warehouse` — the loader's database on the platform's Postgres."""

    enabled: bool = True
    """Default: true."""
    database: str = "warehouse"
    """Default: `warehouse`. Also the loader's login role."""
    batch_max_events: int = 5000
    """Default: 5000 (fewer commits: ~1.2x the rows/s of 1000 in benchmarks/pipeline.py).
    Rows per COPY..."""
    batch_max_seconds: int = 5
    """Default: 5. ...or flush when the oldest buffered event is this old."""


@dataclass(frozen=True)
class DagSource:
    """Where Airflow's DAGs come from."""

    kind: str = "repository"
    """`repository` (default: this repository's `dags/` folder, shipped by liftoff), `git`
    (git-sync from `repository` at `ref`, Kubernetes only) or `image` (an Airflow image with
    the DAGs baked in, Kubernetes only)."""
    repository: str | None = None
    ref: str = "main"
    path: str = "dags"
    image: str | None = None
    username: str | None = None
    """git over HTTPS: the user name sent with `token`. Default: `git` when a token is set."""
    token: str | None = None
    """git over HTTPS: an access token (a secret). Default: none (a public repository)."""
    ssh_key: str | None = None
    """git over SSH: the private key (a secret); required for ssh:// and git@ URLs."""
    known_hosts: str | None = None
    """git over SSH: the `known_hosts` lines of the git host; required with `sshKey`."""


# MWAA offers specific Airflow versions; the chart runs any 3.x image.
MWAA_AIRFLOW_VERSIONS = ("3.0.6",)
DEFAULT_AIRFLOW_VERSION = {"aws": "3.0.6", "kubernetes": "3.2.2"}
MWAA_CLASSES = ("mw1.micro", "mw1.small", "mw1.medium", "mw1.large", "mw1.xlarge", "mw1.2xlarge")


@dataclass(frozen=True)
class AirflowSettings:
    """`liftoff:airflow` — Apache Airflow (MWAA on AWS, the official chart on Kubernetes)."""

    enabled: bool = True
    """Default: true."""
    version: str = "3.2.2"
    """Default: 3.0.6 on AWS (an MWAA version), 3.2.2 on Kubernetes (the image tag)."""
    executor: str = "KubernetesExecutor"
    """Kubernetes only: `KubernetesExecutor` (default) or `CeleryExecutor`."""
    dags: DagSource = field(default_factory=DagSource)
    workers: int = 2
    """Kubernetes with CeleryExecutor: Celery workers. Default: 2."""
    environment_class: str = "mw1.small"
    """AWS only. Default: `mw1.small`."""
    min_workers: int = 1
    """AWS only. Default: 1."""
    max_workers: int = 5
    """AWS only. Default: 5."""
    web_access: str = "private"
    """`private` (default: reachable only inside the VPC / cluster) or `public` (AWS: the MWAA
    web server on the internet, behind IAM sign-in; Kubernetes: an Ingress with `host`)."""
    host: str | None = None
    """Kubernetes only: host name of the Airflow UI Ingress (with web access `public`)."""
    high_availability: bool = False
    """Kubernetes only: 2 schedulers and API servers."""
    ingress_class: str | None = None
    """Kubernetes only: IngressClass of the UI Ingress. Default: the cluster's default class."""
    tls_secret: str | None = None
    """Kubernetes only: TLS Secret of the UI Ingress (needs `host`). Default: none, plain HTTP
    at the Ingress (and an `http://` airflowUrl)."""
    logs_storage_class: str | None = None
    """Kubernetes only: a ReadWriteMany StorageClass for a shared task-log volume. Default: none
    (task logs go to the archive with remote logging when one is configured, else stay in
    the task pods)."""
    logs_storage_gb: int = 10
    """Kubernetes only, with `logsStorageClass`: size of the shared log volume. Default: 10."""
    web_access_cidrs: tuple[str, ...] = ()
    """AWS only, with web access `private`: networks (VPN, bastion, peered VPCs) admitted to
    the MWAA web server on HTTPS. Default: none (only MWAA's own security group)."""
    web_access_security_group_ids: tuple[str, ...] = ()
    """AWS only, with web access `private`: security groups (e.g. a bastion's) admitted to the
    MWAA web server on HTTPS. Default: none."""


@dataclass(frozen=True)
class PlatformConfig:
    project: str
    stack: str
    target: Target
    postgres: PostgresSettings
    tags: dict[str, str]
    deletion_protection: bool = True
    """Default: true. Platform-wide: stateful resources (database, stream, volumes, buckets)
    refuse deletion. `liftoff:postgres.deletionProtection` overrides it for Postgres."""
    sources: tuple[Source, ...] = (Source("default"),)
    stream: StreamSettings = field(default_factory=StreamSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    charts: dict[str, ChartSource] = field(default_factory=dict)
    archive: ArchiveSettings | None = None
    """None: no archive (Kubernetes without an S3-compatible endpoint configured)."""
    destinations: tuple[Destination, ...] = ()
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    airflow: AirflowSettings = field(default_factory=AirflowSettings)
    kubernetes: KubernetesSettings | None = None
    aws: AwsSettings | None = None
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)

    @property
    def prefix(self) -> str:
        """Stable name prefix for cloud resources that need a unique physical name."""
        return f"liftoff-{self.stack}"


# Kinesis' limit of enhanced fan-out consumers per stream (one per destination on AWS).
MAX_FAN_OUT_CONSUMERS = 20

# The config keys this program reads, in the order they are documented.
KNOWN_KEYS: tuple[str, ...] = (
    "target",
    "deletionProtection",
    "kubernetes",
    "aws",
    "postgres",
    "sources",
    "stream",
    "ingest",
    "charts",
    "archive",
    "destinations",
    "warehouse",
    "airflow",
    "observability",
    "tags",
)
_OBJECT_KEYS = frozenset(KNOWN_KEYS) - {"target", "deletionProtection"}
CHARTS: tuple[str, ...] = ("nats", "airflow")
SOURCE_NAME = r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?"
# A browser origin as browsers send it (lower-case, no path), `*.` for any subdomain, or `*`.
ALLOWED_ORIGIN = r"\*|https?://(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?"
DEFAULT_SERVICES_IMAGE = "ghcr.io/liftoff-data/liftoff-services:0.1.0"


def load_config(
    values: Mapping[str, Any],
    *,
    project: str,
    stack: str,
    secret_keys: Iterable[str] = (),
) -> PlatformConfig:
    """Build the typed configuration from raw `namespace:key` values, or raise ConfigError.

    `values` holds every config key of the stack (Pulumi passes strings; object values are
    JSON). Keys outside the `liftoff` namespace are read only where liftoff needs them
    (`aws:region`).
    """
    problems: list[Problem] = []
    secret_keys = frozenset(secret_keys)
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, name = full_key.partition(":")
        if namespace != project:
            continue
        if name not in KNOWN_KEYS:
            problems.append(
                Problem(
                    full_key,
                    value,
                    "no such key; known keys: " + ", ".join(f"{project}:{k}" for k in KNOWN_KEYS),
                )
            )
            continue
        raw[name] = _decode(full_key, name, value, problems)

    stack_problem = _check_stack_name(stack)
    if stack_problem:
        problems.append(stack_problem)

    target = _read_target(project, raw.get("target"), problems)

    kubernetes_reader = ConfigReader(f"{project}:kubernetes", raw.get("kubernetes"), problems)
    aws_reader = ConfigReader(f"{project}:aws", raw.get("aws"), problems)
    kubernetes = aws = None
    if target == "kubernetes":
        kubernetes = _read_kubernetes(kubernetes_reader, stack)
        if "aws" in raw:
            problems.append(Problem(f"{project}:aws", raw["aws"], "only with target 'aws'"))
    elif target == "aws":
        aws = _read_aws(aws_reader, values.get("aws:region"), problems)
        if "kubernetes" in raw:
            problems.append(
                Problem(f"{project}:kubernetes", raw["kubernetes"], "only with target 'kubernetes'")
            )

    deletion_protection = _read_deletion_protection(
        f"{project}:deletionProtection", raw.get("deletionProtection"), problems
    )
    postgres = _read_postgres(
        ConfigReader(f"{project}:postgres", raw.get("postgres"), problems),
        target,
        deletion_protection,
    )
    tags = _read_tags(f"{project}:tags", raw.get("tags"), target, problems)
    sources = _read_sources(f"{project}:sources", raw.get("sources"), problems)
    stream = _read_stream(ConfigReader(f"{project}:stream", raw.get("stream"), problems), target)
    ingest = _read_ingest(ConfigReader(f"{project}:ingest", raw.get("ingest"), problems), target)
    archive = _read_archive(
        ConfigReader(f"{project}:archive", raw.get("archive"), problems),
        target,
        present="archive" in raw,
        is_secret=f"{project}:archive" in secret_keys,
    )
    destinations = _read_destinations(
        f"{project}:destinations",
        raw.get("destinations"),
        problems,
        is_secret=f"{project}:destinations" in secret_keys,
        sources=sources,
        target=target,
    )
    if target == "aws" and len(destinations) > MAX_FAN_OUT_CONSUMERS:
        problems.append(
            Problem(
                f"{project}:destinations",
                [d.name for d in destinations],
                f"at most {MAX_FAN_OUT_CONSUMERS} on AWS: each destination reads the stream "
                "through its own enhanced fan-out consumer, and Kinesis registers at most "
                f"{MAX_FAN_OUT_CONSUMERS} per stream",
            )
        )
    warehouse = _read_warehouse(
        ConfigReader(f"{project}:warehouse", raw.get("warehouse"), problems)
    )
    airflow = _read_airflow(
        ConfigReader(f"{project}:airflow", raw.get("airflow"), problems),
        target,
        is_secret=f"{project}:airflow" in secret_keys,
    )
    observability = read_observability(
        ConfigReader(f"{project}:observability", raw.get("observability"), problems), target
    )
    charts: dict[str, ChartSource] = {}
    if target == "kubernetes":
        charts = _read_charts(ConfigReader(f"{project}:charts", raw.get("charts"), problems))
    elif "charts" in raw:
        problems.append(
            Problem(f"{project}:charts", raw["charts"], "only with target 'kubernetes'")
        )

    if problems:
        raise ConfigError([_redact(p, project, secret_keys) for p in problems])
    assert target is not None
    return PlatformConfig(
        project=project,
        stack=stack,
        target=target,
        postgres=postgres,
        tags=tags,
        deletion_protection=deletion_protection,
        sources=sources,
        stream=stream,
        ingest=ingest,
        charts=charts,
        archive=archive,
        destinations=destinations,
        warehouse=warehouse,
        airflow=airflow,
        kubernetes=kubernetes,
        aws=aws,
        observability=observability,
    )


def _decode(full_key: str, name: str, value: Any, problems: list[Problem]) -> Any:
    if name not in _OBJECT_KEYS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        problems.append(Problem(full_key, value, "an object (write it as a YAML mapping)"))
        return None


def _check_stack_name(stack: str) -> Problem | None:
    # The stack name becomes part of namespaces, RDS identifiers and DNS names.
    if re.fullmatch(r"[a-z][a-z0-9-]{0,29}", stack) and not stack.endswith("-"):
        return None
    return Problem(
        "stack name",
        stack,
        "lowercase letters, digits and '-', starting with a letter, at most 30 characters "
        "(it becomes part of DNS names and resource identifiers)",
    )


def _read_target(project: str, value: Any, problems: list[Problem]) -> Target | None:
    allowed = "'aws' or 'kubernetes' (required)"
    if value not in TARGETS:
        problems.append(Problem(f"{project}:target", value if value is not None else None, allowed))
        return None
    return value  # type: ignore[return-value]


def _read_kubernetes(reader: ConfigReader, stack: str) -> KubernetesSettings:
    namespace = reader.string(
        "namespace",
        f"liftoff-{stack}",
        pattern=DNS_LABEL,
        describe=_DNS_LABEL_DESCRIBE,
        max_length=63,
    )
    settings = KubernetesSettings(
        namespace=namespace or f"liftoff-{stack}",
        create_namespace=reader.boolean("createNamespace", True),
        storage_class=reader.string(
            "storageClass",
            pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})*",
            describe="a StorageClass name (lowercase DNS subdomain)",
            max_length=253,
        ),
        image_registry=reader.string(
            "imageRegistry",
            pattern=r"[a-zA-Z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*",
            describe="a registry host with an optional path, e.g. registry.corp.example/mirror "
            "(no scheme, no trailing '/')",
        ),
        kubeconfig=reader.string("kubeconfig", describe="a kubeconfig path or its content"),
        context=reader.string("context", describe="a kubeconfig context name"),
        cluster_domain=reader.string(
            "clusterDomain",
            "cluster.local",
            pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})*",
            describe="a DNS domain such as cluster.local",
        )
        or "cluster.local",
        dns_namespace=reader.string(
            "dnsNamespace", "kube-system", pattern=DNS_LABEL, describe=_DNS_LABEL_DESCRIBE
        )
        or "kube-system",
        services_image=reader.string(
            "servicesImage",
            DEFAULT_SERVICES_IMAGE,
            pattern=r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
            describe="a fully qualified image with a pinned tag, e.g. "
            "registry.example/liftoff-services:0.1.0 (not :latest)",
        )
        or DEFAULT_SERVICES_IMAGE,
    )
    if settings.services_image.endswith(":latest"):
        reader.problem("servicesImage", settings.services_image, "a pinned tag, not :latest")
    dns = reader.object("dns")
    dns_namespace = dns.string("namespace", pattern=DNS_LABEL, describe=_DNS_LABEL_DESCRIBE)
    if dns_namespace and reader.has("dnsNamespace"):
        dns.problem("namespace", dns_namespace, "either dns.namespace or dnsNamespace, not both")
    pod_labels = dns.string_map("podLabels", _check_label)
    cidrs = []
    for index, cidr in enumerate(dns.raw("cidrs") or ()):
        checked = _cidr(f"{dns.key('cidrs')}[{index}]", cidr, reader.problems, private=False)
        if checked:
            cidrs.append(checked)
    if dns.has("cidrs") and not isinstance(dns.raw("cidrs"), list):
        dns.problem("cidrs", dns.raw("cidrs"), "a list of CIDRs such as 169.254.20.10/32")
        cidrs = []
    ports = _port_list(dns.key("ports"), dns.raw("ports"), reader.problems, (53,))
    dns.finish()
    reader.finish()
    return dataclasses.replace(
        settings,
        dns_namespace=dns_namespace or settings.dns_namespace,
        dns_pod_labels=dict(sorted(pod_labels.items())),
        dns_cidrs=tuple(sorted(set(cidrs))),
        dns_ports=ports,
    )


def _check_label(name: str, value: str) -> str | None:
    if not re.fullmatch(_K8S_LABEL_KEY, name) or not re.fullmatch(_K8S_LABEL_VALUE, value):
        return "a Kubernetes label (key and value)"
    return None


def _read_aws(reader: ConfigReader, region: Any, problems: list[Problem]) -> AwsSettings:
    if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        problems.append(
            Problem(
                "aws:region", region, "an AWS region such as eu-west-1 (required for target aws)"
            )
        )
        region = ""
    vpc_id = reader.string("vpcId", pattern=r"vpc-[0-9a-f]{8,17}", describe="a VPC id (vpc-...)")
    subnets = reader.string_list(
        "privateSubnetIds",
        item_pattern=r"subnet-[0-9a-f]{8,17}",
        describe="a subnet id (subnet-...)",
    )
    if (vpc_id is None) != (subnets is None) and not any(
        p.key.startswith(reader.key("vpcId")) or p.key.startswith(reader.key("privateSubnetIds"))
        for p in problems
    ):
        which = "privateSubnetIds" if vpc_id else "vpcId"
        reader.problem(
            which,
            None,
            "vpcId and privateSubnetIds must be set together (bring your own network) or both "
            "left out (a new VPC is created)",
        )
    if subnets is not None and vpc_id is not None and len(subnets) < 2:
        reader.problem(
            "privateSubnetIds",
            list(subnets),
            "at least 2 private subnets in different availability zones",
        )
    if subnets is not None and len(set(subnets)) != len(subnets):
        reader.problem("privateSubnetIds", list(subnets), "distinct subnet ids")
    vpc_cidr = reader.string("vpcCidr", "10.40.0.0/16", describe="an IPv4 CIDR from /16 to /24")
    if vpc_cidr is not None and not _is_vpc_cidr(vpc_cidr):
        reader.problem("vpcCidr", vpc_cidr, "an IPv4 CIDR from /16 to /24, e.g. 10.40.0.0/16")
        vpc_cidr = "10.40.0.0/16"
    if vpc_id is not None:
        reader.reject("vpcCidr", "only when liftoff creates the VPC (leave out with vpcId)")
        reader.reject(
            "availabilityZones", "only when liftoff creates the VPC (leave out with vpcId)"
        )
    zones = reader.integer("availabilityZones", 2, minimum=2, maximum=6)
    retention = reader.integer("logRetentionDays", 365, minimum=1, maximum=3653)
    if retention not in LOG_RETENTION_DAYS:
        reader.problem(
            "logRetentionDays",
            retention,
            "one of CloudWatch Logs' retention periods: "
            + ", ".join(str(d) for d in LOG_RETENTION_DAYS),
        )
        retention = 365
    reader.finish()
    return AwsSettings(
        region=region,
        vpc_id=vpc_id,
        private_subnet_ids=tuple(subnets or ()),
        vpc_cidr=vpc_cidr or "10.40.0.0/16",
        availability_zones=zones,
        log_retention_days=retention,
    )


# The only values CloudWatch Logs accepts (PutRetentionPolicy); "never expire" is not offered.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip


def _is_vpc_cidr(value: str) -> bool:
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return 16 <= network.prefixlen <= 24


def _read_deletion_protection(key: str, raw: Any, problems: list[Problem]) -> bool:
    if raw is None:
        return True
    value = parse_bool(raw)
    if value is None:
        problems.append(Problem(key, raw, "true or false"))
        return True
    return value


def _read_postgres(
    reader: ConfigReader, target: Target | None, deletion_protection: bool = True
) -> PostgresSettings:
    defaults = PostgresSettings(deletion_protection=deletion_protection)
    version = reader.string(
        "version", DEFAULT_POSTGRES_VERSION, choices=sorted(POSTGRES_IMAGE_TAGS)
    )
    minimum_storage = 20 if target == "aws" else 1
    storage = reader.integer(
        "storageGb", defaults.storage_gb, minimum=minimum_storage, maximum=65536
    )
    instance_class = defaults.instance_class
    resources = defaults.resources
    if target == "aws":
        instance_class = (
            reader.string(
                "instanceClass",
                defaults.instance_class,
                pattern=r"db\.[a-z0-9]+\.[a-z0-9]+",
                describe="an RDS instance class such as db.t4g.small or db.r7g.large",
            )
            or defaults.instance_class
        )
        reader.reject("resources", "only with target 'kubernetes' (AWS uses instanceClass)")
    elif target == "kubernetes":
        resources = _read_resources(reader.object("resources"), defaults.resources)
        reader.reject("instanceClass", "only with target 'aws' (Kubernetes uses resources)")
        reader.reject("highAvailability", "only with target 'aws' (RDS Multi-AZ)")
    backup_schedule = defaults.backup_schedule
    if target == "kubernetes":
        backup_schedule = (
            reader.string(
                "backupSchedule",
                defaults.backup_schedule,
                pattern=r"(\S+\s+){4}\S+",
                describe="a cron schedule of five fields, e.g. '17 3 * * *'",
            )
            or defaults.backup_schedule
        )
    else:
        reader.reject("backupSchedule", "only with target 'kubernetes' (RDS schedules its own)")
    apply_immediately = False
    major_upgrade_from = None
    if target == "aws":
        apply_immediately = reader.boolean("applyImmediately", False)
        reader.reject("majorUpgradeFrom", "only with target 'kubernetes' (RDS upgrades in place)")
    else:
        reader.reject("applyImmediately", "only with target 'aws' (RDS maintenance windows)")
        major_upgrade_from = reader.string("majorUpgradeFrom", choices=sorted(POSTGRES_IMAGE_TAGS))
        if major_upgrade_from and version and int(major_upgrade_from) >= int(version):
            reader.problem(
                "majorUpgradeFrom",
                major_upgrade_from,
                f"an older major than version ({version}): the one the data was migrated from",
            )
    settings = PostgresSettings(
        version=version or DEFAULT_POSTGRES_VERSION,
        storage_gb=storage,
        instance_class=instance_class,
        resources=resources,
        high_availability=reader.boolean("highAvailability", defaults.high_availability),
        backup_retention_days=reader.integer(
            "backupRetentionDays", defaults.backup_retention_days, minimum=1, maximum=35
        ),
        deletion_protection=reader.boolean("deletionProtection", defaults.deletion_protection),
        backup_schedule=backup_schedule,
        apply_immediately=apply_immediately,
        major_upgrade_from=major_upgrade_from,
    )
    reader.finish()
    return settings


def _read_resources(reader: ConfigReader, defaults: ComputeResources) -> ComputeResources:
    requests = reader.object("requests")
    limits = reader.object("limits")
    cpu = "a CPU quantity such as 250m or 2"
    memory = "a memory quantity such as 512Mi or 2Gi"
    result = ComputeResources(
        requests_cpu=requests.string("cpu", defaults.requests_cpu, pattern=_CPU, describe=cpu)
        or defaults.requests_cpu,
        requests_memory=requests.string(
            "memory", defaults.requests_memory, pattern=_MEMORY, describe=memory
        )
        or defaults.requests_memory,
        limits_cpu=limits.string("cpu", defaults.limits_cpu, pattern=_CPU, describe=cpu)
        or defaults.limits_cpu,
        limits_memory=limits.string(
            "memory", defaults.limits_memory, pattern=_MEMORY, describe=memory
        )
        or defaults.limits_memory,
    )
    for part in (requests, limits, reader):
        part.finish()
    return result


def _read_tags(
    key: str, raw: Any, target: Target | None, problems: list[Problem]
) -> dict[str, str]:
    if raw is None:
        return {}

    def check(name: str, value: str) -> str | None:
        if target == "kubernetes":
            if not re.fullmatch(_K8S_LABEL_KEY, name) or len(name) > 253:
                return "a Kubernetes label key (name or prefix/name, at most 63 characters a part)"
            if not re.fullmatch(_K8S_LABEL_VALUE, value):
                return (
                    "a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
                    "starting and ending with a letter or digit"
                )
        else:
            if name.lower().startswith("aws:") or not 1 <= len(name) <= 128:
                return "an AWS tag key of 1 to 128 characters, not starting with 'aws:'"
            if len(value) > 256:
                return "an AWS tag value of at most 256 characters"
        return None

    return read_string_map(key, raw, problems, check)


def read_stack_config() -> PlatformConfig:
    """Read and validate the configuration of the running Pulumi program."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys.update(runtime_config._SECRET_KEYS.get())
    return load_config(
        values,
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        secret_keys=secret_keys,
    )


def _read_sources(key: str, raw: Any, problems: list[Problem]) -> tuple[Source, ...]:
    if raw is None:
        return (Source("default"),)
    allowed = "a list of {name: <source>} objects, at least one"
    if not isinstance(raw, list) or not raw:
        problems.append(Problem(key, raw, allowed))
        return ()
    sources: list[Source] = []
    for index, item in enumerate(raw):
        reader = ConfigReader(f"{key}[{index}]", item, problems)
        name = reader.string(
            "name",
            required=True,
            pattern=SOURCE_NAME,
            describe="a source name: lowercase letters, digits, '-' or '_', at most 63 "
            "characters (it becomes part of stream subjects and archive paths)",
        )
        origins = _read_allowed_origins(reader)
        collect_ip = reader.boolean("collectIp", True)
        reader.finish()
        if name is None:
            continue
        if any(s.name == name for s in sources):
            problems.append(
                Problem(f"{key}[{index}].name", name, "a name not used by another source")
            )
            continue
        sources.append(Source(name, origins, collect_ip=collect_ip))
    # Sorted: the order sources were listed in must not change what is declared.
    return tuple(sorted(sources, key=lambda s: s.name))


def _read_allowed_origins(reader: ConfigReader) -> tuple[str, ...]:
    origins = reader.string_list(
        "allowedOrigins",
        item_pattern=ALLOWED_ORIGIN,
        describe="'*' or a browser origin scheme://host[:port] (http or https, lower-case, "
        "no path; https://*.example.com for its subdomains)",
    )
    if origins is None:
        return Source.allowed_origins
    if not origins:
        reader.problem("allowedOrigins", [], "at least one origin, or '*' (the default)")
        return Source.allowed_origins
    # Sorted and deduplicated: listing order must not change what is declared.
    return tuple(sorted(set(origins)))


def _read_stream(reader: ConfigReader, target: Target | None) -> StreamSettings:
    defaults = StreamSettings()
    minimum_hours = 24 if target == "aws" else 1
    retention = reader.integer(
        "retentionHours", defaults.retention_hours, minimum=minimum_hours, maximum=8760
    )
    mode, shards = defaults.mode, defaults.shards
    replicas, storage, durability, window = (
        defaults.replicas,
        defaults.storage_gb,
        defaults.durability,
        defaults.duplicate_window_minutes,
    )
    partitions = defaults.partitions
    resources = defaults.resources
    kubernetes_only = (
        "replicas",
        "storageGb",
        "durability",
        "duplicateWindowMinutes",
        "resources",
        "partitions",
    )
    aws_only = ("mode", "shards")
    if target == "aws":
        mode = reader.string("mode", defaults.mode, choices=("on-demand", "provisioned"))
        mode = mode or defaults.mode
        if mode == "provisioned":
            shards = reader.integer("shards", defaults.shards, minimum=1, maximum=500)
        else:
            reader.reject("shards", "only with mode 'provisioned' (on-demand scales by itself)")
        for name in kubernetes_only:
            reader.reject(name, "only with target 'kubernetes'")
    elif target == "kubernetes":
        replicas = reader.integer("replicas", defaults.replicas, minimum=1, maximum=5)
        if replicas not in (1, 3, 5):
            reader.problem("replicas", replicas, "1, 3 or 5 (JetStream needs an odd quorum)")
            replicas = defaults.replicas
        storage = reader.integer("storageGb", defaults.storage_gb, minimum=1, maximum=65536)
        durability = reader.string(
            "durability",
            "always" if replicas >= 3 else "periodic",
            choices=("always", "periodic"),
        ) or ("always" if replicas >= 3 else "periodic")
        window = reader.integer(
            "duplicateWindowMinutes", defaults.duplicate_window_minutes, minimum=1, maximum=60
        )
        partitions = reader.integer(
            "partitions",
            PRODUCTION_PARTITIONS if replicas >= 3 else 1,
            minimum=1,
            maximum=MAX_PARTITIONS,
        )
        resources = _read_resources(reader.object("resources"), defaults.resources)
        raw_resources = reader.raw("resources")
        if isinstance(raw_resources, dict) and "requests" not in raw_resources:
            # Limits alone mean the same requests (a Guaranteed pod, as Kubernetes does too).
            resources = dataclasses.replace(
                resources,
                requests_cpu=resources.limits_cpu,
                requests_memory=resources.limits_memory,
            )
        # The NATS chart's production guidance: a Guaranteed pod, so the server is neither
        # throttled below what it was promised nor evicted first under node memory pressure.
        if (resources.requests_cpu, resources.requests_memory) != (
            resources.limits_cpu,
            resources.limits_memory,
        ):
            reader.problem(
                "resources",
                resources.to_kubernetes(),
                "requests equal to limits (cpu and memory) for the NATS servers",
            )
        for name in aws_only:
            reader.reject(name, "only with target 'aws'")
    reader.finish()
    return StreamSettings(
        retention_hours=retention,
        mode=mode,
        shards=shards,
        replicas=replicas,
        storage_gb=storage,
        durability=durability,
        duplicate_window_minutes=window,
        resources=resources,
        partitions=partitions,
    )


def _read_ingest(reader: ConfigReader, target: Target | None) -> IngestSettings:
    defaults = IngestSettings()
    if target == "aws":
        rate = reader.integer(
            "throttlingRateLimit", defaults.throttling_rate_limit, minimum=1, maximum=100000
        )
        burst = reader.integer(
            "throttlingBurstLimit", defaults.throttling_burst_limit, minimum=1, maximum=100000
        )
        memory = reader.integer("memoryMb", defaults.memory_mb, minimum=128, maximum=10240)
        for name in (
            "replicas",
            "minReplicas",
            "maxReplicas",
            "host",
            "ingressClass",
            "tlsSecret",
            "publicUrl",
            "resources",
            *_KUBERNETES_HTTP_KEYS,
        ):
            reader.reject(name, "only with target 'kubernetes'")
        reader.finish()
        return IngestSettings(
            throttling_rate_limit=rate, throttling_burst_limit=burst, memory_mb=memory
        )
    replicas = reader.integer("replicas", defaults.replicas, minimum=1, maximum=100)
    minimum = reader.integer(
        "minReplicas", min(defaults.min_replicas, replicas), minimum=1, maximum=100
    )
    maximum = reader.integer(
        "maxReplicas", max(defaults.max_replicas, replicas), minimum=1, maximum=1000
    )
    if minimum > maximum:
        reader.problem("minReplicas", minimum, f"at most maxReplicas ({maximum})")
    host = reader.string(
        "host",
        pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})+",
        describe="a DNS host name such as events.example.com",
    )
    ingress_class = reader.string(
        "ingressClass", pattern=DNS_LABEL, describe="an IngressClass name"
    )
    tls_secret = reader.string("tlsSecret", pattern=DNS_LABEL, describe="a Secret name")
    if tls_secret and not host:
        reader.problem("tlsSecret", tls_secret, "only together with host")
    if ingress_class and not host:
        reader.problem("ingressClass", ingress_class, "only together with host")
    public_url = reader.string(
        "publicUrl",
        pattern=rf"https?://{DNS_LABEL}(\.{DNS_LABEL})*(:[0-9]{{1,5}})?",
        describe="http(s)://host[:port] without a path, e.g. https://events.example.com",
    )
    resources = _read_resources(reader.object("resources"), defaults.resources)
    trusted = _read_trusted_proxies(reader)
    header_bytes = reader.integer(
        "maxHeaderBytes", defaults.max_header_bytes, minimum=1024, maximum=1024 * 1024
    )
    header_timeout = reader.integer(
        "headerTimeoutSeconds", defaults.header_timeout_seconds, minimum=1, maximum=300
    )
    body_timeout = reader.integer(
        "bodyTimeoutSeconds", defaults.body_timeout_seconds, minimum=1, maximum=300
    )
    connections = reader.integer(
        "maxConnections", defaults.max_connections, minimum=1, maximum=100000
    )
    for name in ("throttlingRateLimit", "throttlingBurstLimit", "memoryMb"):
        reader.reject(name, "only with target 'aws'")
    reader.finish()
    return IngestSettings(
        replicas=replicas,
        min_replicas=minimum,
        max_replicas=maximum,
        host=host,
        ingress_class=ingress_class,
        tls_secret=tls_secret,
        public_url=public_url,
        resources=resources,
        trusted_proxies=trusted,
        max_header_bytes=header_bytes,
        header_timeout_seconds=header_timeout,
        body_timeout_seconds=body_timeout,
        max_connections=connections,
    )


_KUBERNETES_HTTP_KEYS = (
    "trustedProxies",
    "maxHeaderBytes",
    "headerTimeoutSeconds",
    "bodyTimeoutSeconds",
    "maxConnections",
)


def _read_trusted_proxies(reader: ConfigReader) -> tuple[str, ...]:
    items = reader.string_list(
        "trustedProxies", item_pattern=r".+", describe="an IP address or CIDR"
    )
    networks: list[str] = []
    for index, item in enumerate(items or ()):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            reader.problems.append(
                Problem(
                    f"{reader.key('trustedProxies')}[{index}]",
                    item,
                    "an IP address or CIDR such as 10.0.0.0/8",
                )
            )
    # Sorted and deduplicated: the listing order must not change what is declared.
    return tuple(sorted(set(networks)))


def _read_charts(reader: ConfigReader) -> dict[str, ChartSource]:
    charts: dict[str, ChartSource] = {}
    for chart in CHARTS:
        # Read even when absent, so an unknown chart name is answered with every known one.
        entry = reader.object(chart)
        if not reader.has(chart):
            continue
        repository = entry.string(
            "repository",
            pattern=r"(https?|oci)://\S+",
            describe="a Helm repository URL (https://... or oci://...)",
        )
        path = entry.string("path", describe="a local chart archive or directory")
        if repository and path:
            entry.problem("path", path, "either repository or path, not both")
        entry.finish()
        charts[chart] = ChartSource(repository=repository, path=path)
    reader.finish()
    return charts


class _Hidden:
    def __repr__(self) -> str:
        return "<secret value hidden>"


HIDDEN = _Hidden()


def _redact(problem: Problem, project: str, secret_keys: frozenset[str]) -> Problem:
    """Never echo a secret config value back in an error message."""
    for key in secret_keys:
        if problem.key == key or problem.key.startswith((f"{key}.", f"{key}[")):
            return Problem(problem.key, HIDDEN, problem.allowed)
    return problem


def _set_secret_hint(key: str) -> str:
    return (
        f"a secret: set it with `pulumi config set --secret --path '{key}' <value>` "
        "(plaintext credentials end up in the repository and in previews)"
    )


def _read_archive(
    reader: ConfigReader, target: Target | None, *, present: bool, is_secret: bool
) -> ArchiveSettings | None:
    defaults = ArchiveSettings()
    batch_events = reader.integer(
        "batchMaxEvents", defaults.batch_max_events, minimum=1, maximum=1_000_000
    )
    batch_seconds = reader.integer(
        "batchMaxSeconds", defaults.batch_max_seconds, minimum=1, maximum=900
    )
    bucket_pattern = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
    bucket_describe = "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-'"
    if target == "aws":
        bucket = reader.string("bucketName", pattern=bucket_pattern, describe=bucket_describe)
        lifecycle = reader.integer(
            "lifecycleDays", defaults.lifecycle_days, minimum=1, maximum=36500
        )
        expire_raw = reader.integer("expireDays", 0, minimum=0, maximum=36500)
        expire = expire_raw or None
        if expire is not None and expire <= lifecycle:
            reader.problem("expireDays", expire, f"more than lifecycleDays ({lifecycle})")
        for name in ("endpoint", "region", "accessKeyId", "secretAccessKey"):
            reader.reject(name, "only with target 'kubernetes' (AWS uses its own S3)")
        reader.finish()
        return ArchiveSettings(
            bucket_name=bucket,
            lifecycle_days=lifecycle,
            expire_days=expire,
            batch_max_events=batch_events,
            batch_max_seconds=batch_seconds,
        )
    if not present:
        return None
    endpoint = reader.string(
        "endpoint",
        required=True,
        pattern=r"https?://[^\s/]+(:\d+)?/?",
        describe="the S3-compatible endpoint URL, e.g. https://minio.corp.example:9000",
    )
    bucket = reader.string(
        "bucket", required=True, pattern=bucket_pattern, describe=bucket_describe
    )
    region = (
        reader.string("region", "us-east-1", pattern=r"[a-z0-9-]{2,32}", describe="a region name")
        or "us-east-1"
    )
    credentials = {}
    for name in ("accessKeyId", "secretAccessKey"):
        value = reader.string(name, required=True, describe="a credential string")
        if value is not None and not is_secret:
            reader.problem(name, HIDDEN, _set_secret_hint(reader.key(name)))
        credentials[name] = value
    for name in ("bucketName", "lifecycleDays", "expireDays"):
        reader.reject(name, "only with target 'aws' (use bucket for S3-compatible storage)")
    reader.finish()
    return ArchiveSettings(
        bucket_name=bucket,
        endpoint=(endpoint or "").rstrip("/"),
        region=region,
        access_key_id=credentials["accessKeyId"],
        secret_access_key=credentials["secretAccessKey"],
        batch_max_events=batch_events,
        batch_max_seconds=batch_seconds,
    )


def _read_destinations(
    key: str,
    raw: Any,
    problems: list[Problem],
    *,
    is_secret: bool,
    sources: tuple[Source, ...],
    target: Target | None = None,
) -> tuple[Destination, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem(key, raw, "a list of destination objects"))
        return ()
    known_sources = {s.name for s in sources}
    destinations: list[Destination] = []
    for index, item in enumerate(raw):
        reader = ConfigReader(f"{key}[{index}]", item, problems)
        name = reader.string(
            "name",
            required=True,
            pattern=SOURCE_NAME,
            describe="a destination name: lowercase letters, digits, '-' or '_'",
        )
        kind = reader.string("type", required=True, choices=sorted(DESTINATION_TYPES))
        settings: dict[str, str] = {}
        secrets: dict[str, str] = {}
        if kind is not None:
            required, optional, secret_fields = DESTINATION_TYPES[kind]
            for field_name in required:
                value = _destination_setting(reader, field_name, required=True)
                if value is not None:
                    settings[field_name] = value
            for field_name in optional:
                value = _destination_setting(reader, field_name, required=False)
                if value is not None:
                    settings[field_name] = value
            for field_name in secret_fields:
                value = reader.string(field_name, required=True, describe="a credential string")
                if value is None:
                    continue
                if not is_secret:
                    reader.problem(field_name, HIDDEN, _set_secret_hint(reader.key(field_name)))
                    continue
                secrets[field_name] = value
        only_sources = (
            reader.string_list(
                "sources", item_pattern=SOURCE_NAME, describe="a source name from liftoff:sources"
            )
            or ()
        )
        for position, source in enumerate(only_sources):
            if source not in known_sources:
                problems.append(
                    Problem(
                        f"{reader.key('sources')}[{position}]",
                        source,
                        "one of liftoff:sources: " + ", ".join(sorted(known_sources)),
                    )
                )
        events = (
            reader.string_list("events", item_pattern=r"\S.{0,199}", describe="an event name") or ()
        )
        private: tuple[PrivateNetwork, ...] = ()
        if target == "kubernetes":
            private = _read_private_networks(
                reader.key("allowPrivate"), reader.raw("allowPrivate"), problems
            )
        else:
            reader.reject(
                "allowPrivate", "only with target 'kubernetes' (a NetworkPolicy egress rule)"
            )
        reader.finish()
        if name is None or kind is None:
            continue
        if any(d.name == name for d in destinations):
            problems.append(Problem(f"{key}[{index}].name", name, "a name not used before"))
            continue
        destinations.append(
            Destination(
                name=name,
                type=kind,
                settings=settings,
                secrets=secrets,
                sources=tuple(sorted(set(only_sources))),
                events=tuple(sorted(set(events))),
                private_networks=private,
            )
        )
    return tuple(sorted(destinations, key=lambda d: d.name))


def _port_list(key: str, raw: Any, problems: list[Problem], default: tuple[int, ...]):
    if raw is None:
        return default
    allowed = "a list of port numbers from 1 to 65535"
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in raw)
    ):
        problems.append(Problem(key, raw, allowed))
        return default
    return tuple(sorted(set(raw)))


def _cidr(key: str, raw: Any, problems: list[Problem], *, private: bool) -> str | None:
    try:
        network = ipaddress.ip_network(raw, strict=True) if isinstance(raw, str) else None
    except ValueError:
        network = None
    if network is None:
        problems.append(Problem(key, raw, "a CIDR such as 10.20.0.0/16 (host bits zero)"))
        return None
    if private and not network.is_private:
        problems.append(
            Problem(key, raw, "a private range (public addresses are reachable on 443 already)")
        )
        return None
    return str(network)


def _read_private_networks(
    key: str, raw: Any, problems: list[Problem]
) -> tuple[PrivateNetwork, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem(key, raw, "a list of {cidr, ports} objects"))
        return ()
    networks = []
    for index, entry in enumerate(raw):
        reader = ConfigReader(f"{key}[{index}]", entry, problems)
        cidr = reader.string("cidr", required=True, describe="a private CIDR such as 10.20.0.0/16")
        if cidr is not None:
            cidr = _cidr(reader.key("cidr"), cidr, problems, private=True)
        ports = _port_list(reader.key("ports"), reader.raw("ports"), problems, (443,))
        reader.finish()
        if cidr:
            networks.append(PrivateNetwork(cidr=cidr, ports=ports))
    return tuple(sorted(set(networks), key=lambda n: (n.cidr, n.ports)))


_DESTINATION_SETTINGS = {
    "url": (r"https://\S+", "an https:// URL"),
    "region": (r"us|eu", "'us' or 'eu' (the API's data residency)"),
    "measurementId": (r"G-[A-Z0-9]{4,20}", "a GA4 measurement id such as G-ABC123DEF4"),
}


def _destination_setting(reader: ConfigReader, name: str, *, required: bool) -> str | None:
    pattern, describe = _DESTINATION_SETTINGS[name]
    return reader.string(name, required=required, pattern=pattern, describe=describe)


def _read_warehouse(reader: ConfigReader) -> WarehouseSettings:
    defaults = WarehouseSettings()
    settings = WarehouseSettings(
        enabled=reader.boolean("enabled", True),
        database=reader.string(
            "database",
            defaults.database,
            pattern=r"[a-z][a-z0-9_]{0,30}",
            describe="a database name: lowercase letters, digits and '_', at most 31 characters",
        )
        or defaults.database,
        batch_max_events=reader.integer(
            "batchMaxEvents", defaults.batch_max_events, minimum=1, maximum=100_000
        ),
        batch_max_seconds=reader.integer(
            "batchMaxSeconds", defaults.batch_max_seconds, minimum=1, maximum=300
        ),
    )
    reader.finish()
    return settings


def _read_airflow(
    reader: ConfigReader, target: Target | None, *, is_secret: bool = False
) -> AirflowSettings:
    defaults = AirflowSettings()
    enabled = reader.boolean("enabled", True)
    default_version = DEFAULT_AIRFLOW_VERSION.get(target or "kubernetes", defaults.version)
    if target == "aws":
        version = (
            reader.string("version", default_version, choices=MWAA_AIRFLOW_VERSIONS)
            or default_version
        )
    else:
        version = (
            reader.string(
                "version",
                default_version,
                pattern=r"3\.\d+\.\d+",
                describe="an Airflow 3 release such as 3.2.2",
            )
            or default_version
        )
    web_access = reader.string("webAccess", "private", choices=("private", "public")) or "private"
    dags = _read_dags(reader.object("dags"), target, is_secret=is_secret)
    if target == "aws":
        environment_class = (
            reader.string("environmentClass", defaults.environment_class, choices=MWAA_CLASSES)
            or defaults.environment_class
        )
        minimum = reader.integer("minWorkers", defaults.min_workers, minimum=1, maximum=25)
        maximum = reader.integer("maxWorkers", defaults.max_workers, minimum=1, maximum=25)
        if minimum > maximum:
            reader.problem("minWorkers", minimum, f"at most maxWorkers ({maximum})")
        for name in (
            "executor",
            "workers",
            "host",
            "highAvailability",
            "ingressClass",
            "tlsSecret",
            "logsStorageClass",
            "logsStorageGb",
        ):
            reader.reject(name, "only with target 'kubernetes'")
        cidrs, groups = _read_web_access_peers(reader, web_access)
        reader.finish()
        return AirflowSettings(
            enabled=enabled,
            version=version,
            dags=dags,
            web_access=web_access,
            environment_class=environment_class,
            min_workers=minimum,
            max_workers=maximum,
            web_access_cidrs=cidrs,
            web_access_security_group_ids=groups,
        )
    executor = (
        reader.string(
            "executor", defaults.executor, choices=("KubernetesExecutor", "CeleryExecutor")
        )
        or defaults.executor
    )
    workers = reader.integer("workers", defaults.workers, minimum=1, maximum=100)
    if executor != "CeleryExecutor" and reader.has("workers"):
        reader.problem(
            "workers",
            workers,
            "only with executor CeleryExecutor (Kubernetes executor starts one pod per task)",
        )
    host = reader.string(
        "host", pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})+", describe="a DNS host name"
    )
    if host and web_access != "public":
        reader.problem("host", host, "only with webAccess 'public'")
    if web_access == "public" and not host:
        reader.problem("webAccess", web_access, "'public' on Kubernetes needs host")
    ingress_class = reader.string(
        "ingressClass", pattern=DNS_LABEL, describe="an IngressClass name"
    )
    tls_secret = reader.string("tlsSecret", pattern=DNS_LABEL, describe="a Secret name")
    for name, value in (("ingressClass", ingress_class), ("tlsSecret", tls_secret)):
        if value and not host:
            reader.problem(name, value, "only together with host")
    logs_class = reader.string(
        "logsStorageClass",
        pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})*",
        describe="a StorageClass that offers ReadWriteMany volumes",
        max_length=253,
    )
    logs_storage_gb = reader.integer(
        "logsStorageGb", defaults.logs_storage_gb, minimum=1, maximum=65536
    )
    if reader.has("logsStorageGb") and not logs_class:
        reader.problem(
            "logsStorageGb",
            logs_storage_gb,
            "only with logsStorageClass (a shared log volume needs a ReadWriteMany class; "
            "without one, task logs go to the archive)",
        )
    for name in (
        "environmentClass",
        "minWorkers",
        "maxWorkers",
        "webAccessCidrs",
        "webAccessSecurityGroupIds",
    ):
        reader.reject(name, "only with target 'aws'")
    settings = AirflowSettings(
        enabled=enabled,
        version=version,
        dags=dags,
        web_access=web_access,
        executor=executor,
        workers=workers,
        host=host,
        high_availability=reader.boolean("highAvailability", False),
        ingress_class=ingress_class,
        tls_secret=tls_secret,
        logs_storage_class=logs_class,
        logs_storage_gb=logs_storage_gb,
    )
    reader.finish()
    return settings


def _read_web_access_peers(
    reader: ConfigReader, web_access: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Who may reach a private MWAA web server besides MWAA itself (VPN, bastion)."""
    cidrs = reader.string_list(
        "webAccessCidrs",
        item_pattern=r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}",
        describe="an IPv4 CIDR such as 10.8.0.0/16 (VPN clients, a bastion's subnet)",
    )
    valid: list[str] = []
    for index, cidr in enumerate(cidrs or ()):
        try:
            network = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError:
            reader.problem(
                f"webAccessCidrs[{index}]",
                cidr,
                "an IPv4 network: its first address and a prefix of 1 to 32 (e.g. 10.8.0.0/16)",
            )
            continue
        if network.prefixlen == 0:
            reader.problem(
                f"webAccessCidrs[{index}]",
                cidr,
                "a specific network (VPN, bastion); for internet access use webAccess 'public'",
            )
            continue
        valid.append(cidr)
    groups = reader.string_list(
        "webAccessSecurityGroupIds",
        item_pattern=r"sg-[0-9a-f]{8,17}",
        describe="a security group id (sg-...)",
    )
    if web_access != "private":
        for name in ("webAccessCidrs", "webAccessSecurityGroupIds"):
            if reader.has(name):
                reader.problem(
                    name,
                    reader.data[name],
                    "only with webAccess 'private' (a public web server is reached over the "
                    "internet)",
                )
    return tuple(sorted(set(valid))), tuple(sorted(set(groups or ())))


def _read_dags(reader: ConfigReader, target: Target | None, *, is_secret: bool) -> DagSource:
    kinds = ("repository",) if target == "aws" else ("repository", "git", "image")
    kind = reader.string("source", "repository", choices=kinds) or "repository"
    if kind == "git":
        repository = reader.string(
            "repository",
            required=True,
            pattern=r"(https://|ssh://|git@)\S+",
            describe="a git URL (https://, ssh:// or git@)",
        )
        credentials = {}
        for name in ("token", "sshKey"):
            value = reader.string(name, describe="a credential string")
            if value is not None and not is_secret:
                reader.problem(name, HIDDEN, _set_secret_hint(reader.key(name)))
            credentials[name] = value
        username = reader.string("username", pattern=r"[\w.@-]{1,128}", describe="a git user name")
        known_hosts = reader.string(
            "knownHosts",
            pattern=r"(?s)\S+ \S+ \S+.*",
            describe="known_hosts lines of the git host (ssh-keyscan <host>)",
        )
        over_ssh = bool(repository) and not repository.startswith("https://")
        if over_ssh:
            for name, value in (("token", credentials["token"]), ("username", username)):
                if value is not None:
                    reader.problem(
                        name,
                        HIDDEN if name == "token" else value,
                        "only with an https:// repository (SSH uses sshKey)",
                    )
            if credentials["sshKey"] is None:
                reader.problem(
                    "sshKey", None, "required for an SSH repository URL (set it as a secret)"
                )
            if known_hosts is None:
                reader.problem(
                    "knownHosts",
                    None,
                    "required with an SSH repository: the host's known_hosts lines, so "
                    "git-sync verifies whom it talks to",
                )
        elif repository:
            for name, value in (("sshKey", credentials["sshKey"]), ("knownHosts", known_hosts)):
                if value is not None:
                    reader.problem(
                        name,
                        HIDDEN if name == "sshKey" else value,
                        "only with an ssh:// or git@ repository URL",
                    )
            if username and not credentials["token"]:
                reader.problem("username", username, "only together with token")
        source = DagSource(
            kind=kind,
            repository=repository,
            username=(username or "git") if credentials["token"] else None,
            token=credentials["token"],
            ssh_key=credentials["sshKey"],
            known_hosts=known_hosts,
            ref=reader.string(
                "ref", "main", pattern=r"[\w./-]+", describe="a branch, tag or commit"
            )
            or "main",
            path=reader.string(
                "path", "dags", pattern=r"[\w./-]+", describe="the DAG folder inside the repository"
            )
            or "dags",
        )
    elif kind == "image":
        source = DagSource(
            kind=kind,
            image=reader.string(
                "image",
                required=True,
                pattern=r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
                describe="an Airflow image with the DAGs inside, pinned tag",
            ),
        )
    else:
        source = DagSource()
    reader.finish()
    return source
