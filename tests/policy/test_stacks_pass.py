"""Every resource the program declares, for every stack in stacks/ (and Pulumi.dev.yaml),
passes every policy of the pack: with the policy config CI derives from the stack file, and
with no config at all (the pack's defaults)."""

from __future__ import annotations

import pytest

from policy.liftoff_policy import kubernetes as k8s_rules
from policy.liftoff_policy.registry import RULES, evaluate
from policy.liftoff_policy.stack_config import policy_config, policy_config_for_file
from tests.conftest import stack_run
from tests.harness import STACK_FILES, stack_name_of
from tests.policy.support import resources_of

STACKS = [stack_name_of(path) for path in STACK_FILES]


def _report(results: dict[str, list[str]]) -> str:
    return "\n".join(f"[{name}] {m}" for name, messages in results.items() for m in messages)


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_passes_every_policy(stack):
    run = stack_run(stack)
    results = evaluate(resources_of(run), policy_config(run.config))
    assert set(results) == {rule.name for rule in RULES}
    assert not any(results.values()), f"policy violations in stack {stack}:\n" + _report(results)


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_passes_with_the_default_config(stack):
    results = evaluate(resources_of(stack_run(stack)), {})
    assert not any(results.values()), f"policy violations in stack {stack}:\n" + _report(results)


@pytest.mark.parametrize("path", STACK_FILES, ids=stack_name_of)
def test_ci_derives_the_same_config_from_the_stack_file(path):
    run = stack_run(stack_name_of(path))
    assert policy_config_for_file(path.read_text()) == policy_config(run.config)


def test_the_private_cloud_stack_is_checked_against_its_registry():
    run = stack_run("kubernetes-private-cloud")
    config = policy_config(run.config)
    assert config["k8s-images-from-registry"] == {"registry": "registry.corp.example/mirror"}
    assert config["aws-deletion-protection"] == {"production": True}
    # Not vacuous: the rule sees every workload image and the chart's images.
    found = [img for r in resources_of(run) for _, img in k8s_rules.images(r)]
    assert len(found) >= 5, found
    assert any("nats" in img for img in found), found
    # ...and a registry that is not the stack's makes it fire on all of them.
    other = evaluate(resources_of(run), {"k8s-images-from-registry": {"registry": "other.example"}})
    assert len(other["k8s-images-from-registry"]) == len(found)


@pytest.mark.parametrize("stack", ["dev", "kubernetes-private-cloud"])
def test_the_kubernetes_rules_see_the_workloads(stack):
    resources = resources_of(stack_run(stack))
    workloads = [r for r in resources if k8s_rules.pod_spec(r) is not None]
    kinds = {r.type.rsplit(":", 1)[-1] for r in workloads}
    assert {"StatefulSet", "Deployment", "Job"} <= kinds, kinds


def test_the_production_aws_stack_is_held_to_deletion_protection():
    run = stack_run("aws")
    assert policy_config(run.config)["aws-deletion-protection"] == {"production": True}
    resources = resources_of(run)
    # Take the protection away: the rule notices for the database and the stream.
    stripped = [
        r.__class__(
            **{**r.__dict__, "protect": False, "props": {**r.props, "deletionProtection": False}}
        )
        for r in resources
    ]
    messages = evaluate(stripped, {})["aws-deletion-protection"]
    assert any("aws:rds/instance:Instance" in m and "deletionProtection" in m for m in messages)
    assert any("aws:kinesis/stream:Stream" in m and "protect" in m for m in messages)


@pytest.mark.parametrize("stack", STACKS)
def test_no_pulumi_secret_lands_in_a_configmap_or_plain_env_value(stack):
    """What the pack cannot see (the engine unwraps secrets before policies run), the
    harness can: no secret-marked input is a ConfigMap value or a plain env value."""
    for resource in stack_run(stack).resources:
        for path in resource.secret_paths:
            if resource.type == "kubernetes:core/v1:ConfigMap":
                assert not path.startswith(("data", "binaryData")), (resource.name, path)
            assert not (".env[" in path and path.endswith(".value")), (resource.name, path)
