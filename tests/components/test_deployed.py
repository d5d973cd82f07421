"""A volume size change on an existing Kubernetes stack is refused with the procedure, before
any StatefulSet (NATS's in the chart, Postgres's own) is touched; after the procedure the
operator states the old size and the new one is declared, max_file_store and max_bytes with it.
"""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.deployed import STORAGE_OUTPUT
from components.validation import ConfigError
from tests.conftest import stack_run
from tests.harness import run_program

CHART = "kubernetes:helm.sh/v4:Chart"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DEPLOYED = {STORAGE_OUTPUT: {"postgres": 2, "stream": 2}, "postgresMajorVersion": "17"}


def _nats_file_store(run) -> dict:
    chart = run.one(CHART, "liftoff-stream-chart")
    return chart.inputs["values"]["config"]["jetstream"]["fileStore"]


def test_each_stack_exports_the_sizes_it_deployed():
    assert stack_run("dev").outputs[STORAGE_OUTPUT] == {"postgres": 2, "stream": 2}
    private = stack_run("kubernetes-private-cloud").outputs[STORAGE_OUTPUT]
    assert private == {"postgres": 200, "stream": 100}
    assert STORAGE_OUTPUT not in stack_run("aws").outputs  # RDS grows its storage in place


@pytest.mark.parametrize("key", ["stream", "postgres"])
def test_a_changed_size_is_refused_with_the_procedure(key):
    with pytest.raises(ValueError) as error:
        run_program(
            "Pulumi.dev.yaml",
            overrides={f"liftoff:{key}": {"storageGb": 4}},
            previous_outputs=DEPLOYED,
        )
    message = str(error.value)
    assert f"liftoff:{key}.storageGb: got 4; allowed: 2" in message
    assert "Resizing a volume (Kubernetes)" in message and "--cascade=orphan" in message
    assert "storageResizedFrom: 2" in message


def test_the_same_size_and_a_new_stack_go_ahead():
    run_program("Pulumi.dev.yaml", previous_outputs=DEPLOYED)
    fresh = run_program("Pulumi.dev.yaml", overrides={"liftoff:stream": {"storageGb": 4}})
    assert _nats_file_store(fresh)["pvc"]["size"] == "4Gi"


def test_after_the_procedure_the_new_size_is_declared_everywhere():
    stream = {"storageGb": 4, "storageResizedFrom": 2, "replicas": 1}
    postgres = {"storageGb": 4, "storageResizedFrom": 2}
    run = run_program(
        "Pulumi.dev.yaml",
        overrides={"liftoff:stream": stream, "liftoff:postgres": postgres},
        previous_outputs=DEPLOYED,
    )
    file_store = _nats_file_store(run)
    assert file_store["pvc"]["size"] == "4Gi"
    assert file_store["maxSize"] == f"{int(4 * 1024 * 0.9)}Mi"
    claim = run.one(STATEFUL_SET, "liftoff-postgres-statefulset").inputs["spec"][
        "volumeClaimTemplates"
    ][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
    assert run.outputs[STORAGE_OUTPUT] == {"postgres": 4, "stream": 4}


def test_a_stated_size_other_than_the_deployed_one_is_still_refused():
    with pytest.raises(ValueError, match=r"liftoff:stream\.storageGb: got 8; allowed: 2"):
        run_program(
            "Pulumi.dev.yaml",
            overrides={"liftoff:stream": {"storageGb": 8, "storageResizedFrom": 4, "replicas": 1}},
            previous_outputs=DEPLOYED,
        )


@pytest.mark.parametrize("key", ["stream", "postgres"])
def test_storage_resized_from_is_kubernetes_only(key):
    values = {
        "liftoff:target": "aws",
        "aws:region": "eu-west-1",
        f"liftoff:{key}": json.dumps({"storageResizedFrom": 20}),
    }
    with pytest.raises(ConfigError, match=rf"liftoff:{key}\.storageResizedFrom: .*only with"):
        load_config(values, project="liftoff", stack="dev")
