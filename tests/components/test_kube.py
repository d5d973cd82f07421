"""Kubernetes helpers: image references through the registry override, labels."""

from __future__ import annotations

import pytest

from components import kube


def test_image_without_mirror_is_unchanged():
    assert kube.image("docker.io/library/postgres:17.7", None) == "docker.io/library/postgres:17.7"


def test_mirror_replaces_the_registry_host_and_keeps_the_path():
    assert (
        kube.image("docker.io/nats:2.12.3-alpine", "harbor.corp:8443/proxy")
        == "harbor.corp:8443/proxy/nats:2.12.3-alpine"
    )


@pytest.mark.parametrize(
    "reference", ["postgres:17", "docker.io/library/postgres", "docker.io/library/postgres:latest"]
)
def test_unpinned_or_unqualified_images_are_refused(reference):
    with pytest.raises(ValueError, match="must"):
        kube.image(reference, None)


def test_well_known_labels_win_over_tags():
    labels = kube.labels("postgres", "dev", {"app.kubernetes.io/name": "x", "team": "data"})
    assert labels["app.kubernetes.io/name"] == "postgres"
    assert labels["team"] == "data"
    assert kube.selector("postgres", "dev").items() <= labels.items()
