"""The catalogue of liftoff's policies: name, rule function, default enforcement, config knobs.

`pack.py` turns each entry into a `pulumi_policy` policy; the tests run the same functions
over everything the mock harness captures. Every policy is mandatory by default; a stack's
`--policy-pack-config` file may lower one (`{"k8s-resources": "advisory"}`) or all
(`{"all": "advisory"}`), and sets the knobs below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import aws, kubernetes
from .model import Resource, Violation

ResourceRule = Callable[[Resource, Mapping[str, Any]], list[str]]
StackRule = Callable[[Sequence[Resource], Mapping[str, Any]], list[Violation]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    target: str
    """`aws` or `kubernetes`: which stacks it concerns (the pack runs all rules everywhere;
    a rule simply finds nothing of the other target's types)."""
    check: ResourceRule | None = None
    check_stack: StackRule | None = None
    enforcement: str = "mandatory"
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """JSON-schema properties of the rule's policy config (its knobs)."""


RULES: tuple[Rule, ...] = (
    Rule(
        "aws-rds-encrypted",
        "RDS instances and clusters are encrypted at rest (storageEncrypted).",
        "aws",
        check=aws.rds_encrypted,
    ),
    Rule(
        "aws-s3-encrypted",
        "Every S3 bucket has default server-side encryption (aws:kms or AES256).",
        "aws",
        check=aws.s3_encryption_configured,
        check_stack=aws.s3_buckets_encrypted,
    ),
    Rule(
        "aws-kinesis-encrypted",
        "Kinesis streams use server-side KMS encryption.",
        "aws",
        check=aws.kinesis_encrypted,
    ),
    Rule(
        "aws-sqs-encrypted",
        "SQS queues (dead-letter queues included) are encrypted at rest.",
        "aws",
        check=aws.sqs_encrypted,
    ),
    Rule(
        "aws-rds-not-public",
        "No RDS instance is publicly accessible.",
        "aws",
        check=aws.rds_not_public,
    ),
    Rule(
        "aws-s3-public-access-blocked",
        "Every S3 bucket has a public access block with all four settings on; no public ACLs.",
        "aws",
        check=aws.s3_public_access_block_settings,
        check_stack=aws.s3_public_access_blocked,
    ),
    Rule(
        "aws-deletion-protection",
        "In production stacks, databases, tables, streams and buckets refuse deletion.",
        "aws",
        check=aws.deletion_protection,
        config={
            "production": {
                "type": "boolean",
                "description": "Whether this stack is production. Unset: true when the "
                "resource's environment tag (provider default tags included) is one of "
                "productionEnvironments.",
            },
            "environmentTag": {"type": "string", "default": "environment"},
            "productionEnvironments": {
                "type": "array",
                "items": {"type": "string"},
                "default": list(aws.DEFAULT_PRODUCTION_ENVIRONMENTS),
            },
        },
    ),
    Rule(
        "aws-iam-least-privilege",
        "IAM policies name their actions (no wildcards, no NotAction) and attach no "
        "*FullAccess or administrator managed policies.",
        "aws",
        check=aws.iam_least_privilege,
    ),
    Rule(
        "aws-mwaa-private-webserver",
        "The MWAA (Airflow) web server is private unless the stack opts out.",
        "aws",
        check=aws.mwaa_private_webserver,
        config={
            "allowPublicWebserver": {
                "type": "boolean",
                "default": False,
                "description": "Opt this stack out: allow webserverAccessMode PUBLIC_ONLY.",
            }
        },
    ),
    Rule(
        "k8s-pod-security-restricted",
        'Every pod template meets Pod Security "restricted"; created namespaces enforce it.',
        "kubernetes",
        check=kubernetes.pod_security_restricted,
    ),
    Rule(
        "k8s-resources",
        "Every container requests and limits CPU and memory.",
        "kubernetes",
        check=kubernetes.resources_set,
    ),
    Rule(
        "k8s-images-pinned",
        "No :latest or untagged images (pod templates and Helm chart values).",
        "kubernetes",
        check=kubernetes.images_pinned,
    ),
    Rule(
        "k8s-images-from-registry",
        "Every image comes through the configured registry override.",
        "kubernetes",
        check=kubernetes.images_from_registry,
        config={
            "registry": {
                "type": "string",
                "description": "The stack's liftoff:kubernetes.imageRegistry (e.g. "
                "registry.corp.example/mirror). Unset: the rule has nothing to enforce.",
            }
        },
    ),
    Rule(
        "k8s-statefulset-pvcs-retained",
        "StatefulSet PersistentVolumeClaims are retained on delete and scale-down.",
        "kubernetes",
        check=kubernetes.statefulset_pvcs_retained,
    ),
    Rule(
        "k8s-namespace-network-policy",
        "Every namespace the platform creates or runs pods in has a default-deny NetworkPolicy.",
        "kubernetes",
        check_stack=kubernetes.namespaces_have_network_policy,
    ),
    Rule(
        "k8s-no-plain-secrets",
        "No passwords, tokens or keys in ConfigMaps or plain env values.",
        "kubernetes",
        check=kubernetes.no_secrets_in_plain_config,
    ),
)

RULES_BY_NAME: dict[str, Rule] = {rule.name: rule for rule in RULES}


def evaluate(
    resources: Sequence[Resource], config: Mapping[str, Any] | None = None
) -> dict[str, list[str]]:
    """Run every rule over `resources`; returns rule name -> violation messages (all rules).

    `config` has the shape of a `--policy-pack-config` file: `{policy name: {knob: value}}`
    (enforcement levels in it are ignored here).
    """
    config = config or {}
    results: dict[str, list[str]] = {}
    for rule in RULES:
        rule_config = config.get(rule.name)
        knobs = (
            {k: v for k, v in rule_config.items() if k != "enforcementLevel"}
            if isinstance(rule_config, Mapping)
            else {}
        )
        messages: list[str] = []
        if rule.check is not None:
            for resource in resources:
                messages.extend(rule.check(resource, knobs))
        if rule.check_stack is not None:
            messages.extend(v.message for v in rule.check_stack(resources, knobs))
        results[rule.name] = messages
    return results
