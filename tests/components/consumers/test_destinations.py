"""`liftoff:destinations` against the broadcaster's own registry of destination types
(services/consumers/broadcaster/destinations.py): every field a type has is accepted by the
stack's validation and reaches the broadcaster, through the environment, as it was set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.config import ConfigError, load_config
from components.consumers import destination_document
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.broadcaster.destinations import TYPES
from services.consumers.broadcaster.settings import BroadcasterConfig
from services.consumers.runner.contract import ConsumerRuntime
from services.stream.contract import StreamAccess
from tests.harness import run_program
from tests.runtime_workloads import kubernetes_workloads, lambda_workloads, loaded, problems

EXAMPLES = {
    "url": "https://hooks.example.com/liftoff",
    "region": "eu",
    "groupKey": "company_id",
    "groupType": "company",
    "measurementId": "G-ABC123DEF4",
}
"""A valid value of every setting of every type (a new field needs one here)."""
BUILT = {
    "webhook": lambda d: {"url": d.url},
    "mixpanel": lambda d: {"region": "eu" if "eu" in d.base else "us", "groupKey": d.group_key},
    "amplitude": lambda d: {"region": "eu" if ".eu." in d.url else "us", "groupType": d.group_type},
    "ga4": lambda d: {
        "measurementId": d.url.split("measurement_id=")[1].split("&")[0],
        "region": "eu" if "region1" in d.url else "us",
    },
}
"""What each built destination type kept of its settings."""


def load_destinations(entries: list[dict[str, Any]]) -> Any:
    values = {
        "liftoff:target": "kubernetes",
        "liftoff:sources": json.dumps([{"name": "web"}]),
        "liftoff:destinations": json.dumps(entries),
    }
    return load_config(
        values, project="liftoff", stack="dev", secret_keys={"liftoff:destinations"}
    ).destinations


def entry(kind: str, name: str) -> dict[str, Any]:
    fields = {f.name: EXAMPLES[f.name] for f in TYPES[kind].settings}
    return {"name": name, "type": kind, **fields, TYPES[kind].secret.name: f"secret-{name}"}


def test_every_setting_of_every_type_has_an_example_and_a_check_of_what_it_builds():
    assert {f.name for kind in TYPES.values() for f in kind.settings} <= set(EXAMPLES)
    assert set(BUILT) == set(TYPES)


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_every_field_is_accepted_and_reaches_the_broadcaster(kind: str, tmp_path: Path) -> None:
    (destination,) = load_destinations([entry(kind, f"to-{kind}")])
    assert destination.settings == {f.name: EXAMPLES[f.name] for f in TYPES[kind].settings}
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps(destination.secrets))
    settings = broadcaster.BroadcasterSettings(
        runtime=ConsumerRuntime(stream=StreamAccess(url="nats://nats:4222/EVENTS")),
        broadcast=broadcaster.Broadcast(
            destination=destination_document(destination), secrets_file=str(secrets)
        ),
    )
    env = broadcaster.PROCESS.environment(settings)
    config = BroadcasterConfig.load(broadcaster.parse(env).broadcast)
    built = config.destination.build(config.secret)
    assert BUILT[kind](built) == destination.settings


def test_the_group_and_region_settings_of_issue_17_are_accepted():
    """Refused by `load_config` before the registry, though the broadcaster supported them."""
    found = load_destinations(
        [
            {**entry("mixpanel", "mp"), "groupKey": "company_id"},
            {**entry("amplitude", "amp"), "groupType": "company"},
            {**entry("ga4", "ga"), "region": "eu"},
        ]
    )
    settings = {d.name: d.settings for d in found}
    assert settings["mp"]["groupKey"] == "company_id"
    assert settings["amp"]["groupType"] == "company"
    assert settings["ga"]["region"] == "eu"


def test_a_field_of_another_type_is_refused_with_the_key():
    with pytest.raises(ConfigError) as caught:
        load_destinations([{**entry("webhook", "hook"), "groupKey": "company_id"}])
    assert "liftoff:destinations[0].groupKey" in str(caught.value)


def test_names_the_broadcaster_and_kubernetes_could_not_use_are_refused():
    """`broadcaster-<name>` is the durable consumer (at most 64 characters) and names
    Kubernetes objects (no `_`): the registry's name grammar, for the stack and the runtime."""
    for name in ("my_hook", "h" * 53):
        with pytest.raises(ConfigError) as caught:
            load_destinations([entry("webhook", name)])
        assert "liftoff:destinations[0].name" in str(caught.value)
    assert load_destinations([entry("webhook", "h" * 52)])


