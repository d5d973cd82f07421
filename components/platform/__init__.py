"""The whole platform for one stack: wires the capabilities for the configured target.

`aws.py` and `kubernetes.py` each assemble the same `PlatformParts` from the capabilities of
their target; `Platform` exports what both have in common plus each target's own outputs. Only
the chosen target's module is imported, so a Kubernetes stack never loads pulumi_aws (and an
AWS stack never needs a kubeconfig).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.config import PlatformConfig
from components.postgres import PostgresConnection
from components.postgres.major_version import MAJOR_VERSION_OUTPUT


@dataclass(frozen=True)
class Assembly:
    """What every capability of one stack shares: its config, the Platform as parent, and the
    options (the target's provider) every capability is created with."""

    name: str
    config: PlatformConfig
    parent: pulumi.Resource
    child: pulumi.ResourceOptions


@dataclass
class PlatformParts:
    """The capabilities a target builder assembled, the same on both targets."""

    network: Any
    postgres: Any
    stream: Any
    ingest: Any
    archive: Any | None
    """None on Kubernetes without an S3-compatible endpoint."""
    consumers: Any
    airflow: Any | None = None
    observability: Any | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    """The target's own stack outputs (its network, its archive, its alarms)."""


class Platform(pulumi.ComponentResource):
    """Every capability of one customer environment, as the root of the stack's resources."""

    outputs: dict[str, Any]

    def __init__(
        self, name: str, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:index:Platform", name, None, opts)
        self.config = config
        if config.target == "aws":
            from components.platform.aws import build
        else:
            from components.platform.kubernetes import build
        parts = build(self, name, config)
        # Escape hatches: every capability, as an attribute of the platform.
        self.parts = parts
        self.network, self.postgres, self.stream = parts.network, parts.postgres, parts.stream
        self.ingest, self.archive, self.consumers = parts.ingest, parts.archive, parts.consumers
        self.airflow, self.observability = parts.airflow, parts.observability
        self.outputs = {"target": config.target, **parts.outputs, **_common_outputs(parts, config)}
        self.register_outputs(self.outputs)


def _common_outputs(parts: PlatformParts, config: PlatformConfig) -> dict[str, Any]:
    outputs: dict[str, Any] = {
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
