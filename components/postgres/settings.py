"""`liftoff:postgres`: the platform Postgres's settings and how they are read from the stack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from components.validation import (
    ComputeResources,
    ConfigReader,
    StackReading,
    Target,
    read_resources,
)

# Postgres major versions offered on both targets, with the exact image tag the Kubernetes
# target runs (pinned, so a redeploy never silently changes the server binary). RDS takes the
# major version and applies minor upgrades itself.
POSTGRES_IMAGE_TAGS: dict[str, str] = {"15": "15.15", "16": "16.11", "17": "17.7"}


DEFAULT_POSTGRES_VERSION = "17"


@dataclass(frozen=True)
class _PostgresCommon:
    """The keys both targets take."""

    version: str = DEFAULT_POSTGRES_VERSION
    """Default: `17`. A major version: 15, 16 or 17."""
    storage_gb: int = 20
    """Default: 20. Allocated storage (AWS: gp3, 20..65536) / PVC size (Kubernetes, 1..65536)."""
    backup_retention_days: int = 7
    """Default: 7 (1..35). AWS: RDS automated backups. Kubernetes: nightly `pg_dump`s kept in
    the archive (needs `liftoff:archive`)."""
    deletion_protection: bool = True
    """Default: `liftoff:deletionProtection` (true). AWS: RDS deletion protection and a final
    snapshot; Kubernetes: the namespace and volumes are retained when the stack is destroyed."""
    database: str = "liftoff"
    """The admin database name; fixed."""
    username: str = "liftoff"
    """The admin user name; fixed."""


@dataclass(frozen=True)
class AwsPostgresSettings(_PostgresCommon):
    """`liftoff:postgres` on AWS: RDS PostgreSQL."""

    instance_class: str = "db.t4g.small"
    """Default: `db.t4g.small`."""
    high_availability: bool = False
    """Default: false. Multi-AZ standby."""
    apply_immediately: bool = False
    """Default: false. Apply instance changes (a major version upgrade included) now instead
    of in the next maintenance window."""


@dataclass(frozen=True)
class KubernetesPostgresSettings(_PostgresCommon):
    """`liftoff:postgres` on Kubernetes: a StatefulSet of the official image."""

    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("250m", "512Mi", "1", "1Gi")
    )
    """Default: requests 250m CPU / 512Mi, limits 1 CPU / 1Gi."""
    backup_schedule: str = "17 3 * * *"
    """Default: 03:17 UTC daily. Cron schedule of the backup job."""
    major_upgrade_from: str | None = None
    """Default: none. The major version this stack ran before `version`, set once the data
    was moved by the documented upgrade procedure (README)."""
    storage_resized_from: int | None = None
    """Default: none. The `storageGb` this stack had before, set once its volume was grown
    and its StatefulSet removed by the documented procedure (README, 'Resizing a volume')."""

    @property
    def image_tag(self) -> str:
        return POSTGRES_IMAGE_TAGS[self.version]


@dataclass(frozen=True)
class PostgresSettings:
    """`liftoff:postgres` — the platform's Postgres: the chosen target's settings. A key of
    the other target is refused with its reason (read in the order of the keys' checks, so a
    report with several problems reads as before the split)."""

    aws: AwsPostgresSettings | None = None
    """Set on AWS (RDS)."""
    kubernetes: KubernetesPostgresSettings | None = None
    """Set on Kubernetes (a StatefulSet)."""

    @property
    def version(self) -> str:
        """The major version on either target (exported: the next update reads it back)."""
        chosen = self.aws or self.kubernetes
        return chosen.version if chosen is not None else DEFAULT_POSTGRES_VERSION


def read_postgres(stack: StackReading, *, deletion_protection: bool = True) -> PostgresSettings:
    """`liftoff:postgres`, each key checked in one fixed order whatever the target (a key of
    the other target is refused where its check stands), then the chosen target's settings."""
    reader, target = stack.reader("postgres"), stack.target
    version = reader.string(
        "version", DEFAULT_POSTGRES_VERSION, choices=sorted(POSTGRES_IMAGE_TAGS)
    )
    storage = reader.integer(
        "storageGb", _PostgresCommon.storage_gb, minimum=20 if target == "aws" else 1, maximum=65536
    )
    instance_class, resources = _read_size(reader, target)
    backup_schedule = _read_backup_schedule(reader, target)
    apply_immediately, major_upgrade_from = _read_upgrades(reader, target, version)
    resized_from = _read_resized_from(reader, target)
    high_availability = reader.boolean("highAvailability", AwsPostgresSettings.high_availability)
    common = _PostgresCommon(
        version=version or DEFAULT_POSTGRES_VERSION,
        storage_gb=storage,
        backup_retention_days=reader.integer(
            "backupRetentionDays", _PostgresCommon.backup_retention_days, minimum=1, maximum=35
        ),
        deletion_protection=reader.boolean("deletionProtection", deletion_protection),
    )
    reader.finish()
    shared = {f.name: getattr(common, f.name) for f in dataclasses.fields(common)}
    if target == "aws":
        aws = AwsPostgresSettings(
            **shared,
            instance_class=instance_class,
            high_availability=high_availability,
            apply_immediately=apply_immediately,
        )
        return PostgresSettings(aws=aws)
    if target == "kubernetes":
        kubernetes = KubernetesPostgresSettings(
            **shared,
            resources=resources,
            backup_schedule=backup_schedule,
            major_upgrade_from=major_upgrade_from,
            storage_resized_from=resized_from,
        )
        return PostgresSettings(kubernetes=kubernetes)
    return PostgresSettings()


