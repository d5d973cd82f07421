"""Each rule fires on a hand-built violating resource, with a message naming the resource,
the property, the value and what is required; and stays quiet on the compliant shape."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from policy.liftoff_policy import aws, kubernetes
from policy.liftoff_policy.model import UNKNOWN, Resource
from policy.liftoff_policy.registry import RULES, RULES_BY_NAME, evaluate

RDS = "aws:rds/instance:Instance"
BUCKET = "aws:s3/bucket:Bucket"
BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
NAMESPACE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PRODUCTION_PROVIDER = {"defaultTags": json.dumps({"tags": {"environment": "production"}})}


def run(rule: str, *resources: Resource, config: dict[str, Any] | None = None) -> list[str]:
    return evaluate(list(resources), {rule: config or {}})[rule]


def container(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "app",
        "image": "registry.corp.example/mirror/liftoff-data/app:1.2.3",
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    base.update(overrides)
    return base


def deployment(*containers: dict[str, Any], **spec: Any) -> Resource:
    pod = {"containers": list(containers) or [container()], **spec}
    return Resource(
        DEPLOYMENT,
        "web",
        {
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"template": {"metadata": {}, "spec": pod}},
        },
        urn="urn:web",
    )


def bucket(**props: Any) -> Resource:
    return Resource(BUCKET, "archive", props, urn="urn:archive")


def full_block(**props: Any) -> Resource:
    flags = dict.fromkeys(aws.PUBLIC_ACCESS_FLAGS, True)
    return Resource(BLOCK, "archive-block", {**flags, **props}, dependencies=("urn:archive",))


def sse(algorithm: str = "aws:kms") -> Resource:
    rules = [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": algorithm}}]
    return Resource(SSE, "archive-sse", {"rules": rules}, dependencies=("urn:archive",))


# (rule, resources, config, strings the message must contain)
NEGATIVE_CASES: list[tuple[str, list[Resource], dict[str, Any], list[str]]] = [
    (
        "aws-rds-encrypted",
        [Resource(RDS, "db", {"storageEncrypted": False})],
        {},
        [RDS, "'db'", "storageEncrypted", "false", "required: true"],
    ),
    (
        "aws-rds-encrypted",
        [Resource("aws:rds/cluster:Cluster", "aurora", {})],
        {},
        ["aws:rds/cluster:Cluster 'aurora'", "storageEncrypted is not set", "required: true"],
    ),
    (
        "aws-s3-encrypted",
        [bucket(), full_block()],
        {},
        [BUCKET, "'archive'", "no server-side encryption", "required:", "aws:kms"],
    ),
    (
        "aws-s3-encrypted",
        [bucket(), full_block(), sse("none")],
        {},
        [SSE, "sseAlgorithm", '"none"', "required:"],
    ),
    (
        "aws-kinesis-encrypted",
        [Resource("aws:kinesis/stream:Stream", "events", {"encryptionType": "NONE"})],
        {},
        ["aws:kinesis/stream:Stream 'events'", "encryptionType", '"NONE"', 'required: "KMS"'],
    ),
    (
        "aws-kinesis-encrypted",
        [Resource("aws:kinesis/stream:Stream", "events", {"encryptionType": "KMS"})],
        {},
        ["kmsKeyId is not set", "required: a KMS key"],
    ),
    (
        "aws-sqs-encrypted",
        [Resource("aws:sqs/queue:Queue", "archive-dlq", {"sqsManagedSseEnabled": False})],
        {},
        ["aws:sqs/queue:Queue 'archive-dlq'", "kmsMasterKeyId", "sqsManagedSseEnabled", "required"],
    ),
    (
        "aws-rds-not-public",
        [Resource(RDS, "db", {"publiclyAccessible": True})],
        {},
        [RDS, "'db'", "publiclyAccessible is true", "required: false"],
    ),
    (
        "aws-s3-public-access-blocked",
        [bucket(), sse()],
        {},
        [BUCKET, "'archive'", "no public access block", "restrictPublicBuckets"],
    ),
    (
        "aws-s3-public-access-blocked",
        [bucket(), sse(), full_block(restrictPublicBuckets=False)],
        {},
        [BLOCK, "restrictPublicBuckets is false", "required: true"],
    ),
    (
        "aws-s3-public-access-blocked",
        [bucket(acl="public-read"), sse(), full_block()],
        {},
        [BUCKET, "acl", '"public-read"', 'required: "private"'],
    ),
    (
        "aws-deletion-protection",
        [Resource(RDS, "db", {"deletionProtection": False}, provider=PRODUCTION_PROVIDER)],
        {},
        [RDS, "'db'", "deletionProtection is false", "required: true", "production"],
    ),
    (
        "aws-deletion-protection",
        [Resource("aws:kinesis/stream:Stream", "events", {}, protect=False)],
        {"production": True},
        ["aws:kinesis/stream:Stream 'events'", "protect is false", "required: true"],
    ),
    (
        "aws-deletion-protection",
        [bucket(forceDestroy=True)],
        {"production": True},
        [BUCKET, "protect is false", "forceDestroy is true", "required: false"],
    ),
    (
        "aws-deletion-protection",
        [Resource("aws:dynamodb/table:Table", "dedupe", {}, provider=PRODUCTION_PROVIDER)],
        {},
        ["aws:dynamodb/table:Table 'dedupe'", "deletionProtectionEnabled is not set"],
    ),
    (
        "aws-iam-least-privilege",
        [
            Resource(
                "aws:iam/rolePolicy:RolePolicy",
                "archiver",
                {
                    "policy": json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:x"}
                            ],
                        }
                    )
                },
            )
        ],
        {},
        ["aws:iam/rolePolicy:RolePolicy 'archiver'", "Statement[0].Action", '"s3:*"', "required"],
    ),
    (
        "aws-iam-least-privilege",
        [
            Resource(
                "aws:iam/policy:Policy",
                "broad",
                {"policy": {"Statement": [{"Effect": "Allow", "NotAction": "iam:*"}]}},
            )
        ],
        {},
        ["'broad'", "Statement[0].NotAction", "no NotAction"],
    ),
    (
        "aws-iam-least-privilege",
        [
            Resource(
                "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
                "consumer-s3",
                {"policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"},
            )
        ],
        {},
        ["'consumer-s3'", "policyArn", "AmazonS3FullAccess", "no *FullAccess"],
    ),
    (
        "aws-iam-least-privilege",
        [
            Resource(
                "aws:iam/role:Role",
                "mwaa",
                {
                    "managedPolicyArns": ["arn:aws:iam::aws:policy/AdministratorAccess"],
                    "inlinePolicies": [
                        {"name": "x", "policy": json.dumps({"Statement": {"Action": "*"}})}
                    ],
                },
            )
        ],
        {},
        ["aws:iam/role:Role 'mwaa'", "managedPolicyArns[0]", "inlinePolicies[0].policy"],
    ),
    (
        "aws-mwaa-private-webserver",
        [
            Resource(
                "aws:mwaa/environment:Environment",
                "airflow",
                {"webserverAccessMode": "PUBLIC_ONLY"},
            )
        ],
        {},
        ["'airflow'", "webserverAccessMode", '"PUBLIC_ONLY"', '"PRIVATE_ONLY"', "allowPublic"],
    ),
    (
        "k8s-pod-security-restricted",
        [deployment(container(securityContext={}))],
        {},
        [
            DEPLOYMENT,
            "'web'",
            "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
            "capabilities.drop",
            "runAsNonRoot",
            "seccompProfile.type",
            "required:",
        ],
    ),
    (
        "k8s-pod-security-restricted",
        [
            deployment(
                container(ports=[{"containerPort": 80, "hostPort": 80}]),
                hostNetwork=True,
                volumes=[{"name": "docker", "hostPath": {"path": "/var/run"}}],
                initContainers=[container(name="init", securityContext={"privileged": True})],
            )
        ],
        {},
        ["hostNetwork is true", "hostPath", "hostPort", "initContainers[0]", "privileged"],
    ),
    (
        "k8s-pod-security-restricted",
        [Resource(NAMESPACE, "ns", {"metadata": {"name": "apps", "labels": {}}})],
        {},
        [NAMESPACE, "pod-security.kubernetes.io/enforce", "not set", '"restricted"'],
    ),
    (
        "k8s-resources",
        [deployment(container(resources={"requests": {"cpu": "100m"}}))],
        {},
        ["'web'", "resources.requests.memory is not set", "resources.limits.cpu", "'app'"],
    ),
    (
        "k8s-images-pinned",
        [deployment(container(image="docker.io/library/nginx:latest"))],
        {},
        ["'web'", "containers[0].image", "nginx:latest", "pinned tag", ":latest"],
    ),
    (
        "k8s-images-pinned",
        [deployment(container(image="registry.local:5000/team/app"))],
        {},
        ["registry.local:5000/team/app", "no tag"],
    ),
    (
        "k8s-images-pinned",
        [
            Resource(
                "kubernetes:helm.sh/v4:Chart",
                "airflow",
                {"values": {"images": {"airflow": {"repository": "apache/airflow", "tag": None}}}},
            )
        ],
        {},
        ["kubernetes:helm.sh/v4:Chart 'airflow'", "values.images.airflow.repository", "no tag"],
    ),
    (
        "k8s-images-from-registry",
        [deployment(container(image="docker.io/library/postgres:17.7"))],
        {"registry": "registry.corp.example/mirror"},
        ["'web'", "docker.io/library/postgres:17.7", "under registry.corp.example/mirror/"],
    ),
    (
        "k8s-images-from-registry",
        [
            Resource(
                "kubernetes:helm.sh/v4:Chart",
                "nats",
                {"values": {"container": {"image": {"fullImageName": "docker.io/nats:2.14"}}}},
            )
        ],
        {"registry": "registry.corp.example/mirror"},
        ["'nats'", "values.container.image.fullImageName", "docker.io/nats:2.14"],
    ),
    (
        "k8s-statefulset-pvcs-retained",
        [
            Resource(
                STATEFUL_SET,
                "postgres",
                {
                    "spec": {
                        "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
                        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"},
                    }
                },
            )
        ],
        {},
        [STATEFUL_SET, "'postgres'", "whenDeleted", '"Delete"', 'required: "Retain"'],
    ),
    (
        "k8s-namespace-network-policy",
        [
            Resource(NAMESPACE, "ns", {"metadata": {"name": "apps"}}, urn="urn:ns"),
            Resource(
                NETWORK_POLICY,
                "allow-web",
                {
                    "metadata": {"name": "allow-web", "namespace": "apps"},
                    "spec": {
                        "podSelector": {"matchLabels": {"a": "b"}},
                        "policyTypes": ["Ingress"],
                    },
                },
            ),
        ],
        {},
        ["namespace 'apps'", NAMESPACE, "no default-deny", "allow-web", "podSelector {}"],
    ),
    (
        "k8s-namespace-network-policy",
        [deployment()],
        {},
        ["namespace 'apps'", DEPLOYMENT, "NetworkPolicies there: none"],
    ),
    (
        "k8s-no-plain-secrets",
        [
            Resource(
                "kubernetes:core/v1:ConfigMap",
                "airflow-config",
                {"data": {"sql_alchemy_conn": "postgresql://airflow:hunter22@postgres/airflow"}},
            )
        ],
        {},
        ["kubernetes:core/v1:ConfigMap 'airflow-config'", "data.sql_alchemy_conn", "password"],
    ),
    (
        "k8s-no-plain-secrets",
        [deployment(container(env=[{"name": "API_TOKEN", "value": "abc123"}]))],
        {},
        ["'web'", "containers[0].env[0] (API_TOKEN)", "credential", "secretKeyRef"],
    ),
]


def test_every_rule_has_a_negative_case():
    covered = {case[0] for case in NEGATIVE_CASES}
    assert covered == {rule.name for rule in RULES}, {r.name for r in RULES} - covered


@pytest.mark.parametrize(
    ("rule", "resources", "config", "expected"),
    NEGATIVE_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(NEGATIVE_CASES)],
)
def test_rule_fires_with_a_clear_message(rule, resources, config, expected):
    messages = run(rule, *resources, config=config)
    assert messages, f"{rule} did not fire"
    text = "\n".join(messages)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} missing from:\n{text}"
    # Other rules may fire on these minimal resources too; the named one must explain itself.
    assert all("required" in m for m in messages), text


# --- the compliant shapes, and edge cases -------------------------------------------------


def test_compliant_workload_passes_every_kubernetes_rule():
    resources = [
        deployment(securityContext={"runAsNonRoot": True}),
        Resource(
            NETWORK_POLICY,
            "default-deny",
            {
                "metadata": {"name": "default-deny", "namespace": "apps"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            },
        ),
    ]
    results = evaluate(
        resources, {"k8s-images-from-registry": {"registry": "registry.corp.example/mirror"}}
    )
    assert not any(results.values()), results


def test_compliant_bucket_passes():
    results = evaluate(
        [bucket(), full_block(), sse()], {"aws-deletion-protection": {"production": False}}
    )
    assert not any(results.values()), results


def test_account_level_public_access_block_covers_buckets():
    account = Resource(
        aws.S3_ACCOUNT_PUBLIC_ACCESS_BLOCK, "account", dict.fromkeys(aws.PUBLIC_ACCESS_FLAGS, True)
    )
    assert run("aws-s3-public-access-blocked", bucket(), account) == []


def test_bucket_link_by_name_without_dependencies():
    named = Resource(BUCKET, "archive", {"bucket": "acme-archive"}, urn="urn:other")
    block = Resource(
        BLOCK, "b", {**dict.fromkeys(aws.PUBLIC_ACCESS_FLAGS, True), "bucket": "acme-archive"}
    )
    assert run("aws-s3-public-access-blocked", named, block) == []


def test_deny_statements_may_use_wildcards():
    document = {
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "s3:*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]
    }
    policy = Resource("aws:iam/policy:Policy", "p", {"policy": json.dumps(document)})
    assert run("aws-iam-least-privilege", policy) == []


def test_unknown_values_are_left_for_pulumi_up():
    unknown_policy = Resource("aws:iam/rolePolicy:RolePolicy", "p", {"policy": UNKNOWN})
    unknown_flag = Resource(RDS, "db", {"storageEncrypted": UNKNOWN, "publiclyAccessible": UNKNOWN})
    results = evaluate([unknown_policy, unknown_flag], {})
    assert not any(results.values()), results


def test_deletion_protection_only_in_production():
    staging = Resource(
        RDS,
        "db",
        {"deletionProtection": False},
        provider={"defaultTags": json.dumps({"tags": {"environment": "staging"}})},
    )
    assert run("aws-deletion-protection", staging) == []
    assert run("aws-deletion-protection", staging, config={"production": True})
    assert run("aws-deletion-protection", staging, config={"productionEnvironments": ["staging"]})


def test_mwaa_opt_out():
    public = Resource(
        "aws:mwaa/environment:Environment", "a", {"webserverAccessMode": "PUBLIC_ONLY"}
    )
    assert run("aws-mwaa-private-webserver", public, config={"allowPublicWebserver": True}) == []
    assert run("aws-mwaa-private-webserver", Resource(public.type, "b", {})) == []


def test_digests_pin_images():
    pinned = deployment(container(image="registry.corp.example/mirror/app@sha256:" + "a" * 64))
    assert run("k8s-images-pinned", pinned) == []


def test_secret_references_are_not_secrets():
    env = [
        {"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/password"},
        {"name": "LIFTOFF_WRITE_KEYS_SECRET_ARN", "value": "arn:aws:secretsmanager:..."},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "pw"}}},
        {"name": "LIFTOFF_STREAM_URL", "value": "nats://nats.apps.svc:4222/EVENTS"},
    ]
    assert run("k8s-no-plain-secrets", deployment(container(env=env))) == []


def test_pvc_retention_defaults_to_retain():
    sts = Resource(STATEFUL_SET, "s", {"spec": {"volumeClaimTemplates": [{}]}})
    assert run("k8s-statefulset-pvcs-retained", sts) == []


def test_cronjob_pod_templates_are_found():
    cron = Resource(
        "kubernetes:batch/v1:CronJob",
        "nightly",
        {
            "spec": {
                "jobTemplate": {
                    "spec": {"template": {"spec": {"containers": [container(securityContext={})]}}}
                }
            }
        },
    )
    assert kubernetes.pod_spec(cron) is not None
    assert run("k8s-pod-security-restricted", cron)


def test_rules_do_not_mutate_their_input():
    resource = deployment(container(securityContext={}))
    before = copy.deepcopy(dict(resource.props))
    evaluate([resource], {})
    assert dict(resource.props) == before


def test_registry_knobs_are_documented_in_the_schema():
    assert "registry" in RULES_BY_NAME["k8s-images-from-registry"].config
    assert "production" in RULES_BY_NAME["aws-deletion-protection"].config
    assert "allowPublicWebserver" in RULES_BY_NAME["aws-mwaa-private-webserver"].config
    assert all(rule.enforcement == "mandatory" for rule in RULES)
