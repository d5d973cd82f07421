"""`liftoff:observability`: each bad setting is refused before any resource exists."""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.validation import ConfigError


@pytest.mark.parametrize(
    ("target", "value", "message"),
    [
        ("aws", {"alarmTopicArn": "arn:aws:sqs:eu-west-1:1:q"}, "observability.alarmTopicArn"),
        ("aws", {"monitorLabels": {"a": "b"}}, "only with target 'kubernetes'"),
        (
            "kubernetes",
            {"alarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:x"},
            "only with target 'aws'",
        ),
        ("kubernetes", {"thresholds": {"ingestionErrorRatio": 2}}, "a number from 0 to 1 (ratio)"),
        ("kubernetes", {"thresholds": {"nope": 1}}, "known keys: backupMaxAgeHours"),
        ("kubernetes", {"monitoringNamespace": "Bad_NS"}, "a namespace name"),
        ("kubernetes", {"monitoringPodLabels": {"bad key!": "x"}}, "a Kubernetes label key"),
        ("kubernetes", {"enabled": "yes"}, "true or false"),
        # Prometheus would select none of the objects: no alert could fire.
        ("kubernetes", {"enabled": True}, "observability.monitorLabels: got nothing"),
        ("kubernetes", {"enabled": True}, "`release: <its Helm release name>`"),
    ],
)
def test_bad_observability_config_is_refused_before_any_resource(target, value, message):
    values = {"liftoff:target": target, "liftoff:observability": json.dumps(value)}
    if target == "aws":
        values["aws:region"] = "eu-west-1"
    with pytest.raises(ConfigError) as caught:
        load_config(values, project="liftoff", stack="dev")
    assert "liftoff:observability" in str(caught.value)
    assert message in str(caught.value)


def test_monitor_labels_may_be_empty_when_said_so():
    """`{}`: a Prometheus that selects every ServiceMonitor, PodMonitor and rule."""
    for value in ({"enabled": True, "monitorLabels": {}}, {"enabled": False}):
        values = {"liftoff:target": "kubernetes", "liftoff:observability": json.dumps(value)}
        load_config(values, project="liftoff", stack="dev")
