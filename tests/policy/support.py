"""Feed what the mock harness captured to the policy rules, as the engine would."""

from __future__ import annotations

from policy.liftoff_policy.model import Resource
from tests.harness import ProgramRun


def resources_of(run: ProgramRun) -> list[Resource]:
    """Every declared resource except providers, each with its provider's inputs.

    The harness records no provider reference per resource; a liftoff stack declares one
    provider per target and every resource of that target uses it.
    """
    providers = {
        r.type.removeprefix("pulumi:providers:"): r.inputs
        for r in run.resources
        if r.type.startswith("pulumi:providers:")
    }
    return [
        Resource(
            type=r.type,
            name=r.name,
            props=r.inputs,
            urn=r.urn,
            protect=r.protect,
            provider=providers.get(r.type.split(":", 1)[0]),
            dependencies=tuple(r.dependencies),
        )
        for r in run.resources
        if not r.type.startswith("pulumi:providers:")
    ]
