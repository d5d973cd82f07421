"""Archive capability: where the archiver keeps every event, as gzip NDJSON on S3.

AWS: a private, versioned, KMS-encrypted S3 bucket with a lifecycle. Kubernetes: any
S3-compatible endpoint the customer runs (MinIO, Ceph RGW, ...), reached with credentials
kept in a Secret.

Both satisfy `Archive`: an `ArchiveLocation`, `grant_write(peer)` / `grant_read(peer)`, and
`client(peer)`, which hands a workload everything it needs to use the archive at once: the
environment the services read, on Kubernetes the credentials Secret to mount, and the grant.
Its `settings` are how the archiver batches, on either target; on Kubernetes the contract
(`KubernetesArchiveContract`) adds the endpoint's settings, which Airflow's remote logging and
the reconciliation DAG's pods name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from components.archive.settings import ArchiveBatching, KubernetesArchiveSettings
from components.network import Grant, KubernetesPeer, PeerT
from services.archive.contract import ArchiveAccess
from services.contract import environment

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi

CREDENTIALS_DIR = "/etc/liftoff/archive"
"""Where a client's pods mount the archive's credentials Secret."""
CREDENTIALS_FILE = "credentials"
"""The Secret's key: an AWS shared-credentials file (boto3's AWS_SHARED_CREDENTIALS_FILE)."""


@dataclass(frozen=True)
class ArchiveLocation:
    bucket: pulumi.Output[str]
    region: pulumi.Output[str]
    endpoint: str | None = None
    """The S3-compatible endpoint URL; None on AWS (the regional S3 endpoint)."""


@dataclass(frozen=True)
class ArchiveClient:
    """What one workload needs to use the archive (the result of `client(peer)`).

    `access` is what the services read (`services.archive.contract.ArchiveAccess`: the bucket,
    and on Kubernetes the S3-compatible endpoint, region and credentials file, which Airflow's
    S3 logging reads too); `environment` is it as variables. `secret_name`, when set, is the
    Secret to mount read-only at `CREDENTIALS_DIR` (`volume` / `mount`). `grant`, when
    `client(peer)` made one, is the access the workload waits for.
    """

    access: ArchiveAccess[pulumi.Input[str]]
    secret_name: str | None = None
    grant: Grant | None = None

    @property
    def ready(self) -> tuple[pulumi.Resource, ...]:
        """What the client's workload waits for: the grant's resources (none without one)."""
        return self.grant.resources if self.grant is not None else ()

    @property
    def environment(self) -> dict[str, pulumi.Input[str]]:
        return environment(self.access)

    def volume(self, name: str) -> dict[str, Any]:
        assert self.secret_name is not None, "this archive has no credentials Secret"
        return {"name": name, "secret": {"secretName": self.secret_name, "defaultMode": 0o440}}

    def mount(self, name: str) -> dict[str, Any]:
        return {"name": name, "mountPath": CREDENTIALS_DIR, "readOnly": True}

    def secret_file(self, name: str) -> tuple[str, str, str]:
        """(volume name, Secret name, mount directory), as consumers take secret files."""
        assert self.secret_name is not None, "this archive has no credentials Secret"
        return (name, self.secret_name, CREDENTIALS_DIR)


@runtime_checkable
class Archive(Protocol[PeerT]):
    """What other capabilities use of the archive, on either target (`ArchiveBucket` takes an
    `AwsPeer`, `ExternalArchive` a `KubernetesPeer`)."""

    location: ArchiveLocation

    @property
    def settings(self) -> ArchiveBatching:
        """How the archiver batches (the keys of `liftoff:archive` both targets take)."""
        ...

    def grant_write(self, peer: PeerT) -> Grant:
        """Let `peer` write (and overwrite) archive objects."""
        ...

    def grant_read(self, peer: PeerT) -> Grant:
        """Let `peer` read archive objects."""
        ...

    def client(self, peer: PeerT | None = None, *, write: bool = False) -> ArchiveClient:
        """What a workload needs to use the archive; with `peer`, also its grant."""
        ...


@runtime_checkable
class KubernetesArchiveContract(Archive[KubernetesPeer], Protocol):
    """The archive on Kubernetes (`ExternalArchive`): the customer's endpoint."""

    @property
    def settings(self) -> KubernetesArchiveSettings:
        """The endpoint, bucket and region (and how the archiver batches)."""
        ...
