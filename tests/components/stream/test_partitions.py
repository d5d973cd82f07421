"""The partition count of a stack whose streams exist: read back, kept, or refused.

The previous release (`.release/previous`) defaulted to one partition; this one defaults to 8
with 3 or more replicas. A stack deployed before, with the single `EVENTS` stream, must keep
it (its own `stream` output says so); choosing another count is refused before anything is
declared, naming the procedure; the collector and consumers roll out only after the stream
setup Job succeeded.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from components.stream.partitions import partitions_in_output
from tests.conftest import stack_run
from tests.harness import run_program

STACK = "stacks/kubernetes-private-cloud.yaml"  # 3 replicas, `partitions` not set
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HOST = "nats.liftoff-data.svc.cluster.local:4222"
# What the previous release exported for such a stack: one partition, no `?partitions=`.
DEPLOYED_ONE = {"stream": {"url": f"nats://{HOST}/EVENTS", "name": "EVENTS"}}
DEPLOYED_EIGHT = {"stream": {"url": f"nats://{HOST}/EVENTS?partitions=8", "name": "EVENTS"}}


def job_env(run) -> dict[str, str]:
    job = run.one(JOB, "liftoff-stream-setup").inputs
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def stream_urls(run) -> set[str]:
    """The stream URL every client is given: collector, consumers, the setup Job."""
    urls = {job_env(run)["LIFTOFF_STREAM_URL"]}
    for deployment in run.of_type(DEPLOYMENT):
        for container in deployment.inputs["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                if variable["name"] == "LIFTOFF_STREAM_URL":
                    urls.add(variable["value"])
    return urls


def test_the_deployed_count_is_read_from_the_stream_output_of_every_release():
    assert partitions_in_output(DEPLOYED_ONE["stream"]) == 1
    assert partitions_in_output(DEPLOYED_EIGHT["stream"]) == 8
    assert partitions_in_output(None) is None  # a new stack
    assert partitions_in_output({"url": "kinesis://liftoff-prod-events"}) is None


def test_an_existing_single_stream_stack_keeps_it_when_partitions_is_not_set():
    new = run_program(STACK)
    assert stream_urls(new) == {f"nats://{HOST}/EVENTS?partitions=8"}
    upgraded = run_program(STACK, previous_outputs=DEPLOYED_ONE)
    assert stream_urls(upgraded) == {f"nats://{HOST}/EVENTS"}
    # The byte bound is the whole EVENTS share again, not an eighth of it.
    assert int(job_env(upgraded)["LIFTOFF_STREAM_MAX_BYTES"]) == 8 * int(
        job_env(new)["LIFTOFF_STREAM_MAX_BYTES"]
    )
    assert upgraded.outputs["stream"]["url"] == f"nats://{HOST}/EVENTS"
    # A stack deployed with 8 keeps 8 the same way.
    assert stream_urls(run_program(STACK, previous_outputs=DEPLOYED_EIGHT)) == stream_urls(new)


def test_another_count_than_the_deployed_one_is_refused_with_the_procedure():
    with pytest.raises(ValueError) as error:
        run_program(
            STACK, overrides={"liftoff:stream": {"partitions": 8}}, previous_outputs=DEPLOYED_ONE
        )
    message = str(error.value)
    assert "liftoff:stream.partitions: got 8; allowed: 1" in message
    assert "Changing stream.partitions" in message and "repartitionFrom: 1" in message
    # Set to what it is: fine. After the procedure: the one update naming the old count.
    same = run_program(
        STACK, overrides={"liftoff:stream": {"partitions": 1}}, previous_outputs=DEPLOYED_ONE
    )
    assert stream_urls(same) == {f"nats://{HOST}/EVENTS"}
    moved = run_program(
        STACK,
        overrides={"liftoff:stream": {"partitions": 8, "repartitionFrom": 1}},
        previous_outputs=DEPLOYED_ONE,
    )
    assert stream_urls(moved) == {f"nats://{HOST}/EVENTS?partitions=8"}


def test_collector_and_consumers_roll_out_only_after_the_stream_setup_job():
    run = stack_run("kubernetes-private-cloud")
    job = run.one(JOB, "liftoff-stream-setup")
    for deployment in run.of_type(DEPLOYMENT):
        component = deployment.inputs["metadata"]["name"]
        if component in ("collector", "archiver", "loader") or component.startswith("broad"):
            assert job.urn in deployment.dependencies, component


def test_a_refusal_in_the_setup_job_fails_it_at_once():
    """Should the stream still differ (state lost, streams deleted by hand), ensure-stream
    exits 3: the Job fails on it instead of retrying for 15 minutes under waiting rollouts."""
    spec = stack_run("dev").one(JOB, "liftoff-stream-setup").inputs["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {
        "containerName": "ensure-stream",
        "operator": "In",
        "values": [3],
    }


def test_the_setup_job_is_named_after_its_whole_spec():
    """Jobs are immutable: any change of the spec must be a new Job (a new name), or the
    update would fail or, worse, leave the old Job's run standing for the new settings."""
    job = stack_run("kubernetes-private-cloud").one(JOB, "liftoff-stream-setup").inputs
    digest = hashlib.sha256(json.dumps(job["spec"], sort_keys=True).encode()).hexdigest()
    assert job["metadata"]["name"] == f"nats-stream-setup-{digest[:8]}"
