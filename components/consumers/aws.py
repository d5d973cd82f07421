"""Consumers on AWS: one Lambda function per consumer on its own Kinesis event-source mapping."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.archive import Archive
from components.aws_lambda import packaged_function
from components.aws_logs import LogSettings
from components.consumers import (
    ARCHIVER_RUNTIME,
    LOADER_RUNTIME,
    RECONCILE_RUNTIME,
    ConsumerFunction,
    ConsumerRuntime,
    broadcaster_runtime,
    destination_document,
)
from components.consumers.aws_ops import OpsInputs, PendingOps, database_access, ops_function
from components.consumers.settings import Destination, WarehouseSettings
from components.ingest import AwsPrivacyStores
from components.network import AwsNetworkContract, AwsPeer, Grant
from components.postgres import AwsPostgresContract, ClientDatabase
from components.stream import AwsStreamContract, FanOutConsumer
from services.consumers.archiver import contract as archiver
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.loader import contract as loader
from services.consumers.runner.contract import FunctionRuntime
from services.postgres.contract import PostgresAccess
from services.stream.address import SQS_PREFIX

DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600  # the SQS maximum
# Kinesis gives each shard 5 GetRecords/s and 2 MB/s of reads shared by every polling
# consumer, and takes at most 1 MB/s of writes. Two pollers (archiver and loader) each keep up
# with a shard written at its maximum; every broadcaster reads through its own enhanced
# fan-out consumer (2 MB/s per shard for itself), so adding destinations never slows the
# archive or the warehouse. See README "Kinesis read budget".
SHARED_THROUGHPUT_CONSUMERS = ("archiver", "loader")
# AWS APIs the in-VPC functions (loader, reconcile) call: their credentials and their
# dead-letter queue; the archive through the S3 gateway endpoint.
IN_VPC_APIS = ("secretsmanager", "sqs", "s3")
MAX_RECORD_AGE_SECONDS = 7 * 24 * 3600  # the event-source mapping maximum


def physical_name(prefix: str, suffix: str, limit: int = 64) -> str:
    """`<prefix>-<suffix>`, shortened with a stable hash when longer than `limit`."""
    name = f"{prefix}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


@dataclass(frozen=True)
class VpcPlacement:
    """Run the function inside the VPC (to reach RDS), with these egress rules."""

    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    egress: Sequence[dict[str, Any]]
    endpoints: Sequence[pulumi.Resource] = ()
    """The VPC endpoints of the AWS APIs the function calls: the mapping waits for them."""


@dataclass(frozen=True)
class KinesisConsumerArgs:
    runtime: ConsumerRuntime
    stream: AwsStreamContract
    function_name: str
    logs: LogSettings
    environment: Callable[[FunctionRuntime[pulumi.Input[str]]], Mapping[str, pulumi.Input[str]]]
    """The function's whole environment, built by its contract (`services/consumers/*`) from
    the runtime group every consumer function is told (its name, its dead-letter queue)."""
    batch_size: int = 500
    """Default: 500 records per invocation."""
    batching_window_seconds: int = 5
    """Default: 5. How long the mapping gathers records before invoking."""
    maximum_retry_attempts: int = 10
    """Default: 10. After that the failing records' positions go to the dead-letter queue."""
    maximum_record_age_seconds: int | None = None
    """Default: the stream's retention, capped at Lambda's 7-day maximum: a record is never
    given up for its age while the stream still holds it (retries are what is bounded)."""
    timeout_seconds: int = 120
    memory_mb: int = 512
    vpc: VpcPlacement | None = None
    """Default: outside any VPC (the function reaches only AWS APIs)."""
    consume_stream: bool = True
    """Default: true. False for a function invoked on demand (no event-source mapping)."""
    enhanced_fan_out: bool | None = None
    """Default: true, except for the consumers in `SHARED_THROUGHPUT_CONSUMERS`, which poll the
    shards' shared read throughput. True: reads through its own enhanced fan-out consumer
    (`aws.kinesis.StreamConsumer`), outside the shared budget."""
    starting_position: str = "TRIM_HORIZON"
    """Default: `TRIM_HORIZON` (all the stream holds). Broadcasters: `LATEST`, so a new
    destination is not sent the retention. Applies when the mapping is created only."""
    access: Sequence[Callable[[AwsPeer], Grant]] = ()
    """Default: none. The grants of other capabilities (and of its own secrets) the function
    needs, made once its role exists: the mapping waits for them, and a function invoked on
    demand names them as what its caller waits for (`ConsumerFunction.ready`)."""


