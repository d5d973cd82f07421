"""Postgres capability: the platform's relational database, found by a stable name.

AWS: RDS PostgreSQL in private subnets, published in Cloud Map. Kubernetes: a StatefulSet of the
official postgres image on retained PersistentVolumeClaims, published as a Service.

Both realizations expose the same `PostgresConnection` (the service-discovery contract) and the
same grant: `grant_connect(peer)` (`PostgresService`). Each target's contract adds what its
clients need besides: on AWS the credentials-secret grant, the client egress rule and the
instance's CloudWatch metrics (`AwsPostgresContract`); on Kubernetes the server's name as a
plain string, roles with predefined memberships and backups into the archive
(`KubernetesPostgresContract`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from components.network import AwsPeer, Grant, KubernetesPeer, PeerT

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi

    from components.archive import Archive
    from components.observability import CloudWatchMetrics

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


@runtime_checkable
class AwsPostgresContract(PostgresService[AwsPeer], Protocol):
    """What the AWS capabilities use of Postgres (`RdsPostgres`)."""

    metrics: CloudWatchMetrics
    """`AWS/RDS` by `DBInstanceIdentifier`."""

    def grant_read_credentials(self, peer: AwsPeer, client: ClientDatabase) -> Grant:
        """Let `peer`'s role read `client`'s credentials secret."""
        ...

    def client_egress(self) -> dict[str, Any]:
        """The egress rule a client's security group needs toward Postgres."""
        ...


@runtime_checkable
class KubernetesPostgresContract(PostgresService[KubernetesPeer], Protocol):
    """What the Kubernetes capabilities use of Postgres (`KubernetesPostgres`)."""

    host: str
    """The Service's cluster DNS name as a plain string (chart values)."""
    port: int

    def add_database(
        self, client: str, database: str | None = None, *, member_of: tuple[str, ...] = ()
    ) -> ClientDatabase:
        """A login role `client` owning `database`, member of the predefined roles
        `member_of` (such as `pg_monitor`)."""
        ...

    def add_backups(self, archive: Archive[KubernetesPeer]) -> None:
        """Nightly dumps of every database into `archive`."""
        ...