def _read_size(reader: ConfigReader, target: Target | None) -> tuple[str, ComputeResources]:
    """The RDS instance class on AWS, the server's resources on Kubernetes."""
    instance_class = AwsPostgresSettings.instance_class
    resources = KubernetesPostgresSettings().resources
    if target == "aws":
        instance_class = (
            reader.string(
                "instanceClass",
                instance_class,
                pattern=r"db\.[a-z0-9]+\.[a-z0-9]+",
                describe="an RDS instance class such as db.t4g.small or db.r7g.large",
            )
            or instance_class
        )
        reader.reject("resources", "only with target 'kubernetes' (AWS uses instanceClass)")
    elif target == "kubernetes":
        resources = read_resources(reader.object("resources"), resources)
        reader.reject("instanceClass", "only with target 'aws' (Kubernetes uses resources)")
        reader.reject("highAvailability", "only with target 'aws' (RDS Multi-AZ)")
    return instance_class, resources


def _read_backup_schedule(reader: ConfigReader, target: Target | None) -> str:
    """Kubernetes runs its own backups (RDS schedules its own)."""
    default = KubernetesPostgresSettings.backup_schedule
    if target != "kubernetes":
        reader.reject("backupSchedule", "only with target 'kubernetes' (RDS schedules its own)")
        return default
    return (
        reader.string(
            "backupSchedule",
            default,
            pattern=r"(\S+\s+){4}\S+",
            describe="a cron schedule of five fields, e.g. '17 3 * * *'",
        )
        or default
    )


def _read_upgrades(
    reader: ConfigReader, target: Target | None, version: str | None
) -> tuple[bool, str | None]:
    """How a major upgrade is applied: RDS in place (`applyImmediately`), Kubernetes after the
    documented migration (`majorUpgradeFrom`)."""
    if target == "aws":
        apply_immediately = reader.boolean("applyImmediately", False)
        reader.reject("majorUpgradeFrom", "only with target 'kubernetes' (RDS upgrades in place)")
        return apply_immediately, None
    reader.reject("applyImmediately", "only with target 'aws' (RDS maintenance windows)")
    major_upgrade_from = reader.string("majorUpgradeFrom", choices=sorted(POSTGRES_IMAGE_TAGS))
    if major_upgrade_from and version and int(major_upgrade_from) >= int(version):
        reader.problem(
            "majorUpgradeFrom",
            major_upgrade_from,
            f"an older major than version ({version}): the one the data was migrated from",
        )
    return False, major_upgrade_from


def _read_resized_from(reader: ConfigReader, target: Target | None) -> int | None:
    """The size a Kubernetes volume was grown from by the resize procedure (RDS grows its
    storage in place)."""
    if target == "aws":
        reader.reject("storageResizedFrom", "only with target 'kubernetes' (RDS resizes in place)")
        return None
    return reader.optional_integer("storageResizedFrom", minimum=1, maximum=65536)
