"""The pulumi_policy wrapping: the policies the pack registers, their enforcement levels and
config schemas, and that they report what the rules find, with the engine's own argument
types (props behind the SDK's unknown-checking proxies). No PolicyPack is constructed: that
starts the analyzer server and blocks."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policy.liftoff_policy.pack import build_policies
from policy.liftoff_policy.registry import RULES
from policy.liftoff_policy.stack_config import policy_config_for_file
from tests import syntax
from tests.harness import ROOT, STACK_FILES

POLICY_DIR = ROOT / "policy"


def options(protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def policies() -> dict[str, ResourceValidationPolicy | StackValidationPolicy]:
    return {p.name: p for p in build_policies()}


def validate_resource(name, type_, props, config=None, provider=None, protect=False):
    reported: list[tuple[str, str | None]] = []
    args = ResourceValidationArgs(
        type_,
        unknown_checking_proxy(props),
        f"urn:pulumi:s::liftoff::{type_}::r",
        "r",
        options(protect),
        provider,
        config or {},
    )
    policies()[name].validate(args, lambda message, urn=None: reported.append((message, urn)))
    return reported


def test_one_mandatory_policy_per_rule():
    built = policies()
    assert list(built) == [rule.name for rule in RULES]
    for rule in RULES:
        policy = built[rule.name]
        assert policy.enforcement_level == EnforcementLevel.MANDATORY
        assert isinstance(policy, StackValidationPolicy) == (rule.check_stack is not None)
        if rule.config:
            assert set(policy.config_schema.properties) == set(rule.config)


def test_resource_policy_reports_with_the_engine_types():
    reported = validate_resource(
        "aws-rds-not-public", "aws:rds/instance:Instance", {"publiclyAccessible": True}
    )
    assert len(reported) == 1 and "publiclyAccessible is true" in reported[0][0]


def test_unknown_values_do_not_abort_the_policy():
    props = {
        "policy": UNKNOWN_STRING_VALUE,
        "inlinePolicies": [{"policy": UNKNOWN_STRING_VALUE}],
    }
    assert validate_resource("aws-iam-least-privilege", "aws:iam/role:Role", props) == []


def test_config_knobs_reach_the_rule():
    props = {"spec": {"containers": [{"name": "c", "image": "docker.io/library/nginx:1.27"}]}}
    pod = "kubernetes:core/v1:Pod"
    assert validate_resource("k8s-images-from-registry", pod, props) == []
    reported = validate_resource(
        "k8s-images-from-registry", pod, props, config={"registry": "mirror.example"}
    )
    assert "under mirror.example/" in reported[0][0]


def test_production_detected_from_the_provider_default_tags():
    provider = PolicyProviderResource(
        "pulumi:providers:aws",
        unknown_checking_proxy(
            {"defaultTags": json.dumps({"tags": {"environment": "production"}})}
        ),
        "urn:provider",
        "aws",
    )
    stream = "aws:kinesis/stream:Stream"
    reported = validate_resource("aws-deletion-protection", stream, {}, provider=provider)
    assert "protect is false" in reported[0][0]
    protected = validate_resource(
        "aws-deletion-protection", stream, {}, provider=provider, protect=True
    )
    assert protected == []


def test_stack_policy_links_resources_through_property_dependencies():
    bucket = PolicyResource(
        "aws:s3/bucket:Bucket",
        unknown_checking_proxy({"bucket": UNKNOWN_STRING_VALUE}),
        "urn:bucket",
        "archive",
        options(),
        None,
        None,
        [],
        {},
    )
    flags = {
        "blockPublicAcls": True,
        "blockPublicPolicy": True,
        "ignorePublicAcls": True,
        "restrictPublicBuckets": True,
    }
    block = PolicyResource(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        unknown_checking_proxy({**flags, "bucket": UNKNOWN_STRING_VALUE}),
        "urn:block",
        "archive-block",
        options(),
        None,
        None,
        [],
        {"bucket": [bucket]},
    )
    policy = policies()["aws-s3-public-access-blocked"]

    def check(resources):
        reported: list[tuple[str, str | None]] = []
        policy.validate(
            StackValidationArgs(resources, {}), lambda m, urn=None: reported.append((m, urn))
        )
        return reported

    assert check([bucket, block]) == []
    missing = check([bucket])
    assert missing and missing[0][1] == "urn:bucket"
    assert "no public access block" in missing[0][0]


def test_entry_point_constructs_the_pack_from_the_rules():
    source = (POLICY_DIR / "__main__.py").read_text()
    calls = [
        node.func.id
        for node in ast.walk(syntax.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "PolicyPack" in calls and "build_policies" in calls
    # Only the entry point constructs a PolicyPack (doing so starts a server and blocks).
    others = [
        p for p in POLICY_DIR.rglob("*.py") if p.name != "__main__.py" and "venv" not in p.parts
    ]
    assert not [p for p in others if "PolicyPack(" in p.read_text()]


def _pin(requirements: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)", requirements.read_text(), re.MULTILINE)
    assert match, f"{package} not pinned in {requirements}"
    return match.group(1)


def test_pack_project_files():
    import yaml

    manifest = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    assert manifest["description"]
    pack_requirements = POLICY_DIR / "requirements.txt"
    root_requirements = ROOT / "requirements.txt"
    for package in ("pulumi-policy", "pulumi"):
        assert _pin(pack_requirements, package) == _pin(root_requirements, package), package


def test_config_for_stack_cli(tmp_path):
    import subprocess
    import sys

    for path in STACK_FILES:
        done = subprocess.run(
            [sys.executable, str(POLICY_DIR / "config_for_stack.py"), str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(done.stdout) == policy_config_for_file(path.read_text())


def test_public_mwaa_web_server_is_allowed_only_when_the_stack_opts_in():
    from policy.liftoff_policy.stack_config import policy_config

    opted_in = policy_config({"liftoff:airflow": '{"webAccess": "public"}'})
    assert opted_in["aws-mwaa-private-webserver"] == {"allowPublicWebserver": True}
    private = policy_config({"liftoff:airflow": {"webAccess": "private"}})
    assert "aws-mwaa-private-webserver" not in private
