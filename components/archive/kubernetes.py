"""The archive on Kubernetes: the customer's S3-compatible endpoint, credentials in a Secret."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.archive import CREDENTIALS_DIR, CREDENTIALS_FILE, ArchiveClient, ArchiveLocation
from components.archive.settings import KubernetesArchiveSettings
from components.network import Grant, KubernetesPeer
from services.archive.contract import ArchiveAccess

SECRET_NAME = "archive-credentials"


@dataclass(frozen=True)
class ExternalArchiveArgs(kube.CapabilityArgs):
    settings: KubernetesArchiveSettings


class ExternalArchive(pulumi.ComponentResource):
    """An S3-compatible bucket outside liftoff's control; liftoff keeps its credentials
    (a Secret holding an AWS shared-credentials file) and opens the way to it.
    """

    def __init__(
        self, name: str, args: ExternalArchiveArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:archive:ExternalArchive", name, None, opts)
        settings = args.settings
        self.settings = settings
        self._name = name
        self._network = args.network
        self.labels = kube.labels("archive", args.context.stack, args.context.tags)
        endpoint = urlsplit(settings.endpoint or "")
        self.port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        self.secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=args.network.metadata(SECRET_NAME, self.labels),
            type="Opaque",
            # The AWS SDKs' shared-credentials format: mounted as a file, read by boto3 via
            # AWS_SHARED_CREDENTIALS_FILE, never passed through the environment.
            string_data={
                CREDENTIALS_FILE: pulumi.Output.secret(
                    "[default]\n"
                    f"aws_access_key_id = {settings.access_key_id or ''}\n"
                    f"aws_secret_access_key = {settings.secret_access_key or ''}\n"
                )
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.network.default_deny]),
        )
        self.secret_name = SECRET_NAME
        self.location = ArchiveLocation(
            bucket=pulumi.Output.from_input(settings.bucket_name or ""),
            region=pulumi.Output.from_input(settings.region),
            endpoint=settings.endpoint,
        )
        self.register_outputs({"endpoint": settings.endpoint, "bucket": settings.bucket_name})

    def _allow(self, peer: KubernetesPeer, role: str) -> Grant:
        if not peer.pod_labels:
            raise ValueError(f"{role}({peer.name!r}) on Kubernetes needs the peer's pod labels")
        # The endpoint may be outside the cluster (an IP range) or a Service inside it.
        policy = k8s.networking.v1.NetworkPolicy(
            f"{self._name}-{role.removeprefix('grant_')}-{peer.name}",
            metadata=self._network.metadata(f"archive-from-{peer.name}", self.labels),
            spec={
                "podSelector": {"matchLabels": dict(peer.pod_labels)},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"namespaceSelector": {}}],
                        "ports": [{"protocol": "TCP", "port": self.port}],
                    }
                ],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        return Grant(peer.name, (policy,))

    def grant_write(self, peer: KubernetesPeer) -> Grant:
        """Let `peer`'s pods reach the endpoint (credentials come from `secret_name`)."""
        return self._allow(peer, "grant_write")

    def grant_read(self, peer: KubernetesPeer) -> Grant:
        return self._allow(peer, "grant_read")

    def client(self, peer: KubernetesPeer | None = None, *, write: bool = False) -> ArchiveClient:
        """The environment, credentials Secret and (when `peer` is given) network path a
        workload needs: reading, or writing with `write`."""
        grant = None
        if peer is not None:
            grant = (self.grant_write if write else self.grant_read)(peer)
        return ArchiveClient(
            access=ArchiveAccess(
                bucket=self.settings.bucket_name,
                endpoint=self.settings.endpoint,
                region=self.settings.region,
                credentials_file=f"{CREDENTIALS_DIR}/{CREDENTIALS_FILE}",
            ),
            secret_name=self.secret_name,
            grant=grant,
        )
