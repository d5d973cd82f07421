"""The sources' write keys: generated once per source and kept in the stack's state as secrets;
both realizations hand the collector the same JSON document of them."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from components.ingest.settings import Source


def generate_write_keys(
    name: str, sources: tuple[Source, ...], parent: pulumi.Resource
) -> dict[str, pulumi.Output[str]]:
    """One random write key per source, kept in state as secrets."""
    keys: dict[str, pulumi.Output[str]] = {}
    for source in sources:
        password = random.RandomPassword(
            f"{name}-write-key-{source.name}",
            length=32,
            special=False,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        keys[source.name] = pulumi.Output.secret(password.result)
    return keys


def write_keys_document(keys: dict[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    """The JSON the collector reads (`LIFTOFF_WRITE_KEYS*`): source name → write key."""
    return pulumi.Output.secret(pulumi.Output.json_dumps(dict(sorted(keys.items()))))
