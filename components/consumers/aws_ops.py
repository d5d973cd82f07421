"""The ops function on AWS: what the platform's DAGs invoke (`dags/liftoff_operations.py`) —
repair an archived hour, rebuild typed tables and, given the collector's stores, run regulation
requests. It reads no stream; it runs in the VPC beside the warehouse.

Its environment is the ops function's contract (`services/operations/contract.py`); its
role gets what each of those needs and nothing else (the regulation's part:
`regulation_access`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.archive import Archive
from components.ingest import AwsPrivacyStores
from components.network import AwsPeer, Grant
from components.postgres import AwsPostgresContract, ClientDatabase
from services.archive.contract import ArchiveAccess
from services.consumers.reconcile import contract as reconcile
from services.operations import contract as operations
from services.postgres.contract import PostgresAccess
from services.suppression.contract import SuppressionAccess
from services.warehouse.columns import DeclaredColumns

if TYPE_CHECKING:
    from components.consumers.aws import VpcPlacement

# What a regulation does with a dead-letter queue: a scan (each message received once, kept
# invisible), the matching ones deleted, the others made visible again.
DEAD_LETTER_SCAN = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
]


@dataclass(frozen=True)
class OpsInputs:
    """What the ops function's environment names."""

    warehouse: PostgresAccess[pulumi.Input[str]]
    warehouse_secret_arn: pulumi.Input[str] | None
    archive: ArchiveAccess[pulumi.Input[str]]
    columns: DeclaredColumns | None
    privacy: AwsPrivacyStores | None = None
    """The collector's stores; None: the function runs no regulation."""
    dead_letter_queues: Sequence[aws.sqs.Queue] = ()
    """Every consumer's on-failure queue (a regulation deletes the users' events in them)."""


@dataclass(frozen=True)
class PendingOps:
    """What the loader's part of the consumers knows of the ops function, which is declared
    after every consumer (a regulation reaches their queues)."""

    opts: pulumi.ResourceOptions
    postgres: AwsPostgresContract
    database: ClientDatabase
    inputs: OpsInputs
    placement: VpcPlacement


def ops_function(
    name: str,
    pending: PendingOps,
    archive: Archive[AwsPeer],
    privacy: AwsPrivacyStores | None,
    dead_letter_queues: Sequence[aws.sqs.Queue],
    kms_key_arn: pulumi.Input[str],
    parent: pulumi.Resource,
) -> dict[str, Any]:
    """The ops function's `KinesisConsumerArgs` fields: its environment and its grants (the
    warehouse, the archive read; with `privacy`, regulations: the archive rewritten, the
    collector's stores, every dead-letter queue)."""
    inputs = pending.inputs
    access = [*database_access(pending.postgres, pending.database), archive.grant_read]
    if privacy is not None:
        inputs = dataclasses.replace(
            inputs, privacy=privacy, dead_letter_queues=tuple(dead_letter_queues)
        )
        access.append(archive.grant_write)
        access.append(regulation_access(name, privacy, dead_letter_queues, kms_key_arn, parent))
    return {
        "environment": lambda _: ops_environment(inputs),
        "timeout_seconds": 900,  # Lambda's maximum
        "memory_mb": 1024,
        "vpc": pending.placement,
        "consume_stream": False,
        "access": tuple(access),
    }


def ops_environment(inputs: OpsInputs) -> Mapping[str, pulumi.Input[str]]:
    """The function's whole environment, built by its contract."""
    repair = reconcile.ReconcileSettings(
        warehouse=inputs.warehouse,
        warehouse_secret_arn=inputs.warehouse_secret_arn,
        archive=inputs.archive,
        log_level="INFO",
        columns=inputs.columns,
    )
    privacy = inputs.privacy
    if privacy is None:
        return operations.FUNCTION.environment(operations.OpsFunctionSettings(reconcile=repair))
    queues = pulumi.Output.all(*(queue.name for queue in inputs.dead_letter_queues)).apply(
        lambda names: ",".join(f"sqs://{name}" for name in names)
    )
    return operations.FUNCTION.environment(
        operations.OpsFunctionSettings(
            reconcile=repair,
            suppression=SuppressionAccess(url=privacy.suppression_url),
            suppression_key_secret_arn=privacy.suppression_key_secret_arn,
            quarantine_url=privacy.quarantine_url,
            dead_letter_urls=queues if inputs.dead_letter_queues else None,
        )
    )


def regulation_access(
    name: str,
    privacy: AwsPrivacyStores,
    dead_letter_queues: Sequence[aws.sqs.Queue],
    kms_key_arn: pulumi.Input[str],
    parent: pulumi.Resource,
) -> Callable[[AwsPeer], Grant]:
    """What a regulation needs of the collector's stores and the consumers' queues: the
    suppression list's one object (read, rewritten; KMS through S3), its key's secret, and a
    scan of the quarantine (KMS-encrypted) and of each dead-letter queue (SQS-managed keys).
    The archive and the warehouse are granted by their capabilities."""

    def grant(peer: AwsPeer) -> Grant:
        assert peer.iam_role_name is not None
        key = aws_iam.grant_secret_read(
            f"{name}-suppression-key-policy",
            peer.iam_role_name,
            privacy.suppression_key_secret_arn,
            kms_key_arn,
            parent,
        )
        queues = [privacy.quarantine_queue_arn, *(queue.arn for queue in dead_letter_queues)]
        stores = aws_iam.grant_to_peer(
            f"{name}-regulation-policy",
            peer,
            [privacy.suppression_object_arn, kms_key_arn, *queues],
            lambda arns: [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": arns[0],
                },
                aws_iam.list_one_key_statement(arns[0]),  # a first read: NoSuchKey
                # The list's bucket and the quarantine queue are encrypted with the platform key.
                {
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": arns[1],
                },
                {"Effect": "Allow", "Action": DEAD_LETTER_SCAN, "Resource": sorted(arns[2:])},
            ],
            parent,
        )
        return Grant(peer.name, (key, stores))

    return grant


def database_access(
    postgres: AwsPostgresContract, database: ClientDatabase
) -> tuple[Callable[[AwsPeer], Grant], ...]:
    """The network path to Postgres and the read of `database`'s credentials secret."""
    return (postgres.grant_connect, lambda peer: postgres.grant_read_credentials(peer, database))