def test_filters_are_validated_in_the_stack_and_reach_the_broadcaster(tmp_path: Path) -> None:
    filters = {
        "drop": [{"type": ["page"]}, {"field": "properties.plan", "equals": "free"}],
        "samplePercent": 50,
        "blockFields": ["context.ip"],
        "consent": ["Analytics"],
    }
    (destination,) = load_destinations([{**entry("webhook", "hook"), "filters": filters}])
    document = destination_document(destination)
    settings = broadcaster.BroadcasterSettings(
        runtime=ConsumerRuntime(stream=StreamAccess(url="nats://nats:4222/EVENTS")),
        broadcast=broadcaster.Broadcast(destination=document, secrets_file="/s.json"),
    )
    parsed = broadcaster.parse(broadcaster.PROCESS.environment(settings)).broadcast
    assert parsed.destination is not None
    assert parsed.destination.filters == destination.filters
    assert parsed.destination.filters.encode() == {
        **filters,
        "drop": [{"type": ["page"]}, {"field": "properties.plan", "in": ["free"]}],
    }


def test_a_bad_filter_is_refused_with_its_key_before_anything_is_declared():
    bad = {"drop": [{"type": ["page"]}, {"field": "properties.plan", "in": []}]}
    with pytest.raises(ConfigError) as caught:
        load_destinations([{**entry("webhook", "hook"), "filters": bad}])
    assert "liftoff:destinations[0].filters.drop[1].in" in str(caught.value)
    assert "JSON scalars" in str(caught.value)


ISSUE_17 = {"mixpanel": {"groupKey": "company_id"}, "amplitude": {"groupType": "company"}}
ISSUE_17_GA4 = {"region": "eu"}


@pytest.mark.parametrize("target", ["kubernetes-private-cloud", "aws"])
def test_the_settings_of_issue_17_reach_each_declared_broadcaster(
    target: str, tmp_path: Path
) -> None:
    """Through the real program: the stack's destinations, with groupKey, groupType and GA4's
    region, become the broadcasters' declared environments (a Deployment's, a Lambda
    function's), which the broadcaster parses; on Kubernetes it also loads them, with the
    secret its pod mounts, and builds each destination as it will send."""
    entries = [
        {
            **{k: v for k, v in entry(kind, f"to-{kind}").items() if k != TYPES[kind].secret.name},
            **ISSUE_17.get(kind, ISSUE_17_GA4 if kind == "ga4" else {}),
            TYPES[kind].secret.name: {"secure": f"v1:placeholder-{kind}"},
        }
        for kind in ("mixpanel", "amplitude", "ga4")
    ]
    run = run_program(
        f"stacks/{target}.yaml", overrides={"liftoff:destinations": entries}, stack=target
    )
    found = [
        w
        for w in [*kubernetes_workloads(run), *lambda_workloads(run)]
        if w.process in (broadcaster.PROCESS, broadcaster.FUNCTION)
    ]
    assert len(found) == 3, [w.where for w in found]
    for workload in found:
        assert problems(workload) == []
        document = workload.process.parse(workload.env).broadcast.destination
        expected = {**ISSUE_17.get(document.type, ISSUE_17_GA4 if document.type == "ga4" else {})}
        assert expected.items() <= dict(document.settings).items(), workload.where
        if workload.platform == "kubernetes":
            config = loaded(workload, tmp_path)
            assert isinstance(config, BroadcasterConfig)
            built = config.destination.build(config.secret)
            assert expected.items() <= BUILT[document.type](built).items(), workload.where
