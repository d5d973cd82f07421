"""The whole platform for one stack: wires the capabilities for the configured target.

`aws.py` and `kubernetes.py` each assemble the same `PlatformParts` from the capabilities of
their target; `Platform` exports what both have in common plus each target's own outputs. Only
the chosen target's module is imported, so a Kubernetes stack never loads pulumi_aws (and an
AWS stack never needs a kubeconfig).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pulumi

from components.airflow import Airflow
from components.archive import Archive
from components.config import PlatformConfig
from components.consumers import Consumers
from components.ingest import Ingest
from components.network import AwsPeer, KubernetesPeer, Network
from components.postgres import PostgresConnection, PostgresService
from components.postgres.major_version import MAJOR_VERSION_OUTPUT
from components.stream import Stream

P = TypeVar("P", AwsPeer, KubernetesPeer)
"""The target's peer type: what the capabilities' grants take."""


@dataclass(frozen=True)
class Assembly:
    """What every capability of one stack shares: its config, the Platform as parent, and the
    options (the target's provider) every capability is created with."""

    name: str
    config: PlatformConfig
    parent: pulumi.Resource
    child: pulumi.ResourceOptions


@dataclass
class PlatformParts(Generic[P]):
    """The capabilities a target builder assembled, typed with their target-neutral contracts
    (each target's builder narrows them to its own: `AwsParts`, `KubernetesParts`)."""

    network: Network
    postgres: PostgresService[P]
    stream: Stream[P]
    ingest: Ingest
    archive: Archive[P] | None
    """None on Kubernetes without an S3-compatible endpoint."""
    consumers: Consumers
    airflow: Airflow | None = None
    observability: pulumi.ComponentResource | None = None
    """A leaf: no capability uses it (its realizations name their own outputs)."""
    outputs: dict[str, object] = field(default_factory=dict)
    """The target's own stack outputs (its network, its archive, its alarms)."""


class Platform(pulumi.ComponentResource):
    """Every capability of one customer environment, as the root of the stack's resources."""

    outputs: dict[str, object]

    def __init__(
        self, name: str, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:index:Platform", name, None, opts)
        self.config = config
        parts: PlatformParts[AwsPeer] | PlatformParts[KubernetesPeer]
        if config.target == "aws":
            from components.platform import aws

            parts = aws.build(self, name, config)
        else:
            from components.platform import kubernetes

            parts = kubernetes.build(self, name, config)
        # Escape hatches: every capability, as an attribute of the platform.
        self.parts = parts
        self.network, self.postgres, self.stream = parts.network, parts.postgres, parts.stream
        self.ingest, self.archive, self.consumers = parts.ingest, parts.archive, parts.consumers
        self.airflow, self.observability = parts.airflow, parts.observability
        self.outputs = {"target": config.target, **parts.outputs, **_common_outputs(parts, config)}
        self.register_outputs(self.outputs)


def _common_outputs(
    parts: PlatformParts[AwsPeer] | PlatformParts[KubernetesPeer], config: PlatformConfig
) -> dict[str, object]:
    outputs: dict[str, object] = {
        "postgres": public_view(parts.postgres.connection),
        # Read back on the next update to refuse (Kubernetes) or allow (RDS) a major change.
        MAJOR_VERSION_OUTPUT: config.postgres.version,
        "stream": pulumi.Output.all(
            parts.stream.connection.url, parts.stream.connection.name
        ).apply(lambda values: {"url": values[0], "name": values[1]}),
        "collectorUrl": parts.ingest.endpoint.collector_url,
        "writeKeys": parts.ingest.endpoint.write_keys,
    }
    if parts.airflow is not None:
        outputs["airflowUrl"] = parts.airflow.endpoint.url
    if parts.consumers.warehouse is not None:
        outputs["warehouse"] = public_view(parts.consumers.warehouse.connection)
    return outputs


def public_view(connection: PostgresConnection) -> pulumi.Output[dict[str, Any]]:
    """A Postgres connection without its credentials, safe to export as a stack output."""
    return pulumi.Output.all(
        connection.host, connection.port, connection.database, connection.dns_name
    ).apply(
        lambda values: {
            "host": values[0],
            "port": values[1],
            "database": values[2],
            "dnsName": values[3],
        }
    )
