"""Derive a stack's policy config (`--policy-pack-config`) from its liftoff stack file.

The knobs some rules need are facts the stack file already states: the registry override
(`liftoff:kubernetes.imageRegistry`), whether the stack is production (`liftoff:tags`
`environment`) and whether it opts into a public MWAA web server
(`liftoff:airflow.webAccess`). CI generates the policy config from the stack file under review with
`python policy/config_for_stack.py Pulumi.<stack>.yaml`; a security team that wants the
knobs independent of the stack file checks a config file in instead and points the stack's
entry in `.github/liftoff-stacks.json` at it (`policyConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .aws import DEFAULT_PRODUCTION_ENVIRONMENTS
from .model import maybe_json

PROJECT = "liftoff"


def policy_config(stack_config: Mapping[str, Any], project: str = PROJECT) -> dict[str, Any]:
    """Policy config for a stack, from its `config:` mapping (values decoded or JSON strings)."""
    config: dict[str, Any] = {}
    kubernetes = maybe_json(stack_config.get(f"{project}:kubernetes"))
    if isinstance(kubernetes, Mapping) and kubernetes.get("imageRegistry"):
        config["k8s-images-from-registry"] = {"registry": str(kubernetes["imageRegistry"])}
    tags = maybe_json(stack_config.get(f"{project}:tags"))
    environment = tags.get("environment") if isinstance(tags, Mapping) else None
    config["aws-deletion-protection"] = {
        "production": environment in DEFAULT_PRODUCTION_ENVIRONMENTS
    }
    # The stack opts out of a private MWAA web server only by saying so.
    airflow = maybe_json(stack_config.get(f"{project}:airflow"))
    if isinstance(airflow, Mapping) and airflow.get("webAccess") == "public":
        config["aws-mwaa-private-webserver"] = {"allowPublicWebserver": True}
    return config


def policy_config_for_file(text: str, project: str = PROJECT) -> dict[str, Any]:
    """Policy config from the text of a `Pulumi.<stack>.yaml` file."""
    import yaml

    document = yaml.safe_load(text) or {}
    return policy_config(document.get("config") or {}, project)
