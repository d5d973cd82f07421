"""The Postgres major version a stack's data was written by, and the changes it allows.

The program exports the configured major as a stack output; the next update reads it back
through a StackReference to the stack itself, to tell a major-version change from a fresh stack.
"""

from __future__ import annotations

import pulumi

# The stack output holding the deployed Postgres major version; the next update reads it back
# (a StackReference to the stack itself) to tell a major-version change from a fresh stack.
MAJOR_VERSION_OUTPUT = "postgresMajorVersion"
UPGRADE_PROCEDURE = "README.md, 'Postgres major version upgrade'"


def deployed_major_version(reference: pulumi.StackReference) -> pulumi.Output[str | None]:
    """The major version this stack last deployed (`reference`: the stack itself, see
    components.deployed.own_stack), or None on a stack that never ran."""
    return reference.get_output(MAJOR_VERSION_OUTPUT).apply(lambda v: str(v) if v else None)


class MajorVersionChange(ValueError):
    """liftoff:postgres.version names another major than the one holding the stack's data."""


def check_major_version(
    deployed: str | None,
    configured: str,
    *,
    upgrade_in_place: bool,
    migrated_from: str | None = None,
) -> None:
    """Refuse what the server cannot do with its data: any major change where the data
    directory is reused (Kubernetes) unless the operator states it was migrated
    (`majorUpgradeFrom`, after the documented procedure), a downgrade anywhere."""
    if deployed is None or deployed == configured:
        return
    if migrated_from is not None and migrated_from == deployed:
        return
    if upgrade_in_place and int(configured) > int(deployed):
        return
    how = (
        "RDS upgrades a major version in place but never downgrades one"
        if upgrade_in_place
        else f"PostgreSQL {configured} cannot open a data directory initialized by "
        f"{deployed}; a major upgrade is a data migration"
    )
    raise MajorVersionChange(
        f"liftoff:postgres.version: got {configured!r}; allowed: {deployed!r}, the major "
        f"version holding this stack's data ({how}). To change it, follow {UPGRADE_PROCEDURE} "
        "(dump and restore through the backup job, or pg_upgrade), then set the new version."
    )
