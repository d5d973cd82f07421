"""Postgres on AWS: RDS, encrypted and private, discoverable by a stable name."""

from __future__ import annotations

import json
import re

import pulumi

from components.network import AwsPeer
from components.network.aws import AwsNetwork, AwsNetworkArgs
from components.network.settings import AwsSettings
from components.platform import public_view
from components.postgres.aws import RdsPostgres, RdsPostgresArgs
from components.postgres.settings import AwsPostgresSettings
from tests.conftest import stack_run
from tests.harness import run_program, run_with_config

RDS = "aws:rds/instance:Instance"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
FUNCTION = "aws:lambda/function:Function"


def role_policies_of(run, function):
    """The inline policies attached to `function`'s role (by role id or name)."""
    role = next(
        r for r in run.of_type("aws:iam/role:Role") if r.inputs["arn"] == function.inputs["role"]
    )
    names = {role.inputs["name"], f"{role.name}-id"}
    return [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] in names]


def test_instance_is_encrypted_private_and_protected():
    instance = stack_run("aws").one(RDS).inputs
    assert instance["storageEncrypted"] is True
    assert instance["kmsKeyId"].startswith("arn:aws:kms:")
    assert instance["storageType"] == "gp3"
    assert instance["publiclyAccessible"] is False
    assert instance["deletionProtection"] is True
    assert instance["skipFinalSnapshot"] is False
    assert instance["identifier"] == "liftoff-aws-postgres"


def test_final_snapshot_name_is_new_per_instance_generation(aws_stack):
    """Destroy -> re-create -> destroy must not collide with the first generation's final
    snapshot (RDS keeps it: DBSnapshotAlreadyExists). The suffix is a RandomId kept in state,
    re-drawn whenever an input that replaces the instance changes."""
    instance = aws_stack.one(RDS)
    generation = aws_stack.one("random:index/randomId:RandomId", "liftoff-postgres-generation")
    snapshot = instance.inputs["finalSnapshotIdentifier"]
    identifier = instance.inputs["identifier"]
    assert snapshot == f"{identifier}-final-{generation.inputs['hex']}"
    assert generation.urn in instance.dependencies
    # Every input whose change replaces the RDS instance is a keeper.
    keepers = generation.inputs["keepers"]
    assert keepers["identifier"] == identifier
    assert keepers["kmsKeyId"] == instance.inputs["kmsKeyId"]
    assert keepers["username"] == instance.inputs["username"]
    assert keepers["dbName"] == instance.inputs["dbName"]
    assert keepers["engine"] == instance.inputs["engine"]
    # RDS snapshot identifiers: a letter first, letters/digits/single hyphens, at most 255.
    assert re.fullmatch(r"[a-z](-?[a-z0-9])*", snapshot) and len(snapshot) <= 255


def test_final_snapshot_name_is_deterministic_and_changes_with_a_replacement():
    def generation(run):
        return run.one("random:index/randomId:RandomId", "liftoff-postgres-generation")

    first = stack_run("aws")
    again = run_program("stacks/aws.yaml")
    assert first.one(RDS).inputs == again.one(RDS).inputs
    # Another identifier replaces the instance: the keepers differ, so the id is drawn anew.
    other = run_program("stacks/aws.yaml", stack="aws-copy")
    assert generation(other).inputs["keepers"] != generation(first).inputs["keepers"]
    assert generation(other).inputs["hex"] != generation(first).inputs["hex"]


def test_log_exports_go_to_groups_created_first_with_retention_and_the_key(aws_stack):
    instance = aws_stack.one(RDS)
    groups = {g.inputs.get("name"): g for g in aws_stack.of_type(LOG_GROUP)}
    key = aws_stack.one("aws:kms/key:Key").inputs["arn"]
    assert instance.inputs["enabledCloudwatchLogsExports"]
    for kind in instance.inputs["enabledCloudwatchLogsExports"]:
        group = groups[f"/aws/rds/instance/{instance.inputs['identifier']}/{kind}"]
        assert group.urn in instance.dependencies
        assert group.inputs["retentionInDays"] >= 90
        assert group.inputs["kmsKeyId"] == key


