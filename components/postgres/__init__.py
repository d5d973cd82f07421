"""Postgres capability: the platform's relational database, found by a stable name.

AWS: RDS PostgreSQL in private subnets, published in Cloud Map. Kubernetes: a StatefulSet of the
official postgres image on retained PersistentVolumeClaims, published as a Service.

Both realizations expose the same `PostgresConnection` (the service-discovery contract) and the
same grant: `grant_connect(peer)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

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
