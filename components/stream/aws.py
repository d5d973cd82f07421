"""The stream on AWS: a Kinesis data stream encrypted with the platform's KMS key."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.network import AwsPeer, Grant
from components.observability import CloudWatchMetrics
from components.stream import FanOutConsumer, StreamConnection
from components.stream.settings import AwsStream

WRITE_ACTIONS = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"]
READ_ACTIONS = [
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
]
# Reading through an enhanced fan-out consumer: actions on the consumer's ARN.
FAN_OUT_ACTIONS = ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]


@dataclass(frozen=True)
class KinesisStreamArgs:
    settings: AwsStream
    kms_key_arn: pulumi.Input[str]
    """The customer-managed key the records are encrypted with at rest."""
    protect: bool = True
    """Default: true. Refuse to delete the stream (and its retained events) on destroy."""


class KinesisStream(pulumi.ComponentResource):
    """A Kinesis data stream (on-demand or provisioned) with server-side KMS encryption.

    Producers and consumers get access through `grant_write` / `grant_read`, which attach a
    role policy scoped to this stream's ARN and the key (no wildcard actions or resources).
    """

    def __init__(
        self, name: str, args: KinesisStreamArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:stream:KinesisStream", name, None, opts)
        settings = args.settings
        self._name = name
        self._kms_key_arn = args.kms_key_arn
        self.retention_hours = settings.retention_hours
        provisioned = settings.mode == "provisioned"
        self.stream = aws.kinesis.Stream(
            f"{name}-stream",
            retention_period=settings.retention_hours,
            stream_mode_details={"stream_mode": "PROVISIONED" if provisioned else "ON_DEMAND"},
            shard_count=settings.shards if provisioned else None,
            encryption_type="KMS",
            kms_key_id=args.kms_key_arn,
            shard_level_metrics=["IncomingRecords", "OutgoingRecords", "IteratorAgeMilliseconds"],
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.connection = StreamConnection(
            url=pulumi.Output.concat("kinesis://", self.stream.name), name=self.stream.name
        )
        self.arn: pulumi.Output[str] = self.stream.arn
        self.metrics = CloudWatchMetrics("AWS/Kinesis", {"StreamName": self.stream.name})
        self.register_outputs({"streamArn": self.stream.arn, "url": self.connection.url})

    def _grant(
        self, peer: AwsPeer, verb: str, actions: list[str], kms_actions: list[str]
    ) -> aws.iam.RolePolicy:
        return aws_iam.grant_with_key(
            f"{self._name}-{verb}-{peer.name}",
            peer,
            self.stream.arn,
            self._kms_key_arn,
            lambda arn: [{"Effect": "Allow", "Action": actions, "Resource": arn}],
            kms_actions,
            self,
        )

    def grant_write(self, peer: AwsPeer) -> Grant:
        """Let `peer`'s role put records (and encrypt them with the stream's key)."""
        return Grant(
            peer.name, (self._grant(peer, "write", WRITE_ACTIONS, ["kms:GenerateDataKey"]),)
        )

    def grant_read(self, peer: AwsPeer) -> Grant:
        """Let `peer`'s role read records (and decrypt them)."""
        return Grant(peer.name, (self._grant(peer, "read", READ_ACTIONS, ["kms:Decrypt"]),))

    def add_fan_out_consumer(self, peer: AwsPeer) -> FanOutConsumer:
        """Register an enhanced fan-out consumer named after `peer` (its own 2 MB/s per shard,
        pushed over SubscribeToShard) and let `peer`'s role subscribe through it only.

        Use with `grant_read` (the records are still the stream's, encrypted with its key)."""
        consumer = aws.kinesis.StreamConsumer(
            f"{self._name}-consumer-{peer.name}",
            name=peer.name,
            stream_arn=self.stream.arn,
            opts=pulumi.ResourceOptions(parent=self),
        )
        grant = aws_iam.grant_to_peer(
            f"{self._name}-subscribe-{peer.name}",
            peer,
            [consumer.arn],
            lambda arns: [{"Effect": "Allow", "Action": FAN_OUT_ACTIONS, "Resource": arns[0]}],
            self,
        )
        return FanOutConsumer(arn=consumer.arn, grant=Grant(peer.name, (grant,)))
