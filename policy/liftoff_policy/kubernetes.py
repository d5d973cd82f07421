"""Rules for the Kubernetes target, over the objects the platform declares.

Pod templates are found in every workload kind (Pod, Deployment, StatefulSet, DaemonSet,
ReplicaSet, ReplicationController, Job, CronJob, PodTemplate). Objects a Helm chart renders
are separate resources in a real preview and are checked like any other; the chart resource
itself (`kubernetes:helm.sh/v4:Chart`, a component) is checked on its `values` by the image
rules, which is all the mock harness can see of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .model import Resource, Violation, describe, get_path, is_unknown, violation

NAMESPACE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
HELM_CHARTS = frozenset({"kubernetes:helm.sh/v4:Chart", "kubernetes:helm.sh/v3:Release"})

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:core/v1:PodTemplate": ("template", "spec"),
    "kubernetes:core/v1:ReplicationController": ("spec", "template", "spec"),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# Pod Security Standards, "restricted" (Kubernetes 1.30): the only volume types allowed.
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})


def pod_spec(resource: Resource) -> tuple[str, Mapping[str, Any]] | None:
    """(path, pod spec) of a workload object, or None for other kinds."""
    path = POD_SPEC_PATHS.get(resource.type)
    if path is None:
        return None
    spec = get_path(resource.props, *path)
    if not isinstance(spec, Mapping):
        return None
    return ".".join(path), spec


def containers(spec: Mapping[str, Any], base: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, container) for every container of a pod spec, init and ephemeral included."""
    for kind in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(kind) or []):
            if isinstance(container, Mapping):
                yield f"{base}.{kind}[{index}]", container


def _name_of(resource: Resource) -> str:
    name = get_path(resource.props, "metadata", "name")
    return name if isinstance(name, str) else resource.name


def _namespace_of(resource: Resource) -> str:
    namespace = get_path(resource.props, "metadata", "namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


# --- Pod Security "restricted" ------------------------------------------------------------


def _check_container_security(
    resource: Resource, path: str, container: Mapping[str, Any], pod: Mapping[str, Any]
) -> list[str]:
    problems = []
    sc = container.get("securityContext") or {}
    pod_sc = pod.get("securityContext") or {}
    where = f"{path}.securityContext"

    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(
            violation(
                resource,
                f"{where}.allowPrivilegeEscalation",
                sc.get("allowPrivilegeEscalation"),
                "false",
            )
        )
    if sc.get("privileged") is True:
        problems.append(violation(resource, f"{where}.privileged", True, "false or unset"))
    drop = get_path(sc, "capabilities", "drop") or []
    if "ALL" not in drop:
        problems.append(
            violation(
                resource,
                f"{where}.capabilities.drop",
                get_path(sc, "capabilities", "drop"),
                'a list containing "ALL"',
            )
        )
    added = [c for c in (get_path(sc, "capabilities", "add") or []) if c != "NET_BIND_SERVICE"]
    if added:
        problems.append(
            violation(
                resource, f"{where}.capabilities.add", added, 'nothing but "NET_BIND_SERVICE"'
            )
        )
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        problems.append(
            violation(
                resource,
                f"{where}.runAsNonRoot",
                non_root,
                "true (here or in the pod's securityContext)",
            )
        )
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        problems.append(violation(resource, f"{where}.runAsUser", 0, "a non-zero UID"))
    seccomp = get_path(sc, "seccompProfile", "type") or get_path(pod_sc, "seccompProfile", "type")
    if seccomp not in SECCOMP_ALLOWED:
        problems.append(
            violation(
                resource,
                f"{where}.seccompProfile.type",
                seccomp,
                '"RuntimeDefault" or "Localhost" (here or in the pod\'s securityContext)',
            )
        )
    for index, port in enumerate(container.get("ports") or []):
        if isinstance(port, Mapping) and port.get("hostPort"):
            problems.append(
                violation(resource, f"{path}.ports[{index}].hostPort", port["hostPort"], "unset")
            )
    if sc.get("procMount") not in (None, "Default"):
        problems.append(violation(resource, f"{where}.procMount", sc["procMount"], '"Default"'))
    return problems


def pod_security_restricted(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """Every pod template meets Pod Security "restricted"; created namespaces enforce it."""
    if resource.type == NAMESPACE:
        labels = get_path(resource.props, "metadata", "labels") or {}
        level = labels.get("pod-security.kubernetes.io/enforce")
        if level != "restricted":
            return [
                violation(
                    resource,
                    'metadata.labels["pod-security.kubernetes.io/enforce"]',
                    level,
                    '"restricted"',
                )
            ]
        return []
    found = pod_spec(resource)
    if found is None:
        return []
    base, spec = found
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag) is True:
            problems.append(violation(resource, f"{base}.{flag}", True, "false or unset"))
    pod_sc = spec.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        problems.append(violation(resource, f"{base}.securityContext.runAsUser", 0, "non-zero"))
    if get_path(pod_sc, "seccompProfile", "type") == "Unconfined":
        problems.append(
            violation(
                resource,
                f"{base}.securityContext.seccompProfile.type",
                "Unconfined",
                '"RuntimeDefault" or "Localhost"',
            )
        )
    for index, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, Mapping):
            continue
        kinds = sorted(set(volume) - {"name"})
        bad = [k for k in kinds if k not in RESTRICTED_VOLUME_TYPES]
        if bad:
            problems.append(
                violation(
                    resource,
                    f"{base}.volumes[{index}] ({volume.get('name')})",
                    bad,
                    "only " + ", ".join(sorted(RESTRICTED_VOLUME_TYPES)) + " volumes",
                )
            )
    for path, container in containers(spec, base):
        problems.extend(_check_container_security(resource, path, container, spec))
    return problems


