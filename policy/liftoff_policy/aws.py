"""Rules for the AWS target. Each is a plain function over a `Resource` (or all of them).

Resource rules: `rule(resource, config) -> list[str]`; stack rules (cross-resource):
`rule(resources, config) -> list[Violation]`. `config` is the rule's policy config (the
`--policy-pack-config` entry for that policy, without `enforcementLevel`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .model import (
    Resource,
    Violation,
    contains_unknown,
    describe,
    get_path,
    is_unknown,
    maybe_json,
    violation,
)

RDS_INSTANCE = "aws:rds/instance:Instance"
RDS_CLUSTER = "aws:rds/cluster:Cluster"
RDS_CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
KINESIS_STREAM = "aws:kinesis/stream:Stream"
SQS_QUEUE = "aws:sqs/queue:Queue"
DYNAMODB_TABLE = "aws:dynamodb/table:Table"
MWAA_ENVIRONMENT = "aws:mwaa/environment:Environment"
S3_BUCKETS = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
S3_SSE_CONFIGS = frozenset(
    {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    }
)
S3_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_ACCOUNT_PUBLIC_ACCESS_BLOCK = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
S3_BUCKET_ACLS = frozenset({"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"})
PUBLIC_ACCESS_FLAGS = (
    "blockPublicAcls",
    "blockPublicPolicy",
    "ignorePublicAcls",
    "restrictPublicBuckets",
)
SSE_ALGORITHMS = frozenset({"aws:kms", "aws:kms:dsse", "AES256"})
PUBLIC_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})

# IAM identity policies whose `policy` input is a JSON policy document.
IAM_DOCUMENT_TYPES = frozenset(
    {
        "aws:iam/policy:Policy",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/userPolicy:UserPolicy",
        "aws:iam/groupPolicy:GroupPolicy",
    }
)
IAM_ATTACHMENT_TYPES = frozenset(
    {
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/userPolicyAttachment:UserPolicyAttachment",
        "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
        "aws:iam/policyAttachment:PolicyAttachment",
    }
)
IAM_ROLE = "aws:iam/role:Role"
# Broad AWS-managed policies: every `*FullAccess` plus the two that grant (nearly) everything.
_BROAD_MANAGED_POLICY = re.compile(r"FullAccess|^AdministratorAccess$|^PowerUserAccess$")

DEFAULT_PRODUCTION_ENVIRONMENTS = ("production", "prod")


# --- encryption at rest -------------------------------------------------------------------


def rds_encrypted(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """RDS instances and clusters store data encrypted (`storageEncrypted: true`)."""
    if resource.type not in (RDS_INSTANCE, RDS_CLUSTER):
        return []
    value = resource.props.get("storageEncrypted")
    if value is True or is_unknown(value):
        return []
    return [
        violation(
            resource,
            "storageEncrypted",
            value,
            "true (encryption at rest; set kmsKeyId to the platform's customer-managed key)",
        )
    ]


def kinesis_encrypted(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """Kinesis streams use server-side KMS encryption."""
    if resource.type != KINESIS_STREAM:
        return []
    problems = []
    encryption = resource.props.get("encryptionType")
    if encryption != "KMS" and not is_unknown(encryption):
        problems.append(violation(resource, "encryptionType", encryption, '"KMS"'))
    key = resource.props.get("kmsKeyId")
    if encryption == "KMS" and not key and not is_unknown(key):
        problems.append(
            violation(resource, "kmsKeyId", key, "a KMS key ARN/alias when encryptionType is KMS")
        )
    return problems


def sqs_encrypted(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """SQS queues (including dead-letter queues) encrypt messages at rest."""
    if resource.type != SQS_QUEUE:
        return []
    key = resource.props.get("kmsMasterKeyId")
    managed = resource.props.get("sqsManagedSseEnabled")
    if key or managed is True or is_unknown(key) or is_unknown(managed):
        return []
    return [
        violation(
            resource,
            "kmsMasterKeyId/sqsManagedSseEnabled",
            {"kmsMasterKeyId": key, "sqsManagedSseEnabled": managed},
            "kmsMasterKeyId set to a KMS key (preferred) or sqsManagedSseEnabled true",
        )
    ]


def _refers_to(child: Resource, bucket: Resource) -> bool:
    """Whether `child` (an S3 bucket sub-resource) configures `bucket`."""
    if bucket.urn and bucket.urn in child.dependencies:
        return True
    ref = child.props.get("bucket")
    names = {bucket.props.get("bucket"), bucket.props.get("id")}
    return isinstance(ref, str) and ref in names - {None}


def _sse_rule_ok(rules: Any) -> bool | None:
    """True when an SSE configuration's rules set a default algorithm; None when unknown."""
    if contains_unknown(rules):
        return None
    if isinstance(rules, Mapping):
        rules = [rules]
    if not isinstance(rules, list | tuple) or not rules:
        return False
    for rule in rules:
        algorithm = get_path(rule, "applyServerSideEncryptionByDefault", "sseAlgorithm")
        if algorithm in SSE_ALGORITHMS:
            return True
    return False


