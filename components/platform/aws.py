"""The AWS target: managed services, one KMS key for the data at rest, tags via the provider."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from components.airflow.aws import MwaaAirflow, MwaaAirflowArgs
from components.airflow.settings import AwsAirflowSettings
from components.archive import Archive
from components.archive.aws import ArchiveBucket, ArchiveBucketArgs
from components.aws_logs import LogSettings
from components.config import PlatformConfig
from components.consumers import AwsConsumersContract
from components.consumers.aws import AwsConsumers, AwsConsumersArgs
from components.ingest import AwsIngestContract
from components.ingest.aws import LambdaCollector, LambdaCollectorArgs
from components.network import AwsNetworkContract, AwsPeer
from components.network.aws import (
    INTERFACE_ENDPOINTS,
    MWAA_ENDPOINTS,
    AwsNetwork,
    AwsNetworkArgs,
)
from components.network.settings import AwsSettings
from components.platform import Assembly, PlatformParts
from components.postgres import AwsPostgresContract
from components.postgres.aws import RdsPostgres, RdsPostgresArgs
from components.stream import AwsStreamContract
from components.stream.aws import KinesisStream, KinesisStreamArgs

if TYPE_CHECKING:
    from components.observability.aws import AwsObservability


@dataclass
class AwsParts(PlatformParts[AwsPeer]):
    """The AWS capabilities, typed with their AWS contracts (the archive always exists)."""

    network: AwsNetworkContract
    postgres: AwsPostgresContract
    stream: AwsStreamContract
    ingest: AwsIngestContract
    archive: Archive[AwsPeer]
    consumers: AwsConsumersContract
    observability: AwsObservability | None = None


@dataclass(frozen=True)
class AwsAssembly(Assembly):
    """What every AWS capability of the stack shares besides: the target's settings, the
    platform's KMS key (data at rest, secrets, logs) and the log groups' retention."""

    settings: AwsSettings
    key: aws.kms.Key
    logs: LogSettings


def build(parent: pulumi.Resource, name: str, config: PlatformConfig) -> AwsParts:
    shared = _assembly(parent, name, config)
    parts = _workloads(shared, *_stores(shared))
    if config.airflow.aws is not None and config.airflow.aws.enabled:
        parts.airflow = _airflow(shared, parts, config.airflow.aws)
    if config.observability.enabled:
        _observe(shared, parts)
    parts.outputs["vpcId"] = parts.network.vpc_id
    parts.outputs["archive"] = parts.archive.location.bucket.apply(
        lambda bucket: {"bucket": bucket}
    )
    return parts


def _assembly(parent: pulumi.Resource, name: str, config: PlatformConfig) -> AwsAssembly:
    """The provider (it carries the stack's tags onto every taggable AWS resource) and the
    platform key."""
    settings = config.network.aws
    assert settings is not None
    provider = aws.Provider(
        f"{name}-aws",
        region=settings.region,
        default_tags={"tags": {**config.tags, "liftoff:stack": config.stack}},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    child = pulumi.ResourceOptions(parent=parent, providers={"aws": provider})
    key = _platform_key(Assembly(name, config, parent, child), settings.region, provider)
    logs = LogSettings(retention_days=settings.log_retention_days, kms_key_arn=key.arn)
    return AwsAssembly(name, config, parent, child, settings, key, logs)


def _platform_key(shared: Assembly, region: str, provider: aws.Provider) -> aws.kms.Key:
    config, name = shared.config, shared.name
    identity = aws.get_caller_identity_output(
        opts=pulumi.InvokeOutputOptions(parent=shared.parent, provider=provider)
    )
    key = aws.kms.Key(
        f"{name}-key",
        description=f"liftoff {config.stack}: encryption at rest for the platform's data",
        enable_key_rotation=True,
        deletion_window_in_days=30,
        # The account's default statement plus CloudWatch Logs, so log groups use this key,
        # and CloudWatch alarms when the alarm topic (encrypted with it) is created here.
        policy=identity.account_id.apply(lambda account: _key_policy(config, account, region)),
        opts=shared.child,
    )
    aws.kms.Alias(
        f"{name}-key-alias",
        name=f"alias/{config.prefix}",
        target_key_id=key.key_id,
        opts=shared.child,
    )
    return key


def _stores(
    shared: AwsAssembly,
) -> tuple[AwsNetwork, RdsPostgres, KinesisStream, ArchiveBucket]:
    """What holds the data, first: the network, Postgres, the stream and the archive."""
    config, name, child, key = shared.config, shared.name, shared.child, shared.key
    assert config.postgres.aws is not None and config.stream.aws is not None
    assert config.archive.aws is not None  # the archive: always on AWS
    endpoints = INTERFACE_ENDPOINTS + (MWAA_ENDPOINTS if config.airflow.enabled else ())
    network = AwsNetwork(
        f"{name}-network",
        AwsNetworkArgs(
            settings=shared.settings,
            discovery_domain=f"{config.prefix}.internal",
            interface_endpoints=endpoints,
            logs=shared.logs,
        ),
        opts=child,
    )
    postgres = RdsPostgres(
        f"{name}-postgres",
        RdsPostgresArgs(
            settings=config.postgres.aws,
            network=network,
            identifier=f"{config.prefix}-postgres",
            kms_key_arn=key.arn,
            logs=shared.logs,
        ),
        opts=child,
    )
    protect = config.deletion_protection
    stream = KinesisStream(
        f"{name}-stream",
        KinesisStreamArgs(settings=config.stream.aws, kms_key_arn=key.arn, protect=protect),
        opts=child,
    )
    archive = ArchiveBucket(
        f"{name}-archive",
        ArchiveBucketArgs(
            settings=config.archive.aws,
            region=shared.settings.region,
            kms_key_arn=key.arn,
            name_prefix=f"{config.prefix}-archive-",
            protect=protect,
        ),
        opts=child,
    )
    return network, postgres, stream, archive


def _workloads(
    shared: AwsAssembly,
    network: AwsNetwork,
    postgres: RdsPostgres,
    stream: KinesisStream,
    archive: ArchiveBucket,
) -> AwsParts:
    """The processes on the stores: the collector and the consumers."""
    config, name, child, key = shared.config, shared.name, shared.child, shared.key
    assert config.ingest.aws is not None
    ingest = LambdaCollector(
        f"{name}-ingest",
        LambdaCollectorArgs(
            settings=config.ingest.aws,
            sources=config.sources,
            stream=stream,
            function_name=f"{config.prefix}-collector",
            kms_key_arn=key.arn,
            logs=shared.logs,
            protect=config.deletion_protection,
        ),
        opts=child,
    )
    consumers = AwsConsumers(
        f"{name}-consumers",
        AwsConsumersArgs(
            prefix=config.prefix,
            stream=stream,
            archive=archive,
            postgres=postgres,
            warehouse=config.warehouse,
            destinations=config.destinations,
            network=network,
            kms_key_arn=key.arn,
            logs=shared.logs,
            privacy=ingest.privacy,
        ),
        opts=child,
    )
    return AwsParts(network, postgres, stream, ingest, archive, consumers)


def _airflow(shared: AwsAssembly, parts: AwsParts, settings: AwsAirflowSettings) -> MwaaAirflow:
    config = shared.config
    return MwaaAirflow(
        f"{shared.name}-airflow",
        MwaaAirflowArgs(
            settings=settings,
            network=parts.network,
            environment_name=f"{config.prefix}-airflow",
            region=shared.settings.region,
            kms_key_arn=shared.key.arn,
            reconcile=parts.consumers.reconcile,
            regulation=parts.consumers.regulation,
            protect=config.deletion_protection,
            logs=shared.logs,
        ),
        opts=shared.child,
    )


def _alarm_topic_created(config: PlatformConfig) -> bool:
    chosen = config.observability.aws
    return chosen is not None and chosen.enabled and not chosen.alarm_topic_arn


def _key_policy(config: PlatformConfig, account: str, region: str) -> str:
    from components.aws_logs import platform_key_policy

    policy = platform_key_policy(account, region)
    if not _alarm_topic_created(config):
        return policy
    from components import aws_iam
    from components.observability.aws import alarm_key_statement

    statements = json.loads(policy)["Statement"]
    return aws_iam.document([*statements, alarm_key_statement(account, region, config.prefix)])


def _observe(shared: AwsAssembly, parts: AwsParts) -> None:
    from components.observability.aws import AwsObservability, AwsObservabilityArgs

    config = shared.config
    assert config.observability.aws is not None and config.postgres.aws is not None
    observability = AwsObservability(
        f"{shared.name}-observability",
        AwsObservabilityArgs(
            settings=config.observability.aws,
            prefix=config.prefix,
            region=shared.settings.region,
            kms_key_arn=shared.key.arn,
            ingest=parts.ingest,
            stream=parts.stream,
            consumers=parts.consumers,
            postgres=parts.postgres,
            db_instance_class=config.postgres.aws.instance_class,
            db_storage_gb=config.postgres.aws.storage_gb,
            tags=config.tags,
        ),
        opts=shared.child,
    )
    parts.observability = observability
    parts.outputs["alarmTopicArn"] = observability.topic_arn
    parts.outputs["dashboardUrl"] = observability.dashboard_url
