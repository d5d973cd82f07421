"""Local mode as the platform's third realization: every process's environment, built with the
services' own contracts, as ``components/*/aws.py`` and ``components/*/kubernetes.py`` build the
cloud targets'.

From a validated stack (:class:`~liftoff_local.stack.LocalPlan`) and where things are on this
machine (:class:`LocalPlace`: loopback ports, the files under ``<data>/secrets/``), in start
order: ``ensure-stream``, ``ensure-database`` (with a warehouse), the archiver, the loader (with a
warehouse), one broadcaster per destination that has a credential, the collector. Nothing here
starts anything or spells a variable name; the supervisor runs these, and
``tests/test_runtime_contract.py`` checks them for every shipped stack like the cloud targets'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.consumers import destination_document
from components.ingest import collector_sources
from components.ingest.settings import KubernetesIngest
from liftoff_local.stack import LocalDestination, LocalPlan
from services.archive.contract import ArchiveAccess
from services.collector import contract as collector
from services.consumers.archiver import contract as archiver
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.loader import contract as loader
from services.consumers.runner.contract import ConsumerRuntime
from services.contract import Process
from services.postgres import contract as postgres
from services.regulations import contract as regulations
from services.stream.address import EVENTS_STREAM, dead_letter_url_of, jetstream_url
from services.stream.contract import ENSURE_STREAM, EnsureStreamSettings, StreamAccess
from services.suppression.contract import SuppressionAccess, suppression_url_of

LOOPBACK = "127.0.0.1"
ADMIN_USER = "liftoff"
"""The local PostgreSQL's superuser (initdb's ``-U``; components.config's
``PostgresSettings.username`` default)."""
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class LocalPlace:
    """Where the local data path's parts are: its ports and its files."""

    nats_port: int
    postgres_port: int
    s3_port: int
    collector_port: int
    first_health_port: int
    """The consumers' health ports follow it, in start order."""
    stream_credentials_file: str
    s3_credentials_file: str
    admin_password_file: str
    warehouse_password_file: str
    write_keys_file: str
    destination_secrets_files: Mapping[str, str] = field(default_factory=dict)
    """Destination name → its secrets file (only destinations with a credential run)."""
    destination_urls: Mapping[str, str] = field(default_factory=dict)
    """``--destination-url NAME=URL``: a destination redirected to a local receiver."""
    listen: str = LOOPBACK
    tls: tuple[str, str] | None = None
    """(certificate, key) files: the collector serves HTTPS."""
    suppression_key_file: str | None = None
    """The suppression list's HMAC key; None: the collector suppresses nothing."""

    @property
    def stream_url(self) -> str:
        return jetstream_url(f"{LOOPBACK}:{self.nats_port}", EVENTS_STREAM)

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"


@dataclass(frozen=True)
class LocalProcess:
    """One ``python -m services <command>`` of the local data path."""

    name: str
    command: str
    contract: Process[Any]
    environment: Mapping[str, str]
    health_port: int | None = None


def _stream(place: LocalPlace) -> StreamAccess[str]:
    return StreamAccess(url=place.stream_url, credentials_file=place.stream_credentials_file)


def ensure_stream(plan: LocalPlan, place: LocalPlace) -> LocalProcess:
    stream = plan.stream
    settings = EnsureStreamSettings(
        stream=_stream(place),
        retention_hours=stream.retention_hours,
        replicas=1,
        duplicate_window_seconds=stream.duplicate_window_minutes * 60,
        consumers=declared_consumers(plan),
        log_level="WARNING",
    )
    return LocalProcess(
        "ensure-stream", "ensure-stream", ENSURE_STREAM, _env(ENSURE_STREAM, settings)
    )


def _admin(place: LocalPlace) -> postgres.PostgresAccess[str]:
    return postgres.PostgresAccess(
        host=LOOPBACK,
        port=str(place.postgres_port),
        database=postgres.DEFAULT_ADMIN_DATABASE,
        user=ADMIN_USER,
        password_file=place.admin_password_file,
        sslmode="disable",
    )


def ensure_database(plan: LocalPlan, place: LocalPlace) -> LocalProcess:
    database = plan.warehouse.database
    settings = postgres.EnsureDatabaseSettings(
        admin=_admin(place),
        database=database,
        role=database,
        password_file=place.warehouse_password_file,
        log_level="WARNING",
    )
    process = postgres.ENSURE_DATABASE
    return LocalProcess("ensure-database", "ensure-database", process, _env(process, settings))


def archive_access(plan: LocalPlan, place: LocalPlace) -> ArchiveAccess[str]:
    """The local object store, as every archive client reads it."""
    return ArchiveAccess(
        bucket=plan.archive_bucket,
        endpoint=place.s3_endpoint,
        region=S3_REGION,
        credentials_file=place.s3_credentials_file,
    )


def _runtime(place: LocalPlace, name: str, health_port: int) -> ConsumerRuntime[str]:
    return ConsumerRuntime(
        stream=_stream(place),
        consumer_name=name,
        dead_letter_url=dead_letter_url_of(place.stream_url),
        health_port=health_port,
        health_host=LOOPBACK,
        log_level="INFO",
    )


