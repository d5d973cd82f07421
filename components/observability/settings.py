"""`liftoff:observability`: alerts, dashboards and scraping for the signal contract, per target,
and how they are read from the stack."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.observability import THRESHOLDS, number_text
from components.validation import (
    DNS_LABEL,
    K8S_LABEL_KEY,
    K8S_LABEL_VALUE,
    ConfigReader,
    Problem,
    StackReading,
    reject_other_target,
)

# kube-prometheus-stack's Prometheus selects ServiceMonitors, PodMonitors and PrometheusRules
# by the label `release: <its Helm release name>` (its *SelectorNilUsesHelmValues defaults).
MONITOR_LABELS_NEEDED = (
    "with enabled: true, the labels your Prometheus selects ServiceMonitors, PodMonitors and "
    "PrometheusRules by; kube-prometheus-stack's default selector is `release: <its Helm "
    "release name>`, e.g. monitorLabels: {release: kube-prometheus-stack}; `{}` only if your "
    "Prometheus selects every object (serviceMonitorSelector: {})"
)
_SNS_ARN = r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}"


@dataclass(frozen=True)
class _ObservabilityCommon:
    """The keys both targets take."""

    enabled: bool = False
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """Overrides of the contract's defaults, by threshold key (see SIGNALS)."""

    def threshold(self, key: str) -> float:
        return self.thresholds.get(key, THRESHOLDS[key].default)


@dataclass(frozen=True)
class AwsObservabilitySettings(_ObservabilityCommon):
    """`liftoff:observability` on AWS: CloudWatch alarms, an SNS topic and a dashboard."""

    enabled: bool = True
    """Default: true (CloudWatch needs nothing installed)."""
    alarm_topic_arn: str | None = None
    """Send alarms to this SNS topic. Default: a new topic encrypted with the platform key."""


@dataclass(frozen=True)
class KubernetesObservabilitySettings(_ObservabilityCommon):
    """`liftoff:observability` on Kubernetes: Prometheus Operator objects and a dashboard."""

    enabled: bool = False
    """Default: false: it needs the Prometheus Operator's CRDs in the cluster."""
    monitoring_namespace: str = "monitoring"
    """Namespace of the Prometheus that scrapes the stack. Default: `monitoring`."""
    monitoring_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"}
    )
    """Labels of the Prometheus pods admitted to the metrics ports.
    Default: `app.kubernetes.io/name: prometheus` (the Prometheus Operator's own pod label)."""
    monitor_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels put on the ServiceMonitor/PodMonitor/PrometheusRule objects so the Prometheus
    selects them (kube-prometheus-stack: `release: <its release name>`). Required with
    `enabled: true` (`{}` for a Prometheus that selects every object)."""
    dashboard: bool = True
    """Grafana dashboard ConfigMap (sidecar label `grafana_dashboard: "1"`)."""


@dataclass(frozen=True)
class ObservabilitySettings:
    """`liftoff:observability` — alerts, dashboards and scraping for the signal contract: the
    chosen target's settings. A key of the other target is refused by construction
    (`reject_other_target`)."""

    aws: AwsObservabilitySettings | None = None
    kubernetes: KubernetesObservabilitySettings | None = None

    @property
    def enabled(self) -> bool:
        chosen = self.aws or self.kubernetes
        return chosen.enabled if chosen is not None else _ObservabilityCommon.enabled


def read_observability(stack: StackReading) -> ObservabilitySettings:
    reader = stack.reader("observability")
    thresholds = _read_thresholds(reader.object("thresholds"))
    if stack.target == "aws":
        reject_other_target(
            reader, KubernetesObservabilitySettings, AwsObservabilitySettings, "kubernetes"
        )
        topic = reader.string(
            "alarmTopicArn",
            pattern=_SNS_ARN,
            describe="an SNS topic ARN such as arn:aws:sns:eu-west-1:123456789012:alerts",
        )
        settings = ObservabilitySettings(
            aws=AwsObservabilitySettings(
                enabled=reader.boolean("enabled", True),
                thresholds=thresholds,
                alarm_topic_arn=topic,
            )
        )
        reader.finish()
        return settings
    defaults = KubernetesObservabilitySettings()
    reject_other_target(reader, AwsObservabilitySettings, KubernetesObservabilitySettings, "aws")
    namespace = (
        reader.string(
            "monitoringNamespace",
            defaults.monitoring_namespace,
            pattern=DNS_LABEL,
            describe="a namespace name (a DNS label)",
            max_length=63,
        )
        or defaults.monitoring_namespace
    )
    pod_labels = (
        reader.string_map("monitoringPodLabels", _check_label) or defaults.monitoring_pod_labels
    )
    enabled = reader.boolean("enabled", False)
    if enabled and not reader.has("monitorLabels"):
        # Without them the objects exist and nothing selects them: no alert ever fires.
        reader.missing("monitorLabels", MONITOR_LABELS_NEEDED)
    settings = ObservabilitySettings(
        kubernetes=KubernetesObservabilitySettings(
            enabled=enabled,
            thresholds=thresholds,
            monitoring_namespace=namespace,
            monitoring_pod_labels=dict(pod_labels),
            monitor_labels=reader.string_map("monitorLabels", _check_label),
            dashboard=reader.boolean("dashboard", True),
        )
    )
    reader.finish()
    return settings


def _check_label(key: str, value: str) -> str | None:
    if not re.fullmatch(K8S_LABEL_KEY, key) or len(key) > 316:
        return f"a Kubernetes label key (got key {key!r})"
    if not re.fullmatch(K8S_LABEL_VALUE, value):
        return "a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.'"
    return None


def _read_thresholds(reader: ConfigReader) -> dict[str, float]:
    values: dict[str, float] = {}
    for key, spec in THRESHOLDS.items():
        if not reader.has(key):
            continue
        raw = reader.data[key]
        reader._seen.add(key)
        bounds = f"{number_text(spec.minimum)} to {number_text(spec.maximum)}"
        allowed = f"a number from {bounds} ({spec.unit})"
        number = _to_number(raw)
        if number is None or not spec.minimum <= number <= spec.maximum:
            reader.problems.append(Problem(reader.key(key), raw, allowed))
            continue
        values[key] = number
    reader._seen.update(THRESHOLDS)  # so that an unknown key's message lists every known one
    reader.finish()
    return dict(sorted(values.items()))


def _to_number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return None
