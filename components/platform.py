"""The whole platform for one stack: wires the capabilities for the configured target.

Only the chosen target's modules are imported, so a Kubernetes stack never loads pulumi_aws
(and an AWS stack never needs a kubeconfig).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi

from components.config import PlatformConfig
from components.postgres import MAJOR_VERSION_OUTPUT


class Platform(pulumi.ComponentResource):
    """Every capability of one customer environment, as the root of the stack's resources."""

    outputs: dict[str, Any]

    def __init__(
        self, name: str, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:index:Platform", name, None, opts)
        self.config = config
        self.outputs = {"target": config.target}
        if config.target == "aws":
            self._build_aws(name, config)
        else:
            self._build_kubernetes(name, config)
        self.register_outputs(self.outputs)

    def _build_aws(self, name: str, config: PlatformConfig) -> None:
        import pulumi_aws as aws

        from components.airflow.aws import MwaaAirflow, MwaaAirflowArgs
        from components.archive.aws import ArchiveBucket, ArchiveBucketArgs
        from components.aws_logs import LogSettings
        from components.consumers.aws import AwsConsumers, AwsConsumersArgs
        from components.ingest.aws import LambdaCollector, LambdaCollectorArgs
        from components.network.aws import (
            INTERFACE_ENDPOINTS,
            MWAA_ENDPOINTS,
            AwsNetwork,
            AwsNetworkArgs,
        )
        from components.postgres.aws import RdsPostgres, RdsPostgresArgs
        from components.stream.aws import KinesisStream, KinesisStreamArgs

        assert config.aws is not None
        # An explicit provider carries the stack's tags onto every taggable AWS resource.
        provider = aws.Provider(
            f"{name}-aws",
            region=config.aws.region,
            default_tags={"tags": {**config.tags, "liftoff:stack": config.stack}},
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, providers={"aws": provider})
        identity = aws.get_caller_identity_output(
            opts=pulumi.InvokeOutputOptions(parent=self, provider=provider)
        )
        region = config.aws.region
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"liftoff {config.stack}: encryption at rest for the platform's data",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            # The account's default statement plus CloudWatch Logs, so log groups use this key,
            # and CloudWatch alarms when the alarm topic (encrypted with it) is created here.
            policy=identity.account_id.apply(
                lambda account: self._key_policy(config, account, region)
            ),
            opts=child,
        )
        logs = LogSettings(retention_days=config.aws.log_retention_days, kms_key_arn=self.key.arn)
        aws.kms.Alias(
            f"{name}-key-alias",
            name=f"alias/{config.prefix}",
            target_key_id=self.key.key_id,
            opts=child,
        )
        endpoints = INTERFACE_ENDPOINTS + (MWAA_ENDPOINTS if config.airflow.enabled else ())
        self.network = AwsNetwork(
            f"{name}-network",
            AwsNetworkArgs(
                settings=config.aws,
                discovery_domain=f"{config.prefix}.internal",
                interface_endpoints=endpoints,
                logs=logs,
            ),
            opts=child,
        )
        self.postgres = RdsPostgres(
            f"{name}-postgres",
            RdsPostgresArgs(
                settings=config.postgres,
                network=self.network,
                identifier=f"{config.prefix}-postgres",
                kms_key_arn=self.key.arn,
                logs=logs,
            ),
            opts=child,
        )
        self.stream = KinesisStream(
            f"{name}-stream",
            KinesisStreamArgs(
                settings=config.stream,
                kms_key_arn=self.key.arn,
                protect=config.deletion_protection,
            ),
            opts=child,
        )
        self.ingest = LambdaCollector(
            f"{name}-ingest",
            LambdaCollectorArgs(
                settings=config.ingest,
                sources=config.sources,
                stream=self.stream,
                function_name=f"{config.prefix}-collector",
                kms_key_arn=self.key.arn,
                logs=logs,
            ),
            opts=child,
        )
        assert config.archive is not None  # always set on AWS
        self.archive = ArchiveBucket(
            f"{name}-archive",
            ArchiveBucketArgs(
                settings=config.archive,
                region=config.aws.region,
                kms_key_arn=self.key.arn,
                name_prefix=f"{config.prefix}-archive-",
                protect=config.deletion_protection,
            ),
            opts=child,
        )
        self.consumers = AwsConsumers(
            f"{name}-consumers",
            AwsConsumersArgs(
                prefix=config.prefix,
                stream=self.stream,
                archive=self.archive,
                archive_settings=config.archive,
                postgres=self.postgres,
                warehouse=config.warehouse,
                destinations=config.destinations,
                network=self.network,
                kms_key_arn=self.key.arn,
                logs=logs,
            ),
            opts=child,
        )
        if config.airflow.enabled:
            reconciler = getattr(self.consumers, "reconciler", None)
            self.airflow = MwaaAirflow(
                f"{name}-airflow",
                MwaaAirflowArgs(
                    settings=config.airflow,
                    network=self.network,
                    environment_name=f"{config.prefix}-airflow",
                    region=config.aws.region,
                    kms_key_arn=self.key.arn,
                    reconcile_function_arn=reconciler.function.arn if reconciler else None,
                    reconcile_function_name=reconciler.function.name if reconciler else None,
                    protect=config.deletion_protection,
                    logs=logs,
                ),
                opts=child,
            )
            self.outputs["airflowUrl"] = self.airflow.endpoint.url
        if config.observability.enabled:
            self._observe_aws(name, config, child)
        self.outputs["vpcId"] = self.network.vpc_id
        self.outputs["postgres"] = self.postgres.connection.public_view()
        # Read back on the next update to refuse (Kubernetes) or allow (RDS) a major change.
        self.outputs[MAJOR_VERSION_OUTPUT] = config.postgres.version
        self.outputs["archive"] = self.archive.location.bucket.apply(
            lambda bucket: {"bucket": bucket}
        )
        self._export_ingest()
        self._export_warehouse()

    def _alarm_topic_created(self, config: PlatformConfig) -> bool:
        return config.observability.enabled and not config.observability.alarm_topic_arn

    def _key_policy(self, config: PlatformConfig, account: str, region: str) -> str:
        from components.aws_logs import platform_key_policy

        policy = platform_key_policy(account, region)
        if not self._alarm_topic_created(config):
            return policy
        from components import aws_iam
        from components.observability.aws import alarm_key_statement

        statements = json.loads(policy)["Statement"]
        return aws_iam.document([*statements, alarm_key_statement(account, region, config.prefix)])

    def _observe_aws(
        self, name: str, config: PlatformConfig, child: pulumi.ResourceOptions
    ) -> None:
        from components.observability.aws import (
            AwsObservability,
            AwsObservabilityArgs,
            ConsumerFunction,
        )

        assert config.aws is not None
        consumers = [
            ConsumerFunction(
                "archiver",
                self.consumers.archiver.function.name,
                self.consumers.archiver.dead_letter_queue.name,
            )
        ]
        if self.consumers.loader is not None:
            loader = self.consumers.loader
            consumers.append(
                ConsumerFunction("loader", loader.function.name, loader.dead_letter_queue.name)
            )
        for destination, broadcaster in sorted(self.consumers.broadcasters.items()):
            consumers.append(
                ConsumerFunction(
                    f"broadcaster-{destination}",
                    broadcaster.function.name,
                    broadcaster.dead_letter_queue.name,
                    broadcaster=True,
                )
            )
        reconciler = getattr(self.consumers, "reconciler", None)
        self.observability = AwsObservability(
            f"{name}-observability",
            AwsObservabilityArgs(
                settings=config.observability,
                prefix=config.prefix,
                region=config.aws.region,
                kms_key_arn=self.key.arn,
                api_id=self.ingest.api.id,
                stage=self.ingest.stage.name,
                collector_function=self.ingest.function.name,
                stream_name=self.stream.stream.name,
                consumers=consumers,
                db_instance=self.postgres.instance.identifier,
                db_instance_class=config.postgres.instance_class,
                db_storage_gb=config.postgres.storage_gb,
                reconcile_function=reconciler.function.name if reconciler else None,
                tags=config.tags,
            ),
            opts=child,
        )
        self.outputs["alarmTopicArn"] = self.observability.topic_arn
        self.outputs["dashboardUrl"] = self.observability.dashboard_url

    def _export_warehouse(self) -> None:
        warehouse = getattr(self.consumers, "warehouse", None)
        if warehouse is not None:
            self.outputs["warehouse"] = warehouse.connection.public_view()

    def _export_ingest(self) -> None:
        self.outputs["stream"] = pulumi.Output.all(
            self.stream.connection.url, self.stream.connection.name
        ).apply(lambda values: {"url": values[0], "name": values[1]})
        self.outputs["collectorUrl"] = self.ingest.endpoint.collector_url
        self.outputs["writeKeys"] = self.ingest.endpoint.write_keys

    def _observe_kubernetes(
        self, name: str, config: PlatformConfig, child: pulumi.ResourceOptions
    ) -> None:
        from components import kube
        from components.consumers.kubernetes import CONSUMER_LABEL, HEALTH_PORT
        from components.ingest.kubernetes import COMPONENT, PORT
        from components.observability.kubernetes import (
            KubernetesObservability,
            KubernetesObservabilityArgs,
            MetricsTarget,
        )
        from components.stream.kubernetes import NATS_EXPORTER_PORT, NATS_POD_SELECTOR

        settings = config.kubernetes
        assert settings is not None
        # Every consumer pod, and only they, names its probe port `health`.
        consumers = {"app.kubernetes.io/instance": config.stack, CONSUMER_LABEL: "true"}
        self.observability = KubernetesObservability(
            f"{name}-observability",
            KubernetesObservabilityArgs(
                settings=config.observability,
                network=self.network,
                stack=config.stack,
                collector_service_labels=kube.selector(COMPONENT, config.stack),
                collector=MetricsTarget(
                    "collector", kube.selector(COMPONENT, config.stack), "http", PORT
                ),
                consumers=MetricsTarget("consumers", consumers, "health", HEALTH_PORT),
                nats=MetricsTarget("nats", NATS_POD_SELECTOR, "prom-metrics", NATS_EXPORTER_PORT),
                postgres=self.postgres,
                image_registry=settings.image_registry,
                tags=config.tags,
            ),
            opts=child,
        )

    def _build_kubernetes(self, name: str, config: PlatformConfig) -> None:
        import pulumi_kubernetes as k8s

        from components.airflow.kubernetes import KubernetesAirflow, KubernetesAirflowArgs
        from components.archive.kubernetes import ExternalArchive, ExternalArchiveArgs
        from components.consumers.kubernetes import KubernetesConsumers, KubernetesConsumersArgs
        from components.ingest.kubernetes import KubernetesCollector, KubernetesCollectorArgs
        from components.network.kubernetes import KubernetesNetwork, KubernetesNetworkArgs
        from components.postgres.kubernetes import KubernetesPostgres, KubernetesPostgresArgs
        from components.stream.kubernetes import NatsJetStream, NatsJetStreamArgs

        settings = config.kubernetes
        assert settings is not None
        provider = k8s.Provider(
            f"{name}-kubernetes",
            kubeconfig=pulumi.Output.secret(settings.kubeconfig) if settings.kubeconfig else None,
            context=settings.context,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, providers={"kubernetes": provider})
        self.network = KubernetesNetwork(
            f"{name}-network",
            KubernetesNetworkArgs(
                settings=settings,
                stack=config.stack,
                tags=config.tags,
                retain_namespace=config.deletion_protection or config.postgres.deletion_protection,
            ),
            opts=child,
        )
        self.postgres = KubernetesPostgres(
            f"{name}-postgres",
            KubernetesPostgresArgs(
                settings=config.postgres,
                network=self.network,
                stack=config.stack,
                storage_class=settings.storage_class,
                image_registry=settings.image_registry,
                services_image=settings.services_image,
                tags=config.tags,
            ),
            opts=child,
        )
        self.stream = NatsJetStream(
            f"{name}-stream",
            NatsJetStreamArgs(
                settings=config.stream,
                network=self.network,
                stack=config.stack,
                services_image=settings.services_image,
                storage_class=settings.storage_class,
                image_registry=settings.image_registry,
                chart_source=config.charts.get("nats"),
                tags=config.tags,
                metrics_exporter=config.observability.enabled,
            ),
            opts=child,
        )
        self.ingest = KubernetesCollector(
            f"{name}-ingest",
            KubernetesCollectorArgs(
                settings=config.ingest,
                sources=config.sources,
                stream=self.stream,
                network=self.network,
                stack=config.stack,
                services_image=settings.services_image,
                image_registry=settings.image_registry,
                tags=config.tags,
            ),
            opts=child,
        )
        self.archive = None
        if config.archive is not None:
            self.archive = ExternalArchive(
                f"{name}-archive",
                ExternalArchiveArgs(
                    settings=config.archive,
                    network=self.network,
                    stack=config.stack,
                    tags=config.tags,
                ),
                opts=child,
            )
        if self.archive is not None:
            self.postgres.add_backups(self.archive, config.archive)
        else:
            pulumi.log.warn(
                "liftoff:archive is not set: Postgres has no scheduled backups on this stack "
                "(they are written to the archive).",
                self,
            )
        self.consumers = KubernetesConsumers(
            f"{name}-consumers",
            KubernetesConsumersArgs(
                stream=self.stream,
                network=self.network,
                postgres=self.postgres,
                warehouse=config.warehouse,
                destinations=config.destinations,
                stack=config.stack,
                services_image=settings.services_image,
                archive=self.archive,
                archive_settings=config.archive,
                image_registry=settings.image_registry,
                tags=config.tags,
            ),
            opts=child,
        )
        if config.airflow.enabled:
            self.airflow = KubernetesAirflow(
                f"{name}-airflow",
                KubernetesAirflowArgs(
                    settings=config.airflow,
                    network=self.network,
                    postgres=self.postgres,
                    warehouse=getattr(self.consumers, "warehouse", None),
                    stack=config.stack,
                    services_image=settings.services_image,
                    storage_class=settings.storage_class,
                    image_registry=settings.image_registry,
                    chart_source=config.charts.get("airflow"),
                    archive=self.archive,
                    archive_settings=config.archive,
                    tags=config.tags,
                ),
                opts=child,
            )
            self.outputs["airflowUrl"] = self.airflow.endpoint.url
        if config.observability.enabled:
            self._observe_kubernetes(name, config, child)
        self.outputs["namespace"] = self.network.namespace
        self.outputs["postgres"] = self.postgres.connection.public_view()
        # Read back on the next update to refuse (Kubernetes) or allow (RDS) a major change.
        self.outputs[MAJOR_VERSION_OUTPUT] = config.postgres.version
        if self.archive is not None:
            self.outputs["archive"] = {
                "bucket": config.archive.bucket_name,
                "endpoint": config.archive.endpoint,
            }
        self._export_ingest()
        self._export_warehouse()
