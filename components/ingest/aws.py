"""Ingestion on AWS: API Gateway HTTP API → collector Lambda → Kinesis.

Why an HTTP API rather than a REST API: the collector authenticates write keys itself (so API
keys and usage plans add nothing), HTTP APIs cost ~70% less per request with lower latency,
and they still give stage throttling and JSON access logs.

CORS is answered by the collector, not at the edge: API Gateway's CORS configuration would
answer preflights itself and replace the function's CORS headers, so per-source allowed
origins (and the 403 for a refused origin) could not hold. Every method of every collector
path is routed to the function (`ANY`), which answers preflights, and CORS on every response,
exactly as the Kubernetes collector does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import aws_iam
from components.aws_lambda import packaged_function
from components.aws_logs import LogSettings, log_group
from components.aws_s3 import secure_bucket
from components.ingest import (
    BROWSER_ROUTES,
    SHORT_TRACKING_PATHS,
    TRACKING_PATHS,
    AwsPrivacyStores,
    IngestEndpoint,
    collector_sources,
)
from components.ingest.settings import AwsIngest, Source
from components.ingest.write_keys import generate_write_keys, write_keys_document
from components.network import AwsPeer
from components.observability import CloudWatchMetrics
from components.stream import Stream
from services.collector import contract as collector
from services.stream.address import SQS_PREFIX
from services.stream.contract import StreamAccess
from services.suppression.contract import SuppressionAccess

HANDLER = "services.aws_lambda.collector_handler"
SUPPRESSION_OBJECT_KEY = "suppressed.json"
"""The suppression list's one object in the collector's suppression bucket."""
QUARANTINE_RETENTION_SECONDS = 14 * 24 * 3600  # SQS's maximum, as for the consumers' DLQs
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTime",
        "routeKey": "$context.routeKey",
        "status": "$context.status",
        "responseLength": "$context.responseLength",
        "integrationLatency": "$context.integrationLatency",
        "integrationError": "$context.integrationErrorMessage",
        "userAgent": "$context.identity.userAgent",
    },
    sort_keys=True,
)


@dataclass(frozen=True)
class LambdaCollectorArgs:
    settings: AwsIngest
    sources: tuple[Source, ...]
    stream: Stream[AwsPeer]
    function_name: str
    """Physical Lambda name, e.g. `liftoff-prod-collector`; also names its log groups."""
    kms_key_arn: pulumi.Input[str]
    """Encrypts the write-keys secret."""
    logs: LogSettings
    """Retention and key of the function's and the API's log groups."""
    protect: bool = True
    """Protects the suppression list's bucket (it holds which users must stay suppressed)."""


