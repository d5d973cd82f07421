"""`liftoff:airflow`: Airflow's settings on both targets, and how they are read from the stack."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from components.validation import (
    DNS_LABEL,
    HIDDEN,
    ConfigReader,
    StackReading,
    Target,
    reject_other_target,
    set_secret_hint,
)


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
class _AirflowCommon:
    """The keys both targets take."""

    enabled: bool = True
    """Default: true."""
    version: str = DEFAULT_AIRFLOW_VERSION["kubernetes"]
    dags: DagSource = field(default_factory=DagSource)
    web_access: str = "private"
    """`private` (default: reachable only inside the VPC / cluster) or `public` (AWS: the MWAA
    web server on the internet, behind IAM sign-in; Kubernetes: an Ingress with `host`)."""


@dataclass(frozen=True)
class AwsAirflowSettings(_AirflowCommon):
    """`liftoff:airflow` on AWS: an MWAA environment."""

    version: str = DEFAULT_AIRFLOW_VERSION["aws"]
    """Default: 3.0.6 (an MWAA version)."""
    environment_class: str = "mw1.small"
    """Default: `mw1.small`."""
    min_workers: int = 1
    """Default: 1."""
    max_workers: int = 5
    """Default: 5."""
    web_access_cidrs: tuple[str, ...] = ()
    """With web access `private`: networks (VPN, bastion, peered VPCs) admitted to the MWAA
    web server on HTTPS. Default: none (only MWAA's own security group)."""
    web_access_security_group_ids: tuple[str, ...] = ()
    """With web access `private`: security groups (e.g. a bastion's) admitted to the MWAA web
    server on HTTPS. Default: none."""


@dataclass(frozen=True)
class KubernetesAirflowSettings(_AirflowCommon):
    """`liftoff:airflow` on Kubernetes: the official Airflow chart."""

    version: str = DEFAULT_AIRFLOW_VERSION["kubernetes"]
    """Default: 3.2.2 (the image tag)."""
    executor: str = "KubernetesExecutor"
    """`KubernetesExecutor` (default) or `CeleryExecutor`."""
    workers: int = 2
    """With CeleryExecutor: Celery workers. Default: 2."""
    host: str | None = None
    """Host name of the Airflow UI Ingress (with web access `public`)."""
    high_availability: bool = False
    """2 schedulers and API servers."""
    ingress_class: str | None = None
    """IngressClass of the UI Ingress. Default: the cluster's default class."""
    tls_secret: str | None = None
    """TLS Secret of the UI Ingress (needs `host`). Default: none, plain HTTP at the Ingress
    (and an `http://` airflowUrl)."""
    logs_storage_class: str | None = None
    """A ReadWriteMany StorageClass for a shared task-log volume. Default: none (task logs go
    to the archive with remote logging when one is configured, else stay in the task pods)."""
    logs_storage_gb: int = 10
    """With `logsStorageClass`: size of the shared log volume. Default: 10."""


@dataclass(frozen=True)
class AirflowSettings:
    """`liftoff:airflow` — Apache Airflow: the chosen target's settings. A key of the other
    target is refused by construction (`reject_other_target`)."""

    aws: AwsAirflowSettings | None = None
    """Set on AWS (MWAA)."""
    kubernetes: KubernetesAirflowSettings | None = None
    """Set on Kubernetes (the official chart)."""

    @property
    def enabled(self) -> bool:
        chosen = self.aws or self.kubernetes
        return chosen.enabled if chosen is not None else _AirflowCommon.enabled


def read_airflow(stack: StackReading) -> AirflowSettings:
    reader, target, is_secret = stack.reader("airflow"), stack.target, stack.is_secret("airflow")
    enabled = reader.boolean("enabled", True)
    default_version = DEFAULT_AIRFLOW_VERSION[target or "kubernetes"]
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
    dags = read_dags(reader.object("dags"), target, is_secret=is_secret)
    common = _AirflowCommon(enabled=enabled, version=version, dags=dags, web_access=web_access)
    if target == "aws":
        settings = AirflowSettings(aws=_read_mwaa(reader, common))
    else:
        settings = AirflowSettings(kubernetes=_read_airflow_chart(reader, common))
    reader.finish()
    return settings


def _read_mwaa(reader: ConfigReader, common: _AirflowCommon) -> AwsAirflowSettings:
    defaults = AwsAirflowSettings()
    environment_class = (
        reader.string("environmentClass", defaults.environment_class, choices=MWAA_CLASSES)
        or defaults.environment_class
    )
    minimum = reader.integer("minWorkers", defaults.min_workers, minimum=1, maximum=25)
    maximum = reader.integer("maxWorkers", defaults.max_workers, minimum=1, maximum=25)
    if minimum > maximum:
        reader.problem("minWorkers", minimum, f"at most maxWorkers ({maximum})")
    reject_other_target(reader, KubernetesAirflowSettings, AwsAirflowSettings, "kubernetes")
    cidrs, groups = read_web_access_peers(reader, common.web_access)
    return AwsAirflowSettings(
        **_common_fields(common),
        environment_class=environment_class,
        min_workers=minimum,
        max_workers=maximum,
        web_access_cidrs=cidrs,
        web_access_security_group_ids=groups,
    )


def _common_fields(common: _AirflowCommon) -> dict[str, Any]:
    return {f.name: getattr(common, f.name) for f in dataclasses.fields(_AirflowCommon)}


def _read_airflow_chart(reader: ConfigReader, common: _AirflowCommon) -> KubernetesAirflowSettings:
    defaults = KubernetesAirflowSettings()
    web_access = common.web_access
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
    logs_class, logs_storage_gb = _read_logs_volume(reader, defaults)
    reject_other_target(reader, AwsAirflowSettings, KubernetesAirflowSettings, "aws")
    return KubernetesAirflowSettings(
        **_common_fields(common),
        executor=executor,
        workers=workers,
        host=host,
        high_availability=reader.boolean("highAvailability", False),
        ingress_class=ingress_class,
        tls_secret=tls_secret,
        logs_storage_class=logs_class,
        logs_storage_gb=logs_storage_gb,
    )


def _read_logs_volume(
    reader: ConfigReader, defaults: KubernetesAirflowSettings
) -> tuple[str | None, int]:
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
    return logs_class, logs_storage_gb


def read_web_access_peers(
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


def read_dags(reader: ConfigReader, target: Target | None, *, is_secret: bool) -> DagSource:
    kinds = ("repository",) if target == "aws" else ("repository", "git", "image")
    kind = reader.string("source", "repository", choices=kinds) or "repository"
    if kind == "git":
        source = _read_git_dags(reader, is_secret=is_secret)
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


def _read_git_dags(reader: ConfigReader, *, is_secret: bool) -> DagSource:
    """git-sync from a repository, over HTTPS (optional token) or SSH (key and known hosts)."""
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
            reader.problem(name, HIDDEN, set_secret_hint(reader.key(name)))
        credentials[name] = value
    username = reader.string("username", pattern=r"[\w.@-]{1,128}", describe="a git user name")
    known_hosts = reader.string(
        "knownHosts",
        pattern=r"(?s)\S+ \S+ \S+.*",
        describe="known_hosts lines of the git host (ssh-keyscan <host>)",
    )
    _check_git_credentials(reader, repository, credentials, username, known_hosts)
    return DagSource(
        kind="git",
        repository=repository,
        username=(username or "git") if credentials["token"] else None,
        token=credentials["token"],
        ssh_key=credentials["sshKey"],
        known_hosts=known_hosts,
        ref=reader.string("ref", "main", pattern=r"[\w./-]+", describe="a branch, tag or commit")
        or "main",
        path=reader.string(
            "path", "dags", pattern=r"[\w./-]+", describe="the DAG folder inside the repository"
        )
        or "dags",
    )


def _check_git_credentials(
    reader: ConfigReader,
    repository: str | None,
    credentials: dict[str, str | None],
    username: str | None,
    known_hosts: str | None,
) -> None:
    """Each credential only with the transport it belongs to; SSH needs its key and hosts."""
    over_ssh = bool(repository and not repository.startswith("https://"))
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