class KinesisConsumer(pulumi.ComponentResource):
    """A stream consumer as a Lambda function.

    Its event-source mapping is its checkpoint: records are retried (bisecting failing
    batches, reporting partial failures so finished records are not redone) and the
    positions of records that still fail are sent to the consumer's SQS dead-letter queue,
    where the function itself also parks events it cannot process, with the reason.
    Its role may read the stream, write its logs and its dead-letter queue, plus what the
    capabilities grant it (`args.access`, to its `peer`).
    """

    def __init__(
        self, name: str, args: KinesisConsumerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:consumers:KinesisConsumer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.runtime = args.runtime
        self.dead_letter_queue = aws.sqs.Queue(
            f"{name}-dead-letter",
            sqs_managed_sse_enabled=True,
            message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
            opts=child,
        )
        self._declare_function(name, args)
        permissions, source_arn = self._grant(name, args)
        self.mapping: aws.lambda_.EventSourceMapping | None = None
        if not args.consume_stream:
            self.register_outputs({"functionArn": self.function.arn})
            return
        self.mapping = self._declare_mapping(name, args, source_arn, permissions)
        self.register_outputs(
            {"functionArn": self.function.arn, "deadLetterQueue": self.dead_letter_queue.url}
        )

    def _declare_function(self, name: str, args: KinesisConsumerArgs) -> None:
        """The function (in the VPC, behind its own security group, when `args.vpc` is set)."""
        child = pulumi.ResourceOptions(parent=self)
        vpc_config = None
        if args.vpc is not None:
            self.security_group = aws.ec2.SecurityGroup(
                f"{name}-sg",
                vpc_id=args.vpc.vpc_id,
                description=f"liftoff {args.runtime.name} consumer",
                egress=list(args.vpc.egress),
                opts=child,
            )
            vpc_config = {
                "subnet_ids": args.vpc.subnet_ids,
                "security_group_ids": [self.security_group.id],
            }
        packaged = packaged_function(
            name,
            function_name=args.function_name,
            description=f"liftoff {args.runtime.name}: stream consumer",
            handler=args.runtime.handler,
            environment=args.environment(
                FunctionRuntime(
                    consumer_name=args.runtime.name,
                    dead_letter_url=pulumi.Output.concat(SQS_PREFIX, self.dead_letter_queue.name),
                    log_level="INFO",
                )
            ),
            parent=self,
            logs=args.logs,
            memory_mb=args.memory_mb,
            timeout_seconds=args.timeout_seconds,
            vpc_config=vpc_config,
        )
        self.role = packaged.role
        self.function = packaged.function
        self.log_group = packaged.log_group
        self.peer = AwsPeer(
            args.runtime.name,
            iam_role_name=self.role.name,
            security_group_id=self.security_group.id if args.vpc is not None else None,
        )

    def _grant(
        self, name: str, args: KinesisConsumerArgs
    ) -> tuple[list[pulumi.Resource], pulumi.Input[str]]:
        """What the mapping needs before it is created, and the ARN it reads from (the stream,
        or its enhanced fan-out consumer)."""
        child = pulumi.ResourceOptions(parent=self)
        permissions: list[pulumi.Resource] = []
        dead_letter_policy = aws.iam.RolePolicy(
            f"{name}-role-policy",
            role=self.role.id,
            policy=self.dead_letter_queue.arn.apply(
                lambda arn: aws_iam.document(
                    [
                        {
                            "Effect": "Allow",
                            "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
                            "Resource": arn,
                        }
                    ]
                )
            ),
            opts=child,
        )
        # Lambda checks, when the mapping is created, that the role may read the stream (or
        # subscribe through the consumer) and send to the on-failure queue; what the function
        # does with each batch needs the rest of its access before the first batch arrives.
        permissions.append(dead_letter_policy)
        self.access = tuple(
            resource for grant in args.access for resource in grant(self.peer).resources
        )
        permissions.extend(self.access)
        if args.consume_stream:
            permissions.extend(args.stream.grant_read(self.peer).resources)
        source_arn: pulumi.Input[str] = args.stream.arn
        self.fan_out: FanOutConsumer | None = None
        fan_out = args.enhanced_fan_out
        if fan_out is None:
            fan_out = args.runtime.name not in SHARED_THROUGHPUT_CONSUMERS
        if args.consume_stream and fan_out:
            self.fan_out = args.stream.add_fan_out_consumer(self.peer)
            source_arn = self.fan_out.arn
            permissions.extend(self.fan_out.grant.resources)
        if args.vpc is not None:
            permissions.extend(args.vpc.endpoints)
        return permissions, source_arn

    def _declare_mapping(
        self,
        name: str,
        args: KinesisConsumerArgs,
        source_arn: pulumi.Input[str],
        permissions: list[pulumi.Resource],
    ) -> aws.lambda_.EventSourceMapping:
        return aws.lambda_.EventSourceMapping(
            f"{name}-mapping",
            event_source_arn=source_arn,
            function_name=self.function.arn,
            starting_position=args.starting_position,
            batch_size=args.batch_size,
            maximum_batching_window_in_seconds=args.batching_window_seconds,
            function_response_types=["ReportBatchItemFailures"],
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=args.maximum_retry_attempts,
            maximum_record_age_in_seconds=args.maximum_record_age_seconds
            or min(args.stream.retention_hours * 3600, MAX_RECORD_AGE_SECONDS),
            # One batch per shard at a time keeps each user's events in order.
            parallelization_factor=1,
            destination_config={"on_failure": {"destination_arn": self.dead_letter_queue.arn}},
            # startingPosition is ForceNew: a change would delete and re-create the mapping
            # (Lambda refuses two for one function and stream), restarting its position.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=permissions, ignore_changes=["startingPosition"]
            ),
        )

    def described(self, *, broadcaster: bool = False) -> ConsumerFunction:
        """This consumer as other capabilities name it (its function and its queue)."""
        return ConsumerFunction(
            name=self.runtime.name,
            function_name=self.function.name,
            function_arn=self.function.arn,
            queue_name=self.dead_letter_queue.name,
            broadcaster=broadcaster,
            log_group_name=self.log_group.name,
            ready=self.access,
        )