# --- requests and limits ------------------------------------------------------------------


def resources_set(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """Every container and init container requests and limits CPU and memory."""
    found = pod_spec(resource)
    if found is None:
        return []
    base, spec = found
    problems = []
    for path, container in containers(spec, base):
        if path.startswith(f"{base}.ephemeralContainers"):
            continue  # ephemeral containers may not set resources
        for section in ("requests", "limits"):
            for kind in ("cpu", "memory"):
                value = get_path(container, "resources", section, kind)
                if value in (None, "") and not is_unknown(value):
                    problems.append(
                        violation(
                            resource,
                            f"{path}.resources.{section}.{kind}",
                            value,
                            f"a {kind} {section[:-1]} for container {container.get('name')!r}",
                        )
                    )
    return problems


# --- images -------------------------------------------------------------------------------


def _chart_images(values: Any, path: str = "values") -> Iterator[tuple[str, str]]:
    """Image references in Helm values: `fullImageName`, `image: <ref>`, `{repository, tag}`."""
    if isinstance(values, Mapping):
        repository = values.get("repository")
        if isinstance(repository, str) and "://" not in repository and repository:
            tag = values.get("tag")
            digest = values.get("digest")
            if isinstance(digest, str) and digest:
                yield f"{path}.repository", f"{repository}@{digest}"
            else:
                ref = (
                    f"{repository}:{tag}"
                    if isinstance(tag, str | int) and tag != ""
                    else repository
                )
                yield f"{path}.repository", str(ref)
        for key, value in values.items():
            if key in ("fullImageName", "image") and isinstance(value, str) and value:
                yield f"{path}.{key}", value
            elif isinstance(value, Mapping | list):
                yield from _chart_images(value, f"{path}.{key}")
    elif isinstance(values, list):
        for index, item in enumerate(values):
            yield from _chart_images(item, f"{path}[{index}]")


def images(resource: Resource) -> list[tuple[str, str]]:
    """(path, image reference) of every image a resource runs."""
    if resource.type in HELM_CHARTS:
        return list(_chart_images(resource.props.get("values")))
    found = pod_spec(resource)
    if found is None:
        return []
    base, spec = found
    return [
        (f"{path}.image", container.get("image"))
        for path, container in containers(spec, base)
        if not is_unknown(container.get("image"))
    ]


def image_tag_problem(reference: Any) -> str | None:
    """Why an image reference is not pinned, or None when it is."""
    if not isinstance(reference, str) or not reference:
        return "no image"
    if "@sha256:" in reference:
        return None
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag (resolves to :latest)"
    tag = last.rsplit(":", 1)[1]
    if not tag:
        return "an empty tag"
    if tag == "latest":
        return "the :latest tag"
    return None


def images_pinned(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """No `:latest` or untagged images (a tag or a digest pins what runs)."""
    problems = []
    for path, reference in images(resource):
        reason = image_tag_problem(reference)
        if reason:
            problems.append(
                violation(
                    resource, path, reference, f"a pinned tag or @sha256 digest (found {reason})"
                )
            )
    return problems


def images_from_registry(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """Every image comes through the configured registry override (`registry` in config)."""
    registry = config.get("registry")
    if not isinstance(registry, str) or not registry.strip("/"):
        return []
    prefix = registry.strip("/") + "/"
    return [
        violation(resource, path, reference, f"an image under {prefix} (the registry override)")
        for path, reference in images(resource)
        if not (isinstance(reference, str) and reference.startswith(prefix))
    ]


# --- StatefulSet volumes ------------------------------------------------------------------


def statefulset_pvcs_retained(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """StatefulSets keep their PersistentVolumeClaims on delete and on scale-down.

    Unset fields are accepted: the API's default for both is Retain.
    """
    if resource.type != STATEFUL_SET or not get_path(
        resource.props, "spec", "volumeClaimTemplates"
    ):
        return []
    policy = get_path(resource.props, "spec", "persistentVolumeClaimRetentionPolicy") or {}
    problems = []
    for field in ("whenDeleted", "whenScaled"):
        value = policy.get(field) if isinstance(policy, Mapping) else None
        if value not in (None, "Retain") and not is_unknown(value):
            problems.append(
                violation(
                    resource,
                    f"spec.persistentVolumeClaimRetentionPolicy.{field}",
                    value,
                    '"Retain" (the data must outlive the StatefulSet)',
                )
            )
    return problems


# --- NetworkPolicies ----------------------------------------------------------------------


def _is_default_deny(policy: Resource) -> bool:
    spec = policy.props.get("spec") or {}
    selector = spec.get("podSelector")
    selects_all = (
        isinstance(selector, Mapping)
        and not selector.get("matchLabels")
        and not (selector.get("matchExpressions"))
    )
    types = set(spec.get("policyTypes") or [])
    return selects_all and {"Ingress", "Egress"} <= types


def namespaces_have_network_policy(
    resources: Sequence[Resource], config: Mapping[str, Any]
) -> list[Violation]:
    """Every namespace the platform creates or runs pods in has a default-deny NetworkPolicy.

    Default-deny: `podSelector: {}` with policyTypes Ingress and Egress; the platform's other
    NetworkPolicies then admit exactly the traffic each capability needs.
    """
    owners: dict[str, Resource] = {}
    for resource in resources:
        if resource.type == NAMESPACE:
            owners.setdefault(_name_of(resource), resource)
    for resource in resources:
        if pod_spec(resource) is not None:
            owners.setdefault(_namespace_of(resource), resource)
    policies = [r for r in resources if r.type == NETWORK_POLICY]
    findings = []
    for namespace, owner in sorted(owners.items()):
        here = [p for p in policies if _namespace_of(p) == namespace]
        if any(_is_default_deny(p) for p in here):
            continue
        found = ", ".join(sorted(_name_of(p) for p in here)) or "none"
        findings.append(
            Violation(
                f"namespace '{namespace}' (from {owner.label}) has no default-deny "
                f"NetworkPolicy (NetworkPolicies there: {found}); required: a NetworkPolicy with "
                "podSelector {} and policyTypes [Ingress, Egress] in every namespace the "
                "platform creates or runs pods in",
                owner.urn or None,
            )
        )
    return findings


# --- secrets in plain configuration -------------------------------------------------------

_SECRET_NAME = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|private[-_]?key|access[-_]?key|credential|"
    r"fernet|signing[-_]?key",
    re.IGNORECASE,
)
# Names that point at a secret rather than hold one (`POSTGRES_PASSWORD_FILE`, `..._SECRET_ARN`).
_REFERENCE_SUFFIX = re.compile(
    r"[-_.](file|path|arn|name|ref|dir|id|url|kind|type|mode|enabled)$", re.IGNORECASE
)
_SECRET_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a URL with a password", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
    (
        "an inline password/token assignment",
        re.compile(
            r"(?i)\b(password|passwd|secret|token)\b\s*[:=]\s*[\"']?(?![$\"'{<])[^\s\"',}]{4,}"
        ),
    ),
)


def secret_looking(name: str, value: Any) -> str | None:
    """Why a name/value pair looks like a credential in plain configuration, or None."""
    if isinstance(value, str):
        for reason, pattern in _SECRET_VALUES:
            if pattern.search(value):
                return f"the value contains {reason}"
    if value in (None, "") or is_unknown(value):
        return None
    if _SECRET_NAME.search(name) and not _REFERENCE_SUFFIX.search(name):
        return "the name says it holds a credential"
    return None


def _required_secret(where: str) -> str:
    return (
        f"no credentials in {where}: put the value in a Secret and reference it "
        "(env valueFrom.secretKeyRef, or a mounted Secret volume)"
    )


def no_secrets_in_plain_config(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """ConfigMaps and plain `env` values hold no passwords, tokens or keys."""
    problems = []
    if resource.type == CONFIG_MAP:
        for section in ("data", "binaryData"):
            for key, value in (resource.props.get(section) or {}).items():
                checked = value if section == "data" else "<binary>"
                reason = secret_looking(key, checked)
                if reason:
                    problems.append(
                        f"{resource.label}: {section}.{key} is {describe('<redacted>')} "
                        f"({reason}); required: {_required_secret('ConfigMaps')}"
                    )
        return problems
    found = pod_spec(resource)
    if found is None:
        return []
    base, spec = found
    for path, container in containers(spec, base):
        for index, entry in enumerate(container.get("env") or []):
            if not isinstance(entry, Mapping) or "value" not in entry:
                continue
            name = str(entry.get("name", ""))
            reason = secret_looking(name, entry.get("value"))
            if reason:
                problems.append(
                    f"{resource.label}: {path}.env[{index}] ({name}) value is "
                    f"{describe('<redacted>')} ({reason}); required: "
                    f"{_required_secret('plain env values')}"
                )
    return problems
