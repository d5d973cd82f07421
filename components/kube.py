"""Helpers shared by the Kubernetes realizations: labels, images, restricted security contexts.

Plain functions over plain dicts, so they can be tested without a Pulumi runtime and never
import a provider SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.network import KubernetesNetworkContract

PART_OF = "liftoff"
# Pods of the platform carry this label with their component name; NetworkPolicies select on it.
COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclass(frozen=True)
class StackContext:
    """What every Kubernetes capability of one stack shares, given once instead of as five
    loose arguments of every component."""

    stack: str
    tags: Mapping[str, str] = field(default_factory=dict)
    """Default: none. Added to every object's labels."""
    image_registry: str | None = None
    """Default: none (public registries). The mirror every image goes through (`image`)."""
    services_image: str = ""
    """The liftoff services image (jobs, collector, consumers); empty only in unit tests of
    components that run none."""
    storage_class: str | None = None
    """Default: the cluster's default StorageClass."""


@dataclass(frozen=True)
class CapabilityArgs:
    """What every Kubernetes capability built on the network takes first (its Args extend
    this): the stack's shared context and the network contract."""

    context: StackContext
    """The stack, its tags, the image registry, the services image and the storage class."""
    network: KubernetesNetworkContract
    """The stack's namespace: object metadata, the default deny, NetworkPolicy pairs."""


def labels(component: str, stack: str, tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """Recommended Kubernetes labels plus the stack's tags (the well-known labels win)."""
    merged = dict(sorted((tags or {}).items()))
    merged.update(
        {
            "app.kubernetes.io/name": component,
            "app.kubernetes.io/instance": stack,
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": "pulumi",
            COMPONENT_LABEL: component,
        }
    )
    return merged


def selector(component: str, stack: str) -> dict[str, str]:
    """The stable subset of labels used in selectors (selectors are immutable once created)."""
    return {"app.kubernetes.io/instance": stack, COMPONENT_LABEL: component}


@dataclass(frozen=True)
class ImageReference:
    """`<registry host>/<repository path>[:<tag>]`, the one parser of image references."""

    host: str
    path: str
    """The repository path without the registry host (`library/postgres`)."""
    tag: str | None

    @classmethod
    def parse(cls, reference: str, *, qualified: bool = True) -> ImageReference:
        """`qualified=False` accepts a reference without a registry host (host "")."""
        host, _, rest = reference.partition("/")
        if not rest or ("." not in host and ":" not in host and host != "localhost"):
            if qualified:
                raise ValueError(f"image reference {reference!r} must start with its registry host")
            host, rest = "", reference
        path, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:  # no tag: the colon (if any) belonged to nothing
            return cls(host, rest, None)
        return cls(host, path, tag)

    @property
    def name(self) -> str:
        """The reference without its tag, as written."""
        return f"{self.host}/{self.path}" if self.host else self.path

    def repository(self, registry: str | None = None) -> str:
        """The repository (no tag) through the registry override; Docker Hub's host is left
        implicit, as charts write it."""
        if registry:
            return f"{registry.rstrip('/')}/{self.path}"
        return self.path if self.host == "docker.io" else f"{self.host}/{self.path}"


def image(reference: str, registry: str | None) -> str:
    """Route an image through the registry override.

    `reference` is fully qualified (`docker.io/library/postgres:17.7`). A mirror replaces the
    registry host and keeps the repository path, the layout pull-through caches use:
    `registry.corp.example/mirror/library/postgres:17.7`.
    """
    parsed = ImageReference.parse(reference)
    if not parsed.path or not parsed.tag or parsed.tag == "latest":
        raise ValueError(f"image reference {reference!r} must carry a pinned tag (not latest)")
    if not registry:
        return reference
    return f"{registry.rstrip('/')}/{parsed.path}:{parsed.tag}"


def pod_security_context(uid: int, gid: int | None = None) -> dict[str, Any]:
    """Pod-level settings of the Pod Security "restricted" profile."""
    gid = uid if gid is None else gid
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool = True) -> dict[str, Any]:
    """Container-level settings of the Pod Security "restricted" profile."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def service_dns_name(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


# The UID the liftoff services image runs as (services/Dockerfile).
SERVICES_UID = 10001


def services_pod_spec(
    containers: list[dict[str, Any]],
    *,
    volumes: list[dict[str, Any]] | None = None,
    restart_policy: str | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A restricted pod spec for containers of the liftoff services image.

    Adds a writable /tmp (the root filesystem is read-only) and never mounts an API token:
    no service of the platform talks to the Kubernetes API.
    """
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(SERVICES_UID),
        "containers": [
            {
                **container,
                "securityContext": container_security_context(),
                "volumeMounts": [
                    *container.get("volumeMounts", []),
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
            for container in containers
        ],
        "volumes": [*(volumes or []), {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec


# A one-shot setup job of the services image (stream, client databases) needs very little.
SETUP_JOB_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "250m", "memory": "128Mi"},
}


def setup_job_spec(
    labels: Mapping[str, str],
    container: dict[str, Any],
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The spec of an idempotent setup Job of the services image: retried, bounded in time."""
    return {
        "backoffLimit": 10,
        "activeDeadlineSeconds": 900,
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": services_pod_spec(
                [{**container, "resources": SETUP_JOB_RESOURCES}],
                volumes=volumes,
                restart_policy="OnFailure",
            ),
        },
    }


def secret_volume(name: str, secret_name: str) -> dict[str, Any]:
    """A pod volume of a Secret's keys as files, readable by the pod's group only."""
    return {"name": name, "secret": {"secretName": secret_name, "defaultMode": 0o440}}


def env(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Plain environment variables, sorted by name (stable inputs)."""
    return [{"name": name, "value": values[name]} for name in sorted(values)]
