"""Every IAM policy liftoff declares, checked against IAM's own catalogue of actions.

The mocks accept any policy; IAM does not grant an action on a resource of the wrong type (a
statement scoped to a log group never allows `logs:DescribeLogGroups`, which has no resource
type). parliament (duo-labs) carries IAM's catalogue of actions, their resource types and
condition keys; the harness gives declared resources ARNs of AWS's real shapes.
"""

from __future__ import annotations

import json

from parliament import analyze_policy_string

# What would make a statement deny what it means to allow, or be refused by IAM.
BLOCKING = {
    "MALFORMED",
    "RESOURCE_MISMATCH",  # an action on a resource type it does not have (or `*` required)
    "RESOURCE_STAR",  # `*` where the action has resource types: scope it
    "UNKNOWN_ACTION",
    "UNKNOWN_PREFIX",
    "UNKNOWN_CONDITION_FOR_ACTION",
    "UNKNOWN_OPERATOR",
    "MISMATCHED_TYPE",
}


def test_every_iam_statement_matches_its_actions_resource_types(aws_stack):
    policies = aws_stack.of_type("aws:iam/rolePolicy:RolePolicy")
    assert policies
    problems = []
    for resource in policies:
        analysis = analyze_policy_string(resource.inputs["policy"])
        for finding in analysis.findings:
            if finding.issue in BLOCKING:
                problems.append(f"{resource.name}: {finding.issue} {json.dumps(finding.detail)}")
    assert problems == []


def test_the_check_catches_a_statement_on_the_wrong_resource_type():
    statement = {
        "Effect": "Allow",
        "Action": ["logs:DescribeLogGroups"],
        "Resource": "arn:aws:logs:eu-west-1:123456789012:log-group:airflow-x-*",
    }
    document = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    issues = {f.issue for f in analyze_policy_string(document).findings}
    assert "RESOURCE_MISMATCH" in issues
