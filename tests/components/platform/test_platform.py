"""The platform assembly: each target's builder wires every capability through its contract,
exports what both targets share plus its own outputs, and imports only its own provider."""

from __future__ import annotations

import subprocess
import sys

import pulumi
import pytest

from components.airflow import Airflow
from components.archive import Archive, KubernetesArchiveContract
from components.config import read_stack_config
from components.consumers import AwsConsumersContract, KubernetesConsumersContract
from components.ingest import AwsIngestContract, KubernetesIngestContract
from components.network import AwsNetworkContract, KubernetesNetworkContract
from components.platform import Platform
from components.platform.aws import AwsParts
from components.platform.kubernetes import KubernetesParts
from components.postgres import AwsPostgresContract, KubernetesPostgresContract
from components.stream import AwsStreamContract, KubernetesStreamContract
from tests.conftest import stack_run
from tests.harness import ROOT, STACK_FILES, load_stack_config, run_with_config, stack_name_of

COMMON_OUTPUTS = {
    "target", "postgres", "postgresMajorVersion", "stream", "collectorUrl", "writeKeys"
}  # fmt: skip
CONTRACTS = {
    "aws": {
        "network": AwsNetworkContract,
        "postgres": AwsPostgresContract,
        "stream": AwsStreamContract,
        "ingest": AwsIngestContract,
        "archive": Archive,
        "consumers": AwsConsumersContract,
    },
    "kubernetes": {
        "network": KubernetesNetworkContract,
        "postgres": KubernetesPostgresContract,
        "stream": KubernetesStreamContract,
        "ingest": KubernetesIngestContract,
        "archive": KubernetesArchiveContract,
        "consumers": KubernetesConsumersContract,
    },
}


def assembled(stack: str) -> Platform:
    """The Platform object the program builds for a shipped stack (under the mocks)."""
    path = next(p for p in STACK_FILES if stack_name_of(p) == stack)
    config, secret_keys = load_stack_config(path)
    built: list[Platform] = []

    def program() -> None:
        platform = Platform("liftoff", read_stack_config())
        for key, value in platform.outputs.items():
            pulumi.export(key, value)
        built.append(platform)

    run_with_config(config, stack=stack, secret_keys=secret_keys, program=program)
    return built[0]


@pytest.mark.parametrize("stack", [stack_name_of(p) for p in STACK_FILES])
def test_each_capability_is_assembled_as_its_targets_contract(stack):
    platform = assembled(stack)
    parts = platform.parts
    target = platform.config.target
    assert isinstance(parts, AwsParts if target == "aws" else KubernetesParts)
    for capability, contract in CONTRACTS[target].items():
        part = getattr(parts, capability)
        if part is None:  # the archive, on Kubernetes without an endpoint
            assert capability == "archive" and target == "kubernetes"
            continue
        assert isinstance(part, contract), f"{capability}: {type(part).__name__}"
    if parts.airflow is not None:
        assert isinstance(parts.airflow, Airflow)


def test_every_stack_declares_the_platform(any_stack):
    assert any_stack.outputs["target"] in ("aws", "kubernetes")
    postgres = any_stack.outputs["postgres"]
    assert set(postgres) == {"host", "port", "database", "dnsName"}
    assert postgres["port"] == 5432
    platform = any_stack.one("liftoff:index:Platform")
    assert platform.name == "liftoff"


def test_outputs_are_the_shared_ones_plus_each_targets_own():
    aws = stack_run("aws")
    assert set(aws.outputs) - COMMON_OUTPUTS == {
        "vpcId", "archive", "airflowUrl", "warehouse", "alarmTopicArn", "dashboardUrl"
    }  # fmt: skip
    kubernetes = stack_run("kubernetes-private-cloud")
    assert set(kubernetes.outputs) - COMMON_OUTPUTS == {
        "namespace", "archive", "airflowUrl", "warehouse", "storageGb"
    }  # fmt: skip
    assert set(kubernetes.outputs["archive"]) == {"bucket", "endpoint"}
    assert "writeKeys" in aws.secret_outputs and "writeKeys" in kubernetes.secret_outputs
    assert set(aws.outputs["stream"]) == {"url", "name"}


def test_dev_stack_without_an_archive_exports_none():
    assert "archive" not in stack_run("dev").outputs


def test_kubernetes_stack_never_imports_pulumi_aws():
    script = (
        "import sys\n"
        "from tests.harness import run_program\n"
        "run = run_program('Pulumi.dev.yaml')\n"
        "assert run.outputs['target'] == 'kubernetes'\n"
        "print('pulumi_aws' in sys.modules, 'pulumi_kubernetes' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]