def test_every_setup_invocation_waits_for_the_policies_and_endpoint_it_needs(aws_stack):
    """Lambda checks nothing when an Invocation is created: it runs at once, so the role's
    secret grants and (in a VPC liftoff created) the Secrets Manager endpoint must exist."""
    invocations = aws_stack.of_type("aws:lambda/invocation:Invocation")
    assert invocations
    functions = {f.inputs["name"]: f for f in aws_stack.of_type(FUNCTION)}
    endpoints = {
        e.inputs["serviceName"].rsplit(".", 1)[-1]: e
        for e in aws_stack.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    for invocation in invocations:
        function = functions[invocation.inputs["functionName"]]
        secrets = {
            function.inputs["environment"]["variables"]["LIFTOFF_ADMIN_SECRET_ARN"],
            json.loads(invocation.inputs["input"])["clientSecretArn"],
        }
        for secret in secrets:
            granting = [
                policy
                for policy in role_policies_of(aws_stack, function)
                if any(
                    "secretsmanager:GetSecretValue" in s["Action"] and s["Resource"] == secret
                    for s in json.loads(policy.inputs["policy"])["Statement"]
                )
            ]
            assert granting, f"no policy of {function.name} reads {secret}"
            assert any(p.urn in invocation.dependencies for p in granting), (
                f"{invocation.name} does not wait for the policy reading {secret}"
            )
        if endpoints:
            assert endpoints["secretsmanager"].urn in invocation.dependencies


def test_instance_follows_the_stack_settings():
    aws_prod = stack_run("aws").one(RDS).inputs
    assert aws_prod["engine"] == "postgres" and aws_prod["engineVersion"] == "17"
    assert aws_prod["instanceClass"] == "db.r7g.large"
    assert aws_prod["allocatedStorage"] == 100
    assert aws_prod["multiAz"] is True
    assert aws_prod["backupRetentionPeriod"] == 14
    byo = stack_run("aws-byo-network").one(RDS).inputs
    assert byo["engineVersion"] == "16" and byo["multiAz"] is False


def test_password_is_generated_and_secret():
    run = stack_run("aws")
    instance = run.one(RDS)
    assert "password" in instance.secret_paths
    version = run.one(
        "aws:secretsmanager/secretVersion:SecretVersion", "liftoff-postgres-credentials-value"
    )
    assert "secretString" in version.secret_paths


def test_tls_is_forced():
    params = stack_run("aws").one("aws:rds/parameterGroup:ParameterGroup").inputs
    assert params["family"] == "postgres17"
    assert {"name": "rds.force_ssl", "value": "1"} in [
        {"name": p["name"], "value": p["value"]} for p in params["parameters"]
    ]


def test_security_group_admits_only_granted_groups():
    run = stack_run("aws")
    group = run.one("aws:ec2/securityGroup:SecurityGroup", "liftoff-postgres-sg")
    assert not group.inputs.get("ingress") and not group.inputs.get("egress")
    rules = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert {r.name for r in rules} == {
        "liftoff-postgres-from-setup",
        "liftoff-postgres-from-loader",
        "liftoff-postgres-from-reconcile",
    }
    # The mocks give each resource the id "<name>-id".
    groups = {r.name: f"{r.name}-id" for r in run.of_type("aws:ec2/securityGroup:SecurityGroup")}
    for rule in rules:
        assert rule.inputs["securityGroupId"] == groups["liftoff-postgres-sg"]
        assert rule.inputs["referencedSecurityGroupId"] in groups.values()
        assert "cidrIpv4" not in rule.inputs


def test_discovery_name_points_at_the_rds_endpoint():
    run = stack_run("aws")
    target = run.one("aws:servicediscovery/instance:Instance").inputs
    address = run.outputs["postgres"]["host"]
    assert target["attributes"] == {"AWS_INSTANCE_CNAME": address}
    service = run.one("aws:servicediscovery/service:Service").inputs
    assert service["name"] == "postgres"
    assert service["dnsConfig"]["dnsRecords"] == [{"ttl": 30, "type": "CNAME"}]
    assert run.outputs["postgres"]["dnsName"] == "postgres.liftoff-aws.internal"


def test_grant_connect_admits_exactly_the_peer_group():
    def program():
        network = AwsNetwork(
            "net",
            AwsNetworkArgs(
                settings=AwsSettings(
                    region="eu-west-1",
                    vpc_id="vpc-0a1b2c3d4e5f60718",
                    private_subnet_ids=("subnet-0a1b2c3d4e5f60719", "subnet-0a1b2c3d4e5f6071a"),
                ),
                discovery_domain="test.internal",
            ),
        )
        postgres = RdsPostgres(
            "db",
            RdsPostgresArgs(settings=AwsPostgresSettings(), network=network, identifier="test-db"),
        )
        postgres.grant_connect(AwsPeer("loader", security_group_id="sg-0123456789abcdef0"))
        pulumi.export("dns", postgres.connection.dns_name)

    run = run_with_config({}, stack="unit", program=program)
    rule = run.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.name == "db-from-loader"
    assert rule.inputs["referencedSecurityGroupId"] == "sg-0123456789abcdef0"
    assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (
        5432,
        5432,
        "tcp",
    )
    assert "cidrIpv4" not in rule.inputs
    assert run.outputs["dns"] == "postgres.test.internal"


def _aws_client_database():
    def program():
        network = AwsNetwork(
            "net",
            AwsNetworkArgs(settings=AwsSettings(region="eu-west-1"), discovery_domain="t.internal"),
        )
        postgres = RdsPostgres(
            "db",
            RdsPostgresArgs(
                settings=AwsPostgresSettings(),
                network=network,
                identifier="t-db",
                kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/k",
            ),
        )
        client = postgres.add_database("airflow")
        pulumi.export("client", public_view(client.connection))
        pulumi.export("password", client.connection.password)

    return run_with_config({}, stack="unit", program=program)


def test_add_database_invokes_the_in_vpc_setup_function():
    run = _aws_client_database()
    function = run.one("aws:lambda/function:Function").inputs
    assert function["handler"] == "services.aws_lambda.ensure_database_handler"
    assert function["vpcConfig"]["subnetIds"]
    (group,) = function["vpcConfig"]["securityGroupIds"]
    rule = run.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").inputs
    assert rule["referencedSecurityGroupId"] == group
    invocation = run.one("aws:lambda/invocation:Invocation").inputs
    client_secret = run.one("aws:secretsmanager/secret:Secret", "db-airflow-credentials")
    assert json.loads(invocation["input"]) == {
        "clientSecretArn": client_secret.inputs["arn"],
        "database": "airflow",
        "role": "airflow",
    }
    assert run.outputs["client"]["database"] == "airflow"
    assert "password" in run.secret_outputs


def test_setup_function_reads_exactly_the_secrets_it_needs():
    run = _aws_client_database()
    reads = {
        r.name: json.loads(r.inputs["policy"])["Statement"]
        for r in run.of_type("aws:iam/rolePolicy:RolePolicy")
        if r.name.startswith("db-setup-reads-")
    }
    admin_arn = run.one("aws:secretsmanager/secret:Secret", "db-credentials").inputs["arn"]
    client_arn = run.one("aws:secretsmanager/secret:Secret", "db-airflow-credentials").inputs["arn"]
    assert reads["db-setup-reads-admin"][0]["Resource"] == admin_arn
    assert reads["db-setup-reads-airflow"][0]["Resource"] == client_arn
    assert reads["db-setup-reads-airflow"][-1] == {
        "Effect": "Allow",
        "Action": ["kms:Decrypt"],
        "Resource": "arn:aws:kms:eu-west-1:123456789012:key/k",
    }
    client_value = run.one(
        "aws:secretsmanager/secretVersion:SecretVersion", "db-airflow-credentials-value"
    )
    assert json.loads(client_value.inputs["secretString"])["username"] == "airflow"
    assert "secretString" in client_value.secret_paths


def test_major_upgrade_is_allowed_only_for_a_major_change_in_the_maintenance_window():
    import pytest

    from tests.harness import run_program

    def instance(run):
        return run.one("aws:rds/instance:Instance").inputs

    fresh = instance(stack_run("aws"))
    assert fresh["allowMajorVersionUpgrade"] is False
    assert fresh["applyImmediately"] is False
    same = run_program("stacks/aws.yaml", previous_outputs={"postgresMajorVersion": "17"})
    assert instance(same)["allowMajorVersionUpgrade"] is False
    upgrade = run_program("stacks/aws.yaml", previous_outputs={"postgresMajorVersion": "16"})
    assert instance(upgrade)["allowMajorVersionUpgrade"] is True
    assert instance(upgrade)["applyImmediately"] is False
    now = run_program(
        "stacks/aws.yaml",
        overrides={"liftoff:postgres": {"version": "17", "applyImmediately": True}},
        previous_outputs={"postgresMajorVersion": "16"},
    )
    assert instance(now)["applyImmediately"] is True
    # RDS never downgrades a major version.
    # (The runtime may wrap the error in its own ValueError; the message is what users see.)
    with pytest.raises(ValueError, match="got '16'; allowed: '17'"):
        run_program(
            "stacks/aws.yaml",
            overrides={"liftoff:postgres": {"version": "16"}},
            previous_outputs={"postgresMajorVersion": "17"},
        )


def test_parameter_group_outlives_a_major_upgrade():
    """A new major replaces the parameter group (its family); the old one is still in use by
    the instance until RDS applies the upgrade, so deleting it would fail the update."""
    for stack in ("aws", "aws-byo-network"):
        params = stack_run(stack).one("aws:rds/parameterGroup:ParameterGroup")
        assert params.retain_on_delete, stack
