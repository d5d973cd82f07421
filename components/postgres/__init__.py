"""Postgres capability: the platform's relational database, found by a stable name.

AWS: RDS PostgreSQL in private subnets, published in Cloud Map. Kubernetes: a StatefulSet of the
official postgres image on retained PersistentVolumeClaims, published as a Service.

Both realizations expose the same `PostgresConnection` (the service-discovery contract) and the
same grant: `grant_connect(peer)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pulumi

from components.network import Grant, PeerT

PORT = 5432
# Pods carrying this label may connect to the Kubernetes Postgres (see README).
CLIENT_LABEL = {"liftoff.io/postgres-client": "true"}


@dataclass(frozen=True)
class PostgresConnection:
    """How a client reaches a Postgres database. Identical in shape on both targets."""

    host: pulumi.Output[str]
    """The server's address (RDS endpoint address / Service FQDN)."""
    port: pulumi.Output[int]
    database: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    """The stable discovery name; survives instance replacement."""
    username: pulumi.Output[str]
    password: pulumi.Output[str]
    """Always a Pulumi secret."""

    def public_view(self) -> pulumi.Output[dict]:
        """The connection without credentials, safe to export as a stack output."""
        return pulumi.Output.all(self.host, self.port, self.database, self.dns_name).apply(
            lambda values: {
                "host": values[0],
                "port": values[1],
                "database": values[2],
                "dnsName": values[3],
            }
        )


@dataclass(frozen=True)
class ClientDatabase:
    """A database and login role of its own for one client of the platform's Postgres.

    The client receives only its own credentials, never the admin password.
    """

    connection: PostgresConnection
    """Host/port/dns name of the server, the client's database, role and password (secret)."""
    ready: pulumi.Resource
    """The resource that creates the database; clients depend on it."""
    role: str
    """The client's login role (also the user name in `connection`)."""
    secret_name: str | None = None
    """Kubernetes: the Secret holding `username`, `password`, `database`, `host`, `port`."""
    secret_arn: pulumi.Output[str] | None = None
    """AWS: the Secrets Manager secret with the same fields (RDS secret JSON shape)."""


CLIENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")


def check_client_name(client: str, database: str) -> None:
    for label, value in (("client", client), ("database", database)):
        if not CLIENT_NAME.fullmatch(value):
            raise ValueError(
                f"{label} {value!r} is not allowed: lowercase letters, digits and '_', starting "
                "with a letter, at most 31 characters"
            )


# The stack output holding the deployed Postgres major version; the next update reads it back
# (a StackReference to the stack itself) to tell a major-version change from a fresh stack.
MAJOR_VERSION_OUTPUT = "postgresMajorVersion"
UPGRADE_PROCEDURE = "README.md, 'Postgres major version upgrade'"


def deployed_major_version(name: str, parent: pulumi.Resource) -> pulumi.Output[str | None]:
    """The major version this stack last deployed, or None on a stack that never ran."""
    own_stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    reference = pulumi.StackReference(
        f"{name}-deployed", stack_name=own_stack, opts=pulumi.ResourceOptions(parent=parent)
    )
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


@runtime_checkable
class PostgresService(Protocol[PeerT]):
    """What other capabilities use of Postgres, on either target (`RdsPostgres` takes an
    `AwsPeer`, `KubernetesPostgres` a `KubernetesPeer`)."""

    connection: PostgresConnection
    """The admin connection (the service-discovery contract)."""

    def grant_connect(self, peer: PeerT) -> Grant:
        """Admit `peer` to the Postgres port."""
        ...

    def add_database(self, client: str, database: str | None = None) -> ClientDatabase:
        """A login role `client` owning database `database` (default: `client`)."""
        ...
