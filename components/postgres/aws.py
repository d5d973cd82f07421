"""Postgres on AWS: RDS PostgreSQL in private subnets, discoverable through Cloud Map."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import aws_iam
from components.aws_lambda import packaged_function
from components.aws_logs import LogSettings, log_group
from components.deployed import own_stack
from components.network import AwsNetworkContract, AwsPeer, Grant
from components.observability import CloudWatchMetrics
from components.postgres import (
    PORT,
    ClientDatabase,
    PostgresConnection,
    check_client_name,
)
from components.postgres.major_version import check_major_version, deployed_major_version
from components.postgres.settings import AwsPostgresSettings
from services.postgres import contract as postgres

SETUP_HANDLER = "services.aws_lambda.ensure_database_handler"
# AWS APIs the setup function calls from inside the VPC (services/postgres/database.py).
SETUP_APIS = ("secretsmanager",)
# What the instance exports to CloudWatch Logs, each into `/aws/rds/instance/<id>/<type>`.
LOG_EXPORTS = ("postgresql", "upgrade")


@dataclass(frozen=True)
class RdsPostgresArgs:
    settings: AwsPostgresSettings
    network: AwsNetworkContract
    identifier: str
    """RDS instance identifier, e.g. `liftoff-prod-postgres`; also names the final snapshot."""
    kms_key_arn: pulumi.Input[str] | None = None
    """Default: the account's `aws/rds` key. The platform passes its own customer-managed key."""
    logs: LogSettings | None = None
    """Default: 365-day retention, AWS-managed encryption. Log groups of the exports and of
    the database-setup function."""


