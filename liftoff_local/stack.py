"""From a stack file to what runs locally, through the same validation as the Pulumi program.

The stack file's ``config:`` is turned into the strings Pulumi hands to a program, then
:func:`components.config.load_config` checks it: a stack that ``pulumi preview`` would reject
is rejected here with the same ``ConfigError`` message, before anything starts.

``secure:`` values are ciphertext only the stack's secrets provider can open. Locally they are
never decrypted: validation sees a placeholder (marked secret, so it is never echoed), and the
processes get local values instead — the archive's credentials belong to the local store,
a webhook's signing secret is generated once and kept, and a third-party destination runs only
when its credential is put in the local secrets file (see :class:`LocalPlan`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.archive.settings import ArchiveBatching
from components.config import PlatformConfig, load_config
from components.consumers import broadcaster_name
from components.consumers.settings import Destination, WarehouseSettings
from components.stream.settings import KubernetesStream
from services.consumers.broadcaster.destinations import TYPES

PROJECT = "liftoff"
SECRET_PLACEHOLDER = "liftoff-local-placeholder"

# Local archive batches when the stack has no `liftoff:archive` (the dev stack): small, so the
# archive shows events within seconds. A stack's own bounds are used when it sets them.
LOCAL_ARCHIVE = ArchiveBatching(batch_max_events=1000, batch_max_seconds=5)

# Keys (or fields) that describe the deployment, not the data path: read by the validation,
# not used locally.
_DEPLOYMENT_ONLY = {
    "kubernetes": "cluster placement",
    "aws": "AWS network",
    "airflow": "Airflow does not run locally",
    "charts": "Helm charts",
    "tags": "cloud tags / labels",
    "deletionProtection": "nothing local is protected; use --fresh to start over",
}
_STREAM_LOCAL = ("retentionHours", "duplicateWindowMinutes", "durability")
_POSTGRES_LOCAL = ("version",)
_ARCHIVE_LOCAL = ("batchMaxEvents", "batchMaxSeconds", "bucket", "bucketName")
# The collector's HTTP limits apply locally; replicas, Ingress, proxies, sizes do not.
_INGEST_LOCAL = ("maxHeaderBytes", "headerTimeoutSeconds", "bodyTimeoutSeconds", "maxConnections")


class StackFileError(Exception):
    """The stack file cannot be read as a Pulumi stack file."""


def stack_name_of(path: Path) -> str:
    """`Pulumi.dev.yaml` → `dev`; `stacks/aws.yaml` → `aws` (as the test harness names them)."""
    name = path.name
    if name.startswith("Pulumi.") and name.endswith(".yaml"):
        return name[len("Pulumi.") : -len(".yaml")]
    return path.stem


def read_stack_file(path: Path) -> tuple[dict[str, str], set[str], dict[str, Any]]:
    """(config strings as Pulumi passes them, secret keys, the raw `config:` mapping)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise StackFileError(f"cannot read the stack file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise StackFileError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config") or {}, dict):
        raise StackFileError(f"{path}: expected a mapping with a `config:` mapping inside")
    raw = document.get("config") or {}
    values: dict[str, str] = {}
    secret_keys: set[str] = set()
    for key, value in raw.items():
        value, is_secret = _without_ciphertext(value)
        if is_secret:
            # As in Pulumi: a secure value anywhere inside makes the whole key secret.
            secret_keys.add(str(key))
        values[str(key)] = _config_string(value)
    return values, secret_keys, raw


