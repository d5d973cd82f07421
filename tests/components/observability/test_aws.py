"""The signal contract on AWS under mocks, for every shipped AWS stack: each alarm watches the
right metric, namespace and dimension of a resource the stack declares, notifies the alarm
topic, and the topic is encrypted with the platform key whose policy lets CloudWatch use it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from components.observability import SIGNALS_BY_NAME
from tests.conftest import stack_run
from tests.harness import ACCOUNT_ID, STACK_FILES, load_stack_config, run_with_config, stack_name_of

METRIC_FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
FUNCTION = "aws:lambda/function:Function"
QUEUE = "aws:sqs/queue:Queue"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
AWS_STACKS = [stack_name_of(p) for p in STACK_FILES if "target: aws" in Path(p).read_text()]


def _name(resource) -> str:
    """The physical name the mocks give a resource: its `name` input, else its logical name."""
    return resource.inputs.get("name", resource.name)


def _region(run) -> str:
    return run.one("pulumi:providers:aws").inputs["region"]


def _alarms(run) -> dict[str, dict]:
    return {r.inputs["name"]: r.inputs for r in run.of_type(ALARM)}


def _metric(alarm: dict) -> tuple[str, str, dict]:
    if "metricQueries" in alarm:
        first = alarm["metricQueries"][0]["metric"]
        return first["namespace"], first["metricName"], first["dimensions"]
    return alarm["namespace"], alarm["metricName"], alarm["dimensions"]


def test_there_are_aws_stacks():
    assert set(AWS_STACKS) >= {"aws", "aws-byo-network"}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_alarm_watches_a_declared_resource_of_its_metric(stack):
    run = stack_run(stack)
    functions = {_name(r) for r in run.of_type(FUNCTION)}
    queues = {_name(r) for r in run.of_type(QUEUE)}
    stream = _name(run.one("aws:kinesis/stream:Stream"))
    database = run.one("aws:rds/instance:Instance").inputs["identifier"]
    api = run.one("aws:apigatewayv2/api:Api")
    api_id = hashlib.sha256(api.name.encode()).hexdigest()[:10]  # the mocks' API id
    alarms = _alarms(run)
    assert alarms
    # The stack's own metrics: each made by a metric filter it declares.
    made = {
        (f.inputs["metricTransformation"]["namespace"], f.inputs["metricTransformation"]["name"])
        for f in run.of_type(METRIC_FILTER)
    }
    for name, alarm in alarms.items():
        namespace, metric, dimensions = _metric(alarm)
        signal = name.removeprefix(f"liftoff-{stack}-").split("-")[0]
        assert signal in SIGNALS_BY_NAME, name
        if namespace.startswith("Liftoff/"):
            assert (namespace, metric) in made and not dimensions, name
            continue
        expected_dimension = {
            "AWS/Lambda": ("FunctionName", functions),
            "AWS/SQS": ("QueueName", queues),
            "AWS/Kinesis": ("StreamName", {stream}),
            "AWS/RDS": ("DBInstanceIdentifier", {database}),
            "AWS/ApiGateway": ("ApiId", {api_id}),
        }[namespace]
        key, declared = expected_dimension
        assert dimensions[key] in declared, (name, dimensions)
        if namespace == "AWS/ApiGateway":
            assert dimensions["Stage"] == "$default"
        assert (
            metric
            in {
                "AWS/Lambda": {"Errors", "Throttles", "IteratorAge"},
                "AWS/SQS": {"ApproximateNumberOfMessagesVisible"},
                "AWS/Kinesis": {
                    "WriteProvisionedThroughputExceeded",
                    "ReadProvisionedThroughputExceeded",
                },
                "AWS/RDS": {
                    "DatabaseConnections",
                    "FreeStorageSpace",
                    "CPUUtilization",
                },
                "AWS/ApiGateway": {"5xx", "Latency"},
            }[namespace]
        ), name


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_each_consuming_function_has_iterator_age_and_dead_letter_alarms(stack):
    run = stack_run(stack)
    alarms = _alarms(run).values()
    # functionName is the function's ARN, ending with its name.
    consuming = {m.inputs["functionName"].rsplit(":", 1)[1] for m in run.of_type(MAPPING)}
    assert consuming <= {_name(r) for r in run.of_type(FUNCTION)}
    iterator_age = [
        a["dimensions"]["FunctionName"] for a in alarms if a.get("metricName") == "IteratorAge"
    ]
    assert sorted(iterator_age) == sorted(consuming)  # one per consumer, none elsewhere
    for alarm in alarms:
        if alarm.get("metricName") == "IteratorAge":
            assert alarm["statistic"] == "Maximum"
            assert (
                alarm["threshold"]
                == SIGNALS_BY_NAME["LiftoffConsumerLagAge"].threshold.default * 1000
            )
    # The on-failure destination of every mapping has a depth alarm.
    destinations = {
        m.inputs["destinationConfig"]["onFailure"]["destinationArn"] for m in run.of_type(MAPPING)
    }
    watched = {a["dimensions"]["QueueName"] for a in alarms if a.get("namespace") == "AWS/SQS"}
    assert {arn.rsplit(":", 1)[1] for arn in destinations} <= watched


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_queue_has_a_depth_alarm(stack):
    """Every SQS queue holds events someone must look at (on-failure destinations, the
    collector's quarantine): each is watched by a LiftoffDeadLetters alarm."""
    run = stack_run(stack)
    queues = {_name(r) for r in run.of_type(QUEUE)}
    assert _name(run.one(QUEUE, "liftoff-ingest-quarantine")) in queues
    depth = {
        a["dimensions"]["QueueName"]: name
        for name, a in _alarms(run).items()
        if a.get("metricName") == "ApproximateNumberOfMessagesVisible"
    }
    assert set(depth) == queues
    assert all(name.startswith(f"liftoff-{stack}-LiftoffDeadLetters-") for name in depth.values())


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_alarms_notify_an_encrypted_topic_the_platform_key_lets_cloudwatch_use(stack):
    run = stack_run(stack)
    topic = run.one("aws:sns/topic:Topic")
    key = run.one("aws:kms/key:Key")
    region = _region(run)
    # The platform key: the one the stream is encrypted with.
    key_arn = run.one("aws:kinesis/stream:Stream").inputs["kmsKeyId"]
    assert key_arn.startswith("arn:aws:kms:")
    assert topic.inputs["kmsMasterKeyId"] == key_arn
    topic_arn = run.outputs["alarmTopicArn"]
    for alarm in _alarms(run).values():
        assert alarm["alarmActions"] == [topic_arn] and alarm["okActions"] == [topic_arn]
        assert alarm["alarmDescription"].startswith(("[critical]", "[warning]"))
    statements = json.loads(key.inputs["policy"])["Statement"]
    (cloudwatch,) = [
        s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert cloudwatch["Condition"]["ArnLike"]["aws:SourceArn"] == (
        f"arn:aws:cloudwatch:{region}:{ACCOUNT_ID}:alarm:liftoff-{stack}-*"
    )
    assert all(alarm_name.startswith(f"liftoff-{stack}-") for alarm_name in _alarms(run))
    topic_policy = json.loads(run.one("aws:sns/topicPolicy:TopicPolicy").inputs["policy"])
    (publish,) = topic_policy["Statement"]
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert publish["Action"] == "sns:Publish" and publish["Resource"] == topic_arn


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_dashboard_and_outputs(stack):
    run = stack_run(stack)
    dashboard = run.one("aws:cloudwatch/dashboard:Dashboard").inputs
    assert dashboard["dashboardName"] == f"liftoff-{stack}"
    widgets = json.loads(dashboard["dashboardBody"])["widgets"]
    titles = " ".join(w["properties"]["title"] for w in widgets)
    for part in ("Ingestion", "Consumer lag", "Dead letters", "Database", "Alarms"):
        assert part in titles
    (alarm_widget,) = [w for w in widgets if w["type"] == "alarm"]
    assert len(alarm_widget["properties"]["alarms"]) == len(_alarms(run))
    region = _region(run)
    assert run.outputs["dashboardUrl"] == (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#dashboards:name=liftoff-{stack}"
    )


def _aws_run(observability: dict):
    config, secrets = load_stack_config(Path("stacks/aws.yaml").resolve())
    config["liftoff:observability"] = json.dumps(observability)
    return run_with_config(config, stack="aws", secret_keys=secrets)


def test_customer_topic_and_thresholds():
    topic = f"arn:aws:sns:eu-west-1:{ACCOUNT_ID}:oncall"
    run = _aws_run({"alarmTopicArn": topic, "thresholds": {"consumerLagSeconds": 60}})
    assert run.of_type("aws:sns/topic:Topic") == []
    statements = json.loads(run.one("aws:kms/key:Key").inputs["policy"])["Statement"]
    assert all("cloudwatch.amazonaws.com" not in json.dumps(s) for s in statements)
    alarms = _alarms(run)
    assert all(a["alarmActions"] == [topic] for a in alarms.values())
    assert alarms["liftoff-aws-LiftoffConsumerLagAge-archiver"]["threshold"] == 60000
    assert run.outputs["alarmTopicArn"] == topic


def test_disabled_declares_no_alarm():
    run = _aws_run({"enabled": False})
    assert run.of_type(ALARM) == [] and "dashboardUrl" not in run.outputs


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_warehouse_discards_alarm_on_what_the_loader_logs(stack, caplog):
    """The metric filter reads the loader's log group, the line the loader really writes
    (through the services' JSON formatter), and its total as the value."""
    import logging

    from services.consumers.loader.typed import TypedLoading
    from services.observability import Counters, JsonFormatter

    run = stack_run(stack)
    (metric_filter,) = [f for f in run.of_type(METRIC_FILTER) if "-loader-" in f.name]
    loader = run.one("aws:cloudwatch/logGroup:LogGroup", "liftoff-consumers-loader-logs")
    assert metric_filter.inputs["logGroupName"] == loader.inputs["name"]
    transformation = metric_filter.inputs["metricTransformation"]
    assert transformation["namespace"] == f"Liftoff/liftoff-{stack}"

    loading = TypedLoading({}, Counters())
    with caplog.at_level(logging.WARNING):
        loading.count({("web", "tracks"): 2, ("ios", "signed_up"): 3})
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    line = json.loads(JsonFormatter().format(record))
    field, _, wanted = metric_filter.inputs["pattern"].strip("{} ").partition(" = ")
    assert line[field.removeprefix("$.")] == json.loads(wanted)
    assert line[transformation["value"].removeprefix("$.")] == 5

    (alarm,) = [a for n, a in _alarms(run).items() if "LiftoffWarehouseDiscards" in n]
    assert (alarm["namespace"], alarm["metricName"]) == (
        transformation["namespace"], transformation["name"],
    )  # fmt: skip
    assert (alarm["statistic"], alarm["period"], alarm["threshold"]) == ("Sum", 900, 0)


def test_each_broadcaster_counts_what_its_filters_refuse_from_its_log(caplog):
    """`liftoff_broadcaster_filtered_total` on AWS: a metric filter per broadcaster function on
    the line the broadcaster's code writes for a batch with filtered events."""
    import logging
    from types import SimpleNamespace

    from services.consumers.broadcaster.delivery import Broadcaster
    from services.observability import Counters, JsonFormatter

    run = stack_run("aws")
    groups = {g.name: g.inputs["name"] for g in run.of_type("aws:cloudwatch/logGroup:LogGroup")}
    filters = {f.name: f.inputs for f in run.of_type(METRIC_FILTER) if "Filtered" in f.name}
    broadcasters = [f for f in run.of_type(FUNCTION) if "-broadcaster-" in f.name]
    assert broadcasters and len(filters) == len(broadcasters)
    for function in broadcasters:
        consumer = function.name.removeprefix("liftoff-consumers-").removesuffix("-function")
        found = filters[f"liftoff-observability-{consumer}-BroadcasterFiltered"]
        assert found["logGroupName"] == groups[f"liftoff-consumers-{consumer}-logs"]

    sender = SimpleNamespace(counters=Counters(), name="mixpanel")  # what _count uses
    with caplog.at_level(logging.INFO, logger="liftoff.broadcaster"):
        Broadcaster._count(sender, [], {"drop": 2, "consent": 1})  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if r.name == "liftoff.broadcaster"]
    line = json.loads(JsonFormatter().format(record))
    pattern, transformation = found["pattern"], found["metricTransformation"]
    field, _, wanted = pattern.strip("{} ").partition(" = ")
    assert line[field.removeprefix("$.")] == json.loads(wanted)
    assert line[transformation["value"].removeprefix("$.")] == 3
    assert line[transformation["dimensions"]["Destination"].removeprefix("$.")] == "mixpanel"