class RdsPostgres(pulumi.ComponentResource):
    """An encrypted, private RDS PostgreSQL instance with generated credentials.

    Nothing can connect until a grant admits a peer's security group: the instance's group has
    no rules of its own. TLS is enforced (`rds.force_ssl`). The credentials are kept in Secrets
    Manager (same JSON shape as RDS-managed secrets) and exposed as Pulumi secrets.
    """

    def __init__(
        self, name: str, args: RdsPostgresArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:postgres:RdsPostgres", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        self._name = name
        self._args = args
        self._setup: aws.lambda_.Function | None = None
        self._logs = args.logs or LogSettings(retention_days=365, kms_key_arn=None)
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", args.identifier) or "--" in args.identifier:
            raise ValueError(f"RDS identifier {args.identifier!r} is not valid")

        password = random.RandomPassword(
            f"{name}-password",
            length=40,
            # Alphanumeric only: RDS rejects some punctuation and URLs would need escaping.
            special=False,
            opts=child,
        )
        subnet_group, parameters = self._declare_placement(name, args)
        self.instance = self._declare_instance(name, args, password, subnet_group, parameters)
        self._declare_credentials(name, args, password)
        dns_name = args.network.register_cname(name, "postgres", self.instance.address, self)
        self.connection = PostgresConnection(
            host=self.instance.address,
            port=pulumi.Output.from_input(PORT),
            database=pulumi.Output.from_input(settings.database),
            dns_name=dns_name,
            username=pulumi.Output.from_input(settings.username),
            password=pulumi.Output.secret(password.result),
        )
        self.metrics = CloudWatchMetrics(
            "AWS/RDS", {"DBInstanceIdentifier": self.instance.identifier}
        )
        self.register_outputs(
            {
                "address": self.instance.address,
                "dnsName": dns_name,
                "securityGroupId": self.security_group.id,
                "credentialsSecretArn": self.credentials.arn,
            }
        )

    def _declare_placement(
        self, name: str, args: RdsPostgresArgs
    ) -> tuple[aws.rds.SubnetGroup, aws.rds.ParameterGroup]:
        """The security group, private subnets and parameters the instance runs with."""
        child = pulumi.ResourceOptions(parent=self)
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.network.vpc_id,
            description="liftoff Postgres: admits only granted platform security groups",
            tags={"Name": f"{args.identifier}"},
            opts=child,
        )
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            subnet_ids=args.network.private_subnet_ids,
            description="liftoff Postgres private subnets",
            opts=child,
        )
        parameters = aws.rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{args.settings.version}",
            description="liftoff Postgres: TLS required, slow queries logged",
            parameters=[
                {"name": "rds.force_ssl", "value": "1"},
                {"name": "log_min_duration_statement", "value": "1000"},
            ],
            # A major upgrade changes the family, which the provider can only do by
            # replacement (`family` forces a new group): Pulumi creates the new group, points
            # the instance at it, then deletes the old one, which RDS refuses while the
            # instance still uses it (until the maintenance window with applyImmediately
            # false). Retained, the old group is only dropped from the state; README
            # "Postgres major version upgrade" says when to delete it.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        return subnet_group, parameters

    def _declare_instance(
        self,
        name: str,
        args: RdsPostgresArgs,
        password: random.RandomPassword,
        subnet_group: aws.rds.SubnetGroup,
        parameters: aws.rds.ParameterGroup,
    ) -> aws.rds.Instance:
        settings = args.settings
        # RDS creates its export groups without retention unless they exist before the instance.
        export_groups = [
            log_group(
                f"{name}-logs-{kind}",
                log_group_name=f"/aws/rds/instance/{args.identifier}/{kind}",
                logs=self._logs,
                parent=self,
            )
            for kind in LOG_EXPORTS
        ]
        generation = self._declare_generation(name, args)
        return aws.rds.Instance(
            f"{name}-instance",
            identifier=args.identifier,
            engine="postgres",
            engine_version=settings.version,
            allow_major_version_upgrade=self._major_upgrade(name, settings),
            auto_minor_version_upgrade=True,
            instance_class=settings.instance_class,
            allocated_storage=settings.storage_gb,
            # Storage autoscaling headroom; RDS only grows storage when it runs low.
            max_allocated_storage=min(settings.storage_gb * 4, 65536),
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_name=settings.database,
            username=settings.username,
            password=password.result,
            port=PORT,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[self.security_group.id],
            parameter_group_name=parameters.name,
            publicly_accessible=False,
            multi_az=settings.high_availability,
            backup_retention_period=settings.backup_retention_days,
            copy_tags_to_snapshot=True,
            deletion_protection=settings.deletion_protection,
            skip_final_snapshot=False,
            final_snapshot_identifier=pulumi.Output.concat(
                args.identifier, "-final-", generation.hex
            ),
            delete_automated_backups=not settings.deletion_protection,
            iam_database_authentication_enabled=True,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            # Changes (a major upgrade included) wait for the maintenance window unless the
            # stack sets liftoff:postgres.applyImmediately.
            apply_immediately=settings.apply_immediately,
            opts=pulumi.ResourceOptions(parent=self, depends_on=export_groups),
        )

    def _major_upgrade(self, name: str, settings: AwsPostgresSettings) -> pulumi.Output[bool]:
        """RDS refuses a major engine_version change without this flag: set only when the
        change is one (this stack's previous major, read back from its own outputs)."""

        def major_upgrade(deployed: str | None) -> bool:
            check_major_version(deployed, settings.version, upgrade_in_place=True)
            return deployed is not None and deployed != settings.version

        return deployed_major_version(own_stack(name, self)).apply(major_upgrade)

    def _declare_generation(self, name: str, args: RdsPostgresArgs) -> random.RandomId:
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        # A new suffix per instance generation: a replaced (or destroyed and re-created)
        # instance must not reuse the final snapshot name of its predecessor, which RDS keeps.
        return random.RandomId(
            f"{name}-generation",
            byte_length=4,
            keepers={
                # Inputs whose change replaces the instance.
                "identifier": args.identifier,
                "engine": "postgres",
                "kmsKeyId": pulumi.Output.from_input(args.kms_key_arn or "aws/rds"),
                "username": settings.username,
                "dbName": settings.database,
            },
            opts=child,
        )

    def _declare_credentials(
        self, name: str, args: RdsPostgresArgs, password: random.RandomPassword
    ) -> None:
        """The admin credentials in Secrets Manager."""
        settings = args.settings
        self.credentials, _ = self._credentials_secret(
            f"{name}-credentials",
            "liftoff Postgres admin credentials",
            host=self.instance.address,
            database=settings.database,
            username=settings.username,
            password=password.result,
        )

    def _credentials_secret(
        self,
        name: str,
        description: str,
        *,
        host: pulumi.Input[str],
        database: str,
        username: str,
        password: pulumi.Input[str],
    ) -> tuple[aws.secretsmanager.Secret, aws.secretsmanager.SecretVersion]:
        """A login's credentials in a Secrets Manager secret of their own, in the RDS-managed
        secret's JSON shape (the setup function and the clients read it)."""
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            name,
            description=description,
            kms_key_id=self._args.kms_key_arn,
            recovery_window_in_days=30 if self._args.settings.deletion_protection else 7,
            opts=child,
        )
        value = {
            "engine": "postgres",
            "host": host,
            "port": PORT,
            "dbname": database,
            "username": username,
            "password": password,
        }
        version = aws.secretsmanager.SecretVersion(
            f"{name}-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.json_dumps(value),
            opts=child,
        )
        return secret, version

    def grant_connect(self, peer: AwsPeer) -> Grant:
        """Admit `peer`'s security group to the Postgres port."""
        if peer.security_group_id is None:
            raise ValueError(f"grant_connect({peer.name!r}) on AWS needs the peer's security group")
        rule = aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-from-{peer.name}",
            security_group_id=self.security_group.id,
            referenced_security_group_id=peer.security_group_id,
            ip_protocol="tcp",
            from_port=PORT,
            to_port=PORT,
            description=f"Postgres from {peer.name}",
            opts=pulumi.ResourceOptions(parent=self),
        )
        return Grant(peer.name, (rule,))

    def _setup_function(self) -> aws.lambda_.Function:
        """The in-VPC function that creates client databases (made once, on first use)."""
        if self._setup is not None:
            return self._setup
        name = f"{self._name}-setup"
        child = pulumi.ResourceOptions(parent=self)
        network = self._args.network
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=network.vpc_id,
            description="liftoff database setup function",
            egress=[
                {
                    "protocol": "tcp",
                    "from_port": PORT,
                    "to_port": PORT,
                    "security_groups": [self.security_group.id],
                    "description": "Postgres",
                },
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "Secrets Manager (VPC endpoint or the customer's egress)",
                },
            ],
            opts=child,
        )
        connect = self.grant_connect(AwsPeer("setup", security_group_id=group.id))
        packaged = packaged_function(
            name,
            function_name=f"{self._args.identifier}-setup",
            description="liftoff: creates client databases and roles on the platform Postgres",
            handler=SETUP_HANDLER,
            environment=postgres.ENSURE_DATABASE_FUNCTION.environment(
                postgres.EnsureDatabaseFunctionSettings(admin_secret_arn=self.credentials.arn)
            ),
            parent=self,
            logs=self._logs,
            memory_mb=256,
            timeout_seconds=60,
            vpc_config={
                "subnet_ids": network.private_subnet_ids,
                "security_group_ids": [group.id],
            },
        )
        self._setup_role = packaged.role
        reads_admin = aws_iam.grant_secret_read(
            f"{self._name}-setup-reads-admin",
            self._setup_role.id,
            self.credentials.arn,
            self._args.kms_key_arn,
            self,
        )
        # What every invocation waits for: the way to the instance and the admin secret.
        self._setup_access = (*connect.resources, reads_admin)
        self._setup = packaged.function
        return self._setup

    def grant_read_credentials(self, peer: AwsPeer, client: ClientDatabase) -> Grant:
        """Let `peer`'s role read a client database's credentials secret."""
        if peer.iam_role_name is None or client.secret_arn is None:
            raise ValueError(f"grant_read_credentials({peer.name!r}) needs an IAM role")
        policy = aws_iam.grant_secret_read(
            f"{self._name}-{client.role}-credentials-{peer.name}",
            peer.iam_role_name,
            client.secret_arn,
            self._args.kms_key_arn,
            self,
        )
        return Grant(peer.name, (policy,))

    def client_egress(self) -> dict[str, Any]:
        """The egress rule a client's security group needs toward Postgres (the other half of
        `grant_connect`, for groups that restrict egress)."""
        return {
            "protocol": "tcp",
            "from_port": PORT,
            "to_port": PORT,
            "security_groups": [self.security_group.id],
            "description": "Postgres",
        }

    def add_database(self, client: str, database: str | None = None) -> ClientDatabase:
        """Give `client` a login role and a database it owns (`database`, default: `client`).

        Its credentials are generated into a Secrets Manager secret of its own; the in-VPC
        setup function, invoked on every change of its inputs, creates or updates the role and
        database with the admin credentials, which the client never receives.
        """
        database = database or client
        check_client_name(client, database)
        password = random.RandomPassword(
            f"{self._name}-{client}-password",
            length=40,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        dns_name = self.connection.dns_name
        secret, version = self._credentials_secret(
            f"{self._name}-{client}-credentials",
            f"liftoff Postgres credentials of {client}",
            host=dns_name,
            database=database,
            username=client,
            password=password.result,
        )
        invocation = self._invoke_setup(client, database, secret, version)
        connection = PostgresConnection(
            host=self.connection.host,
            port=self.connection.port,
            database=pulumi.Output.from_input(database),
            dns_name=dns_name,
            username=pulumi.Output.from_input(client),
            password=pulumi.Output.secret(password.result),
        )
        return ClientDatabase(
            connection=connection, ready=invocation, role=client, secret_arn=secret.arn
        )

    def _invoke_setup(
        self,
        client: str,
        database: str,
        secret: aws.secretsmanager.Secret,
        version: aws.secretsmanager.SecretVersion,
    ) -> aws.lambda_.Invocation:
        """Run the setup function for `client` once its role may read the client's secret."""
        function = self._setup_function()
        reads_client = aws_iam.grant_secret_read(
            f"{self._name}-setup-reads-{client}",
            self._setup_role.id,
            secret.arn,
            self._args.kms_key_arn,
            self,
        )
        request = {"database": database, "role": client}
        return aws.lambda_.Invocation(
            f"{self._name}-{client}-setup",
            function_name=function.name,
            input=secret.arn.apply(lambda arn: json.dumps({"clientSecretArn": arn, **request})),
            # Re-run when the request or the code changes (the password lives in the secret).
            triggers={
                "request": hashlib.sha256(json.dumps(request).encode()).hexdigest(),
                "code": function.source_code_hash,
            },
            # Lambda checks none of these when the invocation is created: without the edges the
            # engine may invoke before the role can read either secret or before the Secrets
            # Manager endpoint of a new VPC answers.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    self.instance,
                    version,
                    *self._setup_access,
                    reads_client,
                    *self._args.network.endpoints_for(SETUP_APIS),
                ],
            ),
        )