class LambdaCollector(pulumi.ComponentResource):
    """The collector as a Lambda function behind an HTTP API.

    The function's role may only write to its log group, read the write-keys secret (and
    decrypt it), put records to the stream (granted by the stream), and send to its quarantine
    queue: invalid events of otherwise valid requests, kept with the reason (KMS-encrypted,
    14 days; the consumers' dead-letter JSON shape with `consumer: "collector"`). The write
    keys live in Secrets Manager and are read once per cold start — never in environment
    variables.
    """

    def __init__(
        self, name: str, args: LambdaCollectorArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:ingest:LambdaCollector", name, None, opts)
        keys = self._declare_write_keys(name, args)
        self._declare_function(name, args)
        granted = self._grant_function(name, args)
        self._declare_api(name)
        self._declare_stage(name, args)
        self._allow_invoke(name, granted)
        self.api_metrics = CloudWatchMetrics(
            "AWS/ApiGateway", {"ApiId": self.api.id, "Stage": self.stage.name}
        )
        self.function_metrics = CloudWatchMetrics(
            "AWS/Lambda", {"FunctionName": self.function.name}
        )
        self.quarantine_metrics = CloudWatchMetrics(
            "AWS/SQS", {"QueueName": self.quarantine_queue.name}
        )
        self.privacy = AwsPrivacyStores(
            suppression_url=pulumi.Output.concat(
                "s3://", self.suppression_bucket.bucket, "/", SUPPRESSION_OBJECT_KEY
            ),
            suppression_object_arn=self.suppression_object_arn,
            suppression_key_secret_arn=self.suppression_key_secret.arn,
            quarantine_url=pulumi.Output.concat(SQS_PREFIX, self.quarantine_queue.name),
            quarantine_queue_arn=self.quarantine_queue.arn,
        )
        self.endpoint = IngestEndpoint(
            collector_url=self.api.api_endpoint,
            write_keys=pulumi.Output.secret(pulumi.Output.all(**keys)),
        )
        self.register_outputs(
            {"collectorUrl": self.endpoint.collector_url, "functionArn": self.function.arn}
        )

    def _declare_write_keys(self, name: str, args: LambdaCollectorArgs) -> dict[str, Any]:
        child = pulumi.ResourceOptions(parent=self)
        keys = generate_write_keys(name, args.sources, self)
        self.write_keys_secret = aws.secretsmanager.Secret(
            f"{name}-write-keys",
            description="liftoff collector write keys (source name -> key)",
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-write-keys-value",
            secret_id=self.write_keys_secret.id,
            secret_string=write_keys_document(keys),
            opts=child,
        )

        return keys

    def _declare_function(self, name: str, args: LambdaCollectorArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        self.quarantine_queue = aws.sqs.Queue(
            f"{name}-quarantine",
            kms_master_key_id=args.kms_key_arn,
            kms_data_key_reuse_period_seconds=300,
            message_retention_seconds=QUARANTINE_RETENTION_SECONDS,
            opts=child,
        )
        environment = collector.FUNCTION.environment(
            collector.CollectorFunctionSettings(
                stream=StreamAccess(url=args.stream.connection.url),
                sources=collector_sources(args.sources),
                write_keys_secret_arn=self.write_keys_secret.arn,
                quarantine_url=pulumi.Output.concat(SQS_PREFIX, self.quarantine_queue.name),
                log_level="INFO",
                **self._suppression(name, args),
            )
        )
        packaged = packaged_function(
            name,
            function_name=args.function_name,
            description="liftoff collector: Segment-compatible ingestion into Kinesis",
            handler=HANDLER,
            environment=environment,
            parent=self,
            logs=args.logs,
            memory_mb=args.settings.memory_mb,
            timeout_seconds=15,
        )
        self.role = packaged.role
        self.function = packaged.function

    def _suppression(self, name: str, args: LambdaCollectorArgs) -> dict[str, Any]:
        """The list's S3 object and its HMAC key (a secret, read at cold start)."""
        child = pulumi.ResourceOptions(parent=self)
        # Its own small bucket: the archive's lifecycle may expire objects, this one never.
        self.suppression_bucket = secure_bucket(
            f"{name}-suppression",
            kms_key_arn=args.kms_key_arn,
            parent=self,
            name_prefix=f"{args.function_name[:28]}-supp-",
            protect=args.protect,
        ).bucket
        # Created once and never rotated: a new key would orphan every suppression entry.
        key = random.RandomPassword(f"{name}-suppression-key", length=48, special=False, opts=child)
        self.suppression_key_secret = aws.secretsmanager.Secret(
            f"{name}-suppression-key",
            description="liftoff suppression list key (HMAC of suppressed ids)",
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-suppression-key-value",
            secret_id=self.suppression_key_secret.id,
            secret_string=key.result,
            opts=child,
        )
        bucket = self.suppression_bucket.bucket
        self.suppression_object_arn = pulumi.Output.concat(
            self.suppression_bucket.arn, "/", SUPPRESSION_OBJECT_KEY
        )
        return {
            "suppression": SuppressionAccess(
                url=pulumi.Output.concat("s3://", bucket, "/", SUPPRESSION_OBJECT_KEY)
            ),
            "suppression_key_secret_arn": self.suppression_key_secret.arn,
        }

    def _grant_suppression(self, name: str, args: LambdaCollectorArgs) -> list[pulumi.Resource]:
        """Read the list's one object (decrypting with the platform key the role already may
        use) and its key's secret: nothing else of the archive."""
        child = pulumi.ResourceOptions(parent=self)
        secret = aws_iam.grant_secret_read(
            f"{name}-suppression-key-policy",
            self.role.id,
            self.suppression_key_secret.arn,
            args.kms_key_arn,
            self,
        )
        # Listing its one key too: before the first suppression there is no object, and S3
        # would answer the reads with AccessDenied (logged at every refresh) instead of NoSuchKey.
        statement = self.suppression_object_arn.apply(
            lambda arn: aws_iam.document(
                [
                    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": arn},
                    aws_iam.list_one_key_statement(arn),
                ]
            )
        )
        read = aws.iam.RolePolicy(
            f"{name}-suppression-policy", role=self.role.id, policy=statement, opts=child
        )
        return [secret, read]

    def _grant_function(self, name: str, args: LambdaCollectorArgs) -> list[pulumi.Resource]:
        """The role reads the write keys, writes the stream and sends to the quarantine: the
        policies the API waits for before it may invoke the function."""
        child = pulumi.ResourceOptions(parent=self)
        keys = aws_iam.grant_secret_read(
            f"{name}-role-policy",
            self.role.id,
            self.write_keys_secret.arn,
            args.kms_key_arn,
            self,
        )
        stream = args.stream.grant_write(AwsPeer("collector", iam_role_name=self.role.name))
        quarantine = aws.iam.RolePolicy(
            f"{name}-quarantine-policy",
            role=self.role.id,
            policy=pulumi.Output.all(self.quarantine_queue.arn, args.kms_key_arn).apply(
                lambda arns: aws_iam.document(
                    [
                        {
                            "Effect": "Allow",
                            "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
                            "Resource": arns[0],
                        },
                        # SSE-KMS queues: a sender needs a data key (and to decrypt a cached one).
                        {
                            "Effect": "Allow",
                            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                            "Resource": arns[1],
                        },
                    ]
                )
            ),
            opts=child,
        )
        return [keys, *stream.resources, quarantine, *self._grant_suppression(name, args)]

    def _declare_api(self, name: str) -> None:
        """The HTTP API: every collector path routed to the function."""
        child = pulumi.ResourceOptions(parent=self)
        self.api = aws.apigatewayv2.Api(
            f"{name}-api",
            protocol_type="HTTP",
            description="liftoff ingestion API (Segment HTTP Tracking API)",
            # No cors_configuration: the collector answers CORS (see the module docstring).
            opts=child,
        )
        integration = aws.apigatewayv2.Integration(
            f"{name}-integration",
            api_id=self.api.id,
            integration_type="AWS_PROXY",
            integration_uri=self.function.arn,
            payload_format_version="2.0",
            timeout_milliseconds=15000,
            opts=child,
        )
        # ANY: wrong methods and preflights reach the function too, and get its JSON errors
        # and CORS headers rather than API Gateway's bare 404.
        routes = {path: f"/v1/{path}" for path in (*TRACKING_PATHS, *SHORT_TRACKING_PATHS)}
        routes.update(BROWSER_ROUTES)
        for role, path in routes.items():
            aws.apigatewayv2.Route(
                f"{name}-route-{role}",
                api_id=self.api.id,
                route_key=f"ANY {path}",
                target=pulumi.Output.concat("integrations/", integration.id),
                opts=child,
            )

    def _declare_stage(self, name: str, args: LambdaCollectorArgs) -> None:
        """The API's one stage: throttled, with detailed metrics and JSON access logs."""
        settings = args.settings
        access_logs = log_group(
            f"{name}-access-logs",
            log_group_name=f"/aws/apigateway/{args.function_name}",
            logs=args.logs,
            parent=self,
        )
        self.stage = aws.apigatewayv2.Stage(
            f"{name}-stage",
            api_id=self.api.id,
            name="$default",
            auto_deploy=True,
            access_log_settings={
                "destination_arn": access_logs.arn,
                "format": ACCESS_LOG_FORMAT,
            },
            default_route_settings={
                "throttling_rate_limit": settings.throttling_rate_limit,
                "throttling_burst_limit": settings.throttling_burst_limit,
                "detailed_metrics_enabled": True,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _allow_invoke(self, name: str, granted: list[pulumi.Resource]) -> None:
        """The API's right to invoke the function: only on the collector's path prefixes,
        and once the function's own access (`granted`) exists, so no request reaches a
        function that cannot yet publish."""
        for role, prefix in (
            ("", "/v1"),
            ("-library", "/analytics.js"),
            ("-bundles", "/analytics-next"),
        ):
            aws.lambda_.Permission(
                f"{name}-invoke{role}",
                action="lambda:InvokeFunction",
                function=self.function.name,
                principal="apigateway.amazonaws.com",
                source_arn=pulumi.Output.concat(self.api.execution_arn, f"/*/*{prefix}/*"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=granted),
            )