def _without_ciphertext(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict) and set(value) == {"secure"}:
        return SECRET_PLACEHOLDER, True
    if isinstance(value, dict):
        items = {k: _without_ciphertext(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(s for _, s in items.values())
    if isinstance(value, list):
        listed = [_without_ciphertext(v) for v in value]
        return [v for v, _ in listed], any(s for _, s in listed)
    return value, False


def _config_string(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class LocalDestination:
    destination: Destination
    secret_field: str
    secret: str | None
    """None: not available locally, the broadcaster does not run (see `note`)."""
    note: str = ""

    @property
    def consumer_name(self) -> str:
        return broadcaster_name(self.destination)


@dataclass(frozen=True)
class LocalPlan:
    """What `liftoff local` runs for one validated stack."""

    stack: str
    stack_file: Path
    config: PlatformConfig
    stream: KubernetesStream
    warehouse: WarehouseSettings
    archive: ArchiveBatching
    archive_bucket: str
    destinations: tuple[LocalDestination, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def sources(self) -> list[str]:
        return [source.name for source in self.config.sources]


def _secret_field(destination: Destination) -> str:
    """The one credential the destination's type needs (the registry of types says which)."""
    return TYPES[destination.type].secret.name


def load_plan(path: Path, local_secrets: dict[str, dict[str, str]] | None = None) -> LocalPlan:
    """Validate the stack file and derive the local plan; raises ConfigError / StackFileError.

    `local_secrets` (destination name → {field: value}) are the credentials for this run;
    a destination without one does not run (nothing is sent on a made-up credential).
    """
    values, secret_keys, raw = read_stack_file(path)
    stack = stack_name_of(path)
    config = load_config(values, project=PROJECT, stack=stack, secret_keys=secret_keys)
    notes: list[str] = []

    ignored = [f"{PROJECT}:{k} ({why})" for k, why in _DEPLOYMENT_ONLY.items() if _has(raw, k)]
    for key, kept in (
        ("stream", _STREAM_LOCAL),
        ("postgres", _POSTGRES_LOCAL),
        ("archive", _ARCHIVE_LOCAL),
        ("ingest", _INGEST_LOCAL),
    ):
        fields = raw.get(f"{PROJECT}:{key}")
        if isinstance(fields, dict):
            extra = sorted(str(f) for f in fields if f not in kept)
            if extra:
                ignored.append(f"{PROJECT}:{key}.{{{', '.join(extra)}}} (deployment sizing/place)")
    if ignored:
        notes.append("ignored locally: " + "; ".join(ignored))
    stream = _local_stream(config)
    if config.target == "kubernetes" and stream.replicas != 1:
        notes.append(f"stream: 1 local nats-server instead of {stream.replicas} replicas")

    stack_archive = config.archive.aws or config.archive.kubernetes
    archive: ArchiveBatching = stack_archive or LOCAL_ARCHIVE
    bucket = (stack_archive.bucket_name if stack_archive else None) or f"{config.prefix}-archive"
    if stack_archive is None:
        notes.append(
            "archive: the stack has no liftoff:archive; locally the archiver writes to the local "
            f"store with batches of {archive.batch_max_events} events / "
            f"{archive.batch_max_seconds} s"
        )
    elif config.archive.kubernetes is not None or config.target == "aws":
        notes.append("archive: written to the local S3 store, not to the stack's endpoint/bucket")

    local_secrets = local_secrets or {}
    destinations = []
    for destination in config.destinations:
        secret_field = _secret_field(destination)
        secret = local_secrets.get(destination.name, {}).get(secret_field)
        note = ""
        if not secret:
            secret = None
            note = (
                f"destination {destination.name!r} ({destination.type}) does not run: its "
                f"{secret_field} is a Pulumi secret. Redirect it to a local receiver with "
                f"--destination-url {destination.name}=URL, or put the real {secret_field} in "
                "secrets/destinations.json to send to it"
            )
            notes.append(note)
        destinations.append(LocalDestination(destination, secret_field, secret, note))
    return LocalPlan(
        stack=stack,
        stack_file=path,
        config=config,
        stream=stream,
        warehouse=config.warehouse,
        archive=archive,
        archive_bucket=bucket,
        destinations=tuple(destinations),
        notes=tuple(notes),
    )


def _has(raw: dict[str, Any], key: str) -> bool:
    return f"{PROJECT}:{key}" in raw


def _local_stream(config: PlatformConfig) -> KubernetesStream:
    """The local nats-server's stream: the stack's JetStream settings, or for an AWS stack
    the JetStream defaults with the Kinesis retention."""
    if config.stream.kubernetes is not None:
        return config.stream.kubernetes
    assert config.stream.aws is not None
    return KubernetesStream(retention_hours=config.stream.aws.retention_hours)
