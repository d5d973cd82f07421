"""`liftoff:postgres`: the platform Postgres's settings and how they are read from the stack."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.validation import ComputeResources, ConfigReader, Target, read_resources

# Postgres major versions offered on both targets, with the exact image tag the Kubernetes
# target runs (pinned, so a redeploy never silently changes the server binary). RDS takes the
# major version and applies minor upgrades itself.
POSTGRES_IMAGE_TAGS: dict[str, str] = {"15": "15.15", "16": "16.11", "17": "17.7"}


DEFAULT_POSTGRES_VERSION = "17"


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


def read_postgres(
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
        resources = read_resources(reader.object("resources"), defaults.resources)
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