def _archiver(plan: LocalPlan, place: LocalPlace, health_port: int) -> LocalProcess:
    settings = archiver.ArchiverSettings(
        runtime=_runtime(place, archiver.NAME, health_port),
        archiving=archiver.Archiving(archive=archive_access(plan, place)),
        batch_max_events=plan.archive.batch_max_events,
        batch_max_seconds=plan.archive.batch_max_seconds,
    )
    process = archiver.PROCESS
    return LocalProcess(archiver.NAME, "archiver", process, _env(process, settings), health_port)


def _loader(plan: LocalPlan, place: LocalPlace, health_port: int) -> LocalProcess:
    warehouse = plan.warehouse
    settings = loader.LoaderSettings(
        runtime=_runtime(place, loader.NAME, health_port),
        warehouse=postgres.PostgresAccess(
            host=LOOPBACK,
            port=str(place.postgres_port),
            database=warehouse.database,
            user=warehouse.database,
            password_file=place.warehouse_password_file,
            sslmode="disable",
        ),
        batch_max_events=warehouse.batch_max_events,
        batch_max_seconds=warehouse.batch_max_seconds,
        columns=warehouse.columns or None,
    )
    process = loader.PROCESS
    return LocalProcess(loader.NAME, "loader", process, _env(process, settings), health_port)


def _broadcaster(local: LocalDestination, place: LocalPlace, health_port: int) -> LocalProcess:
    destination = local.destination
    settings = broadcaster.BroadcasterSettings(
        runtime=_runtime(place, local.consumer_name, health_port),
        broadcast=broadcaster.Broadcast(
            destination=destination_document(destination),
            api_url=place.destination_urls.get(destination.name),
            secrets_file=place.destination_secrets_files[destination.name],
        ),
    )
    process = broadcaster.PROCESS
    return LocalProcess(
        local.consumer_name, "broadcaster", process, _env(process, settings), health_port
    )


def declared_consumers(plan: LocalPlan) -> tuple[str, ...]:
    """The durable consumers that run locally (a destination without a credential does not),
    as the deployed setup Job is told the stack's: created if missing, the others deleted."""
    names = [archiver.NAME, *([loader.NAME] if plan.warehouse.enabled else [])]
    running = (local.consumer_name for local in plan.destinations if local.secret is not None)
    return (*names, *running)


def consumers(plan: LocalPlan, place: LocalPlace) -> list[LocalProcess]:
    """The archiver, the loader (with a warehouse), and the broadcasters that can run."""
    found = [_archiver(plan, place, place.first_health_port)]
    if plan.warehouse.enabled:
        found.append(_loader(plan, place, place.first_health_port + len(found)))
    for local in plan.destinations:
        if local.secret is not None:
            found.append(_broadcaster(local, place, place.first_health_port + len(found)))
    return found


def collector_process(plan: LocalPlan, place: LocalPlace) -> LocalProcess:
    # An AWS stack run locally: the collector's HTTP limits at their Kubernetes defaults.
    ingest = plan.config.ingest.kubernetes or KubernetesIngest()
    cert, key = place.tls if place.tls else (None, None)
    settings = collector.CollectorSettings(
        stream=_stream(place),
        sources=collector_sources(plan.config.sources, write_keys_file=place.write_keys_file),
        host=place.listen,
        port=place.collector_port,
        log_level="INFO",
        tls_cert_file=cert,
        tls_key_file=key,
        http=collector.HttpLimitSettings(
            max_header_bytes=ingest.max_header_bytes,
            header_timeout_seconds=ingest.header_timeout_seconds,
            body_timeout_seconds=ingest.body_timeout_seconds,
            max_connections=ingest.max_connections,
        ),
        suppression=_suppression(place),
    )
    process = collector.PROCESS
    return LocalProcess("collector", "collector", process, _env(process, settings))


def _suppression(place: LocalPlace) -> SuppressionAccess[str]:
    if place.suppression_key_file is None:
        return SuppressionAccess()
    url = suppression_url_of(place.stream_url)
    return SuppressionAccess(url=url, key_file=place.suppression_key_file)


def regulation_environment(plan: LocalPlan, place: LocalPlace) -> dict[str, str] | None:
    """What ``python -m services regulation`` needs to act on this local platform (the
    requests are kept in the warehouse: none without one)."""
    if not plan.warehouse.enabled or place.suppression_key_file is None:
        return None
    warehouse = plan.warehouse
    settings = regulations.RegulationSettings(
        suppression=_suppression(place),
        warehouse=postgres.PostgresAccess(
            host=LOOPBACK,
            port=str(place.postgres_port),
            database=warehouse.database,
            user=warehouse.database,
            password_file=place.warehouse_password_file,
            sslmode="disable",
        ),
        archive=archive_access(plan, place),
        stream=_stream(place),
        log_level="WARNING",
    )
    return _env(regulations.PROCESS, settings)


def processes(plan: LocalPlan, place: LocalPlace) -> list[LocalProcess]:
    """Every process of the local data path, in start order."""
    found = [ensure_stream(plan, place)]
    if plan.warehouse.enabled:
        found.append(ensure_database(plan, place))
    return [*found, *consumers(plan, place), collector_process(plan, place)]


def _env(process: Process[Any], settings: Any) -> dict[str, str]:
    return {name: str(value) for name, value in process.environment(settings).items()}