@dataclass(frozen=True)
class AwsConsumersArgs:
    prefix: str
    """Physical-name prefix, e.g. `liftoff-prod`."""
    stream: AwsStreamContract
    archive: Archive[AwsPeer]
    postgres: AwsPostgresContract
    warehouse: WarehouseSettings
    destinations: tuple[Destination, ...]
    network: AwsNetworkContract
    kms_key_arn: pulumi.Input[str]
    logs: LogSettings
    privacy: AwsPrivacyStores | None = None
    """The collector's stores a regulation acts on; None: the ops function runs none."""


class AwsConsumers(pulumi.ComponentResource):
    """The archiver, the warehouse loader (inside the VPC, next to RDS) and one broadcaster
    per destination, each a `KinesisConsumer` with only the grants it needs."""

    def __init__(
        self, name: str, args: AwsConsumersArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:consumers:AwsConsumers", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.warehouse: ClientDatabase | None = None
        """The warehouse database the loader writes; None without a warehouse."""
        self.reconciler: KinesisConsumer | None = None
        """The function repairing the warehouse from the archive; None without a warehouse."""
        archive = args.archive.settings
        self.archiver = self._consumer(
            f"{name}-archiver",
            args,
            ARCHIVER_RUNTIME,
            opts=child,
            environment=lambda runtime: archiver.FUNCTION.environment(
                archiver.ArchiverFunctionSettings(
                    runtime=runtime,
                    archiving=archiver.Archiving(archive=args.archive.client().access),
                )
            ),
            # Lambda's limits: 10000 records and a 300 s window per batch.
            batch_size=min(archive.batch_max_events, 10000),
            batching_window_seconds=min(archive.batch_max_seconds, 300),
            timeout_seconds=300,
            memory_mb=1024,
            access=(args.archive.grant_write,),
        )

        self.loader: KinesisConsumer | None = None
        # The ops function comes last: a regulation reaches every consumer's queue.
        ops = self._loader(name, args, child) if args.warehouse.enabled else None

        self.broadcasters: dict[str, KinesisConsumer] = {}
        for destination in args.destinations:
            self._broadcaster(name, args, destination, child)
        if ops is not None:
            self._reconciler(name, args, ops)
        self.functions: tuple[ConsumerFunction, ...] = (
            self.archiver.described(),
            *([self.loader.described()] if self.loader is not None else []),
            *(c.described(broadcaster=True) for _, c in sorted(self.broadcasters.items())),
        )
        self.reconcile: ConsumerFunction | None = (
            self.reconciler.described() if self.reconciler is not None else None
        )
        self.regulation: ConsumerFunction | None = self.reconcile if args.privacy else None
        self.register_outputs({})

    def _loader(
        self, name: str, args: AwsConsumersArgs, child: pulumi.ResourceOptions
    ) -> PendingOps:
        warehouse = args.warehouse
        database = args.postgres.add_database(warehouse.database)
        connection = database.connection
        self.warehouse = database
        child = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[database.ready])
        )
        warehouse_access: PostgresAccess[pulumi.Input[str]] = PostgresAccess(
            host=connection.dns_name,
            port=connection.port.apply(str),
            database=connection.database,
            sslmode="require",
        )
        placement = VpcPlacement(
            vpc_id=args.network.vpc_id,
            subnet_ids=args.network.private_subnet_ids,
            egress=[
                args.postgres.client_egress(),
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": ["0.0.0.0/0"],
                    "description": "AWS APIs (VPC endpoints)",
                },
            ],
            endpoints=args.network.endpoints_for(IN_VPC_APIS),
        )
        self.loader = self._consumer(
            f"{name}-loader",
            args,
            LOADER_RUNTIME,
            opts=child,
            environment=lambda runtime: loader.FUNCTION.environment(
                loader.LoaderFunctionSettings(
                    runtime=runtime,
                    warehouse=warehouse_access,
                    warehouse_secret_arn=database.secret_arn,
                    columns=warehouse.columns or None,
                )
            ),
            batch_size=min(warehouse.batch_max_events, 10000),
            batching_window_seconds=min(warehouse.batch_max_seconds, 300),
            vpc=placement,
            access=database_access(args.postgres, database),
        )

        inputs = OpsInputs(
            warehouse=warehouse_access,
            warehouse_secret_arn=database.secret_arn,
            archive=args.archive.client().access,
            columns=warehouse.columns or None,
        )
        return PendingOps(child, args.postgres, database, inputs, placement)

    def _reconciler(self, name: str, args: AwsConsumersArgs, pending: PendingOps) -> None:
        """The ops function the DAGs invoke (`components/consumers/aws_ops.py`); with the
        collector's stores, regulations reach every consumer's queue."""
        queues = [c.dead_letter_queue for c in (self.archiver, self.loader) if c is not None]
        queues += [c.dead_letter_queue for _, c in sorted(self.broadcasters.items())]
        fields = ops_function(
            f"{name}-reconcile", pending, args.archive, args.privacy, queues, args.kms_key_arn, self
        )
        self.reconciler = self._consumer(
            f"{name}-reconcile", args, RECONCILE_RUNTIME, opts=pending.opts, **fields
        )

    def _consumer(
        self,
        name: str,
        args: AwsConsumersArgs,
        runtime: ConsumerRuntime,
        *,
        opts: pulumi.ResourceOptions,
        **fields: Any,
    ) -> KinesisConsumer:
        """One `KinesisConsumer` of `runtime` on the stack's stream, named and logged like the
        others; `fields` are the rest of its `KinesisConsumerArgs`."""
        return KinesisConsumer(
            name,
            KinesisConsumerArgs(
                runtime=runtime,
                stream=args.stream,
                function_name=physical_name(args.prefix, runtime.name),
                logs=args.logs,
                **fields,
            ),
            opts=opts,
        )

    def _broadcaster(
        self,
        name: str,
        args: AwsConsumersArgs,
        destination: Destination,
        child: pulumi.ResourceOptions,
    ) -> None:
        runtime = broadcaster_runtime(destination)
        secret = aws.secretsmanager.Secret(
            f"{name}-{runtime.name}-secrets",
            description=f"liftoff destination {destination.name} credentials",
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-{runtime.name}-secrets-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(json.dumps(destination.secrets, sort_keys=True)),
            opts=child,
        )
        consumer = self._consumer(
            f"{name}-{runtime.name}",
            args,
            runtime,
            opts=child,
            environment=lambda runtime: broadcaster.FUNCTION.environment(
                broadcaster.BroadcasterFunctionSettings(
                    runtime=runtime,
                    broadcast=broadcaster.Broadcast(
                        destination=destination_document(destination), secret_arn=secret.arn
                    ),
                )
            ),
            batch_size=100,
            batching_window_seconds=1,
            timeout_seconds=300,
            starting_position="LATEST",  # third parties (GA4) do not deduplicate a replay
            access=(self._secret_access(f"{name}-{runtime.name}", secret.arn, args.kms_key_arn),),
        )
        self.broadcasters[destination.name] = consumer

    def _secret_access(
        self, name: str, secret_arn: pulumi.Input[str], kms_key_arn: pulumi.Input[str]
    ) -> Callable[[AwsPeer], Grant]:
        """The grant reading a destination's credentials secret (a policy of this component)."""

        def grant(peer: AwsPeer) -> Grant:
            assert peer.iam_role_name is not None
            policy = aws_iam.grant_secret_read(
                f"{name}-reads-secrets", peer.iam_role_name, secret_arn, kms_key_arn, self
            )
            return Grant(peer.name, (policy,))

        return grant
