"""`liftoff:stream`: partitions by profile, validation, target; the NATS servers' resources."""

from __future__ import annotations

import pytest

from components.stream.settings import MAX_PARTITIONS, PRODUCTION_PARTITIONS
from tests.components.configs import load, problems


def test_partitions_default_to_one_for_a_single_server_and_production_for_a_cluster():
    single = load({"liftoff:target": "kubernetes", "liftoff:stream": {"replicas": 1}})
    assert single.stream.kubernetes.partitions == 1
    clustered = load({"liftoff:target": "kubernetes", "liftoff:stream": {"replicas": 3}})
    assert clustered.stream.kubernetes.partitions == PRODUCTION_PARTITIONS
    chosen = load({"liftoff:target": "kubernetes", "liftoff:stream": {"partitions": 16}})
    assert chosen.stream.kubernetes.partitions == 16
    # Whether the stack chose it: an unset count keeps what a live stack has.
    assert chosen.stream.kubernetes.partitions_chosen
    assert not clustered.stream.kubernetes.partitions_chosen


@pytest.mark.parametrize(
    "stream",
    [{"repartitionFrom": 1}, {"partitions": 8, "repartitionFrom": 8}, {"partitions": 8,
     "repartitionFrom": 65}],
)  # fmt: skip
def test_repartition_from_goes_only_beside_a_different_count(stream):
    found = problems({"liftoff:target": "kubernetes", "liftoff:stream": stream})
    assert len(found) == 1 and "liftoff:stream.repartitionFrom" in found[0]
    fine = load(
        {"liftoff:target": "kubernetes", "liftoff:stream": {"partitions": 8, "repartitionFrom": 1}}
    )
    assert fine.stream.kubernetes.repartition_from == 1


@pytest.mark.parametrize("value", [0, MAX_PARTITIONS + 1, -3, "many"])
def test_partitions_out_of_range_are_refused_with_the_key_and_the_range(value):
    found = problems({"liftoff:target": "kubernetes", "liftoff:stream": {"partitions": value}})
    assert len(found) == 1
    assert "liftoff:stream.partitions" in found[0] and str(value) in found[0]


def test_partitions_are_kubernetes_only_kinesis_has_shards():
    found = problems(
        {"liftoff:target": "aws", "aws:region": "eu-west-1", "liftoff:stream": {"partitions": 4}}
    )
    assert len(found) == 1 and "liftoff:stream.partitions" in found[0]
    assert "kubernetes" in found[0]


def test_one_registry_for_the_defaults_and_bounds_the_stack_and_the_adapters_use():
    """services/stream/address.py: the dataclass's default is the reader's (it was 1 in one and
    8 in the other), and the stack accepts exactly the partition counts the URL grammar does."""
    from components.stream.settings import KubernetesStream
    from services.stream.address import (
        InvalidStreamUrl,
        JetStreamAddress,
        default_partitions,
        jetstream_url,
    )

    defaults = KubernetesStream()
    assert defaults.partitions == default_partitions(defaults.replicas) == PRODUCTION_PARTITIONS
    read = load({"liftoff:target": "kubernetes"}).stream.kubernetes
    assert (read.replicas, read.partitions) == (defaults.replicas, defaults.partitions)
    for count in (1, MAX_PARTITIONS):
        url = jetstream_url("nats:4222", partitions=count)
        assert JetStreamAddress.parse(url).partitions == count
        stack = {"liftoff:target": "kubernetes", "liftoff:stream": {"partitions": count}}
        assert load(stack).stream.kubernetes.partitions == count
    with pytest.raises(InvalidStreamUrl):
        JetStreamAddress.parse(jetstream_url("nats:4222", partitions=MAX_PARTITIONS + 1))


def test_unequal_nats_requests_and_limits_are_refused():
    import json

    import pytest

    from components.config import load_config
    from components.validation import ConfigError

    stream = {
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
    }
    with pytest.raises(ConfigError, match=r"liftoff:stream\.resources: .*requests equal to limits"):
        load_config(
            {"liftoff:target": "kubernetes", "liftoff:stream": json.dumps(stream)},
            project="liftoff",
            stack="dev",
        )