def s3_encryption_configured(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """An S3 server-side encryption configuration names a default algorithm."""
    if resource.type not in S3_SSE_CONFIGS:
        return []
    rules = resource.props.get("rules")
    if _sse_rule_ok(rules) is False:
        return [
            violation(
                resource,
                "rules[].applyServerSideEncryptionByDefault.sseAlgorithm",
                rules,
                'one of "aws:kms", "aws:kms:dsse", "AES256" (prefer aws:kms with the platform key)',
            )
        ]
    return []


def s3_buckets_encrypted(
    resources: Sequence[Resource], config: Mapping[str, Any]
) -> list[Violation]:
    """Every S3 bucket has default server-side encryption (inline or a separate resource)."""
    findings = []
    configs = [r for r in resources if r.type in S3_SSE_CONFIGS]
    for bucket in (r for r in resources if r.type in S3_BUCKETS):
        inline = get_path(bucket.props, "serverSideEncryptionConfiguration", "rule")
        if inline is not None and _sse_rule_ok(inline) is not False:
            continue
        if any(_refers_to(c, bucket) and _sse_rule_ok(c.props.get("rules")) for c in configs):
            continue
        findings.append(
            Violation(
                f"{bucket.label}: no server-side encryption configuration; required: an "
                "aws.s3.BucketServerSideEncryptionConfiguration for this bucket with "
                "sseAlgorithm aws:kms (the platform key) or AES256",
                bucket.urn or None,
            )
        )
    return findings


# --- public exposure ----------------------------------------------------------------------


def rds_not_public(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """No RDS instance is reachable from the internet."""
    if resource.type not in (RDS_INSTANCE, RDS_CLUSTER_INSTANCE):
        return []
    value = resource.props.get("publiclyAccessible")
    if value is True:
        return [violation(resource, "publiclyAccessible", value, "false (private subnets only)")]
    return []


def s3_public_access_block_settings(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """Public access blocks turn on all four settings; bucket ACLs are never public."""
    problems = []
    if resource.type in (S3_PUBLIC_ACCESS_BLOCK, S3_ACCOUNT_PUBLIC_ACCESS_BLOCK):
        for flag in PUBLIC_ACCESS_FLAGS:
            value = resource.props.get(flag)
            if value is not True and not is_unknown(value):
                problems.append(violation(resource, flag, value, "true"))
    if resource.type in S3_BUCKETS or resource.type in S3_BUCKET_ACLS:
        acl = resource.props.get("acl")
        if acl in PUBLIC_ACLS:
            problems.append(violation(resource, "acl", acl, '"private" (or no ACL at all)'))
    return problems


def _blocks_everything(block: Resource) -> bool:
    return all(block.props.get(flag) is True for flag in PUBLIC_ACCESS_FLAGS) or any(
        is_unknown(block.props.get(flag)) for flag in PUBLIC_ACCESS_FLAGS
    )


def s3_public_access_blocked(
    resources: Sequence[Resource], config: Mapping[str, Any]
) -> list[Violation]:
    """Each S3 bucket has a public access block with all four settings on (or the account has)."""
    account_blocks = [r for r in resources if r.type == S3_ACCOUNT_PUBLIC_ACCESS_BLOCK]
    if any(_blocks_everything(b) for b in account_blocks):
        return []
    blocks = [r for r in resources if r.type == S3_PUBLIC_ACCESS_BLOCK]
    findings = []
    for bucket in (r for r in resources if r.type in S3_BUCKETS):
        if any(_refers_to(b, bucket) and _blocks_everything(b) for b in blocks):
            continue
        findings.append(
            Violation(
                f"{bucket.label}: no public access block; required: an "
                "aws.s3.BucketPublicAccessBlock for this bucket with blockPublicAcls, "
                "blockPublicPolicy, ignorePublicAcls and restrictPublicBuckets all true",
                bucket.urn or None,
            )
        )
    return findings


def mwaa_private_webserver(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """The Airflow (MWAA) web server is reachable only from the VPC, unless the stack opts out."""
    if resource.type != MWAA_ENVIRONMENT or config.get("allowPublicWebserver") is True:
        return []
    mode = resource.props.get("webserverAccessMode")
    if mode in (None, "PRIVATE_ONLY") or is_unknown(mode):
        return []
    return [
        violation(
            resource,
            "webserverAccessMode",
            mode,
            '"PRIVATE_ONLY" (or set allowPublicWebserver: true in this policy\'s config to opt '
            "the stack out)",
        )
    ]


# --- deletion protection ------------------------------------------------------------------


def _tags(resource: Resource) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    default_tags = maybe_json((resource.provider or {}).get("defaultTags"))
    if isinstance(default_tags, Mapping) and isinstance(default_tags.get("tags"), Mapping):
        tags.update(default_tags["tags"])
    own = resource.props.get("tags")
    if isinstance(own, Mapping):
        tags.update(own)
    return tags


def is_production(resource: Resource, config: Mapping[str, Any]) -> bool:
    """`production` from the policy config; unset: the resource's environment tag says so."""
    explicit = config.get("production")
    if isinstance(explicit, bool):
        return explicit
    key = config.get("environmentTag", "environment")
    environments = config.get("productionEnvironments", DEFAULT_PRODUCTION_ENVIRONMENTS)
    return _tags(resource).get(key) in environments


def deletion_protection(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """In production, stateful resources refuse deletion."""
    stateful = {RDS_INSTANCE, RDS_CLUSTER, DYNAMODB_TABLE, KINESIS_STREAM, *S3_BUCKETS}
    if resource.type not in stateful or not is_production(resource, config):
        return []
    why = " (the stack is production)"
    props = resource.props
    problems = []
    if resource.type in (RDS_INSTANCE, RDS_CLUSTER):
        value = props.get("deletionProtection")
        if value is not True and not is_unknown(value):
            problems.append(violation(resource, "deletionProtection", value, "true" + why))
        if props.get("skipFinalSnapshot") is True:
            problems.append(
                violation(resource, "skipFinalSnapshot", True, "false: keep a final snapshot" + why)
            )
    elif resource.type == DYNAMODB_TABLE:
        value = props.get("deletionProtectionEnabled")
        if value is not True and not is_unknown(value):
            problems.append(violation(resource, "deletionProtectionEnabled", value, "true" + why))
    else:
        if not resource.protect:
            problems.append(violation(resource, "resource option protect", False, "true" + why))
        if resource.type in S3_BUCKETS and props.get("forceDestroy") is True:
            problems.append(
                violation(resource, "forceDestroy", True, "false: never empty the bucket" + why)
            )
    return problems


# --- IAM least privilege ------------------------------------------------------------------


def _statements(document: Any) -> list[Mapping[str, Any]]:
    statements = document.get("Statement") if isinstance(document, Mapping) else None
    if isinstance(statements, Mapping):
        return [statements]
    if isinstance(statements, list):
        return [s for s in statements if isinstance(s, Mapping)]
    return []


def wildcard_actions(document: Any) -> list[tuple[str, Any]]:
    """(path, value) of every wildcard grant in an IAM policy document's Allow statements."""
    found = []
    for index, statement in enumerate(_statements(maybe_json(document))):
        if statement.get("Effect", "Allow") != "Allow":
            continue
        if "NotAction" in statement:
            found.append((f"Statement[{index}].NotAction", statement["NotAction"]))
        actions = statement.get("Action", [])
        for action in [actions] if isinstance(actions, str) else actions:
            if isinstance(action, str) and ("*" in action or "?" in action):
                found.append((f"Statement[{index}].Action", action))
    return found


_ACTION_REQUIRED = (
    'explicit actions without wildcards (name each API call, e.g. "kinesis:PutRecords") '
    "and no NotAction in Allow statements"
)


def _managed_policy_problem(resource: Resource, prop: str, arn: Any) -> str | None:
    if not isinstance(arn, str):
        return None
    name = arn.rsplit("/", 1)[-1]
    if _BROAD_MANAGED_POLICY.search(name):
        return violation(
            resource,
            prop,
            arn,
            "a policy scoped to the platform's own resources (no *FullAccess or administrator "
            "managed policies)",
        )
    return None


def iam_least_privilege(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    """IAM identity policies grant named actions only; no broad managed policies."""
    problems: list[str] = []
    props = resource.props
    documents: list[tuple[str, Any]] = []
    if resource.type in IAM_DOCUMENT_TYPES:
        documents.append(("policy", props.get("policy")))
    elif resource.type == IAM_ROLE:
        for index, inline in enumerate(props.get("inlinePolicies") or []):
            documents.append((f"inlinePolicies[{index}].policy", get_path(inline, "policy")))
        for index, arn in enumerate(props.get("managedPolicyArns") or []):
            problem = _managed_policy_problem(resource, f"managedPolicyArns[{index}]", arn)
            if problem:
                problems.append(problem)
    elif resource.type in IAM_ATTACHMENT_TYPES:
        problem = _managed_policy_problem(resource, "policyArn", props.get("policyArn"))
        if problem:
            problems.append(problem)
    for prop, document in documents:
        if contains_unknown(document):
            continue
        for path, value in wildcard_actions(document):
            problems.append(
                f"{resource.label}: {prop} {path} is {describe(value)}; required: "
                f"{_ACTION_REQUIRED}"
            )
    return problems
