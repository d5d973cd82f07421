"""Stack files → local plans, through the Pulumi program's own validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.archive.settings import ArchiveSettings
from components.config import load_config
from components.validation import ConfigError
from liftoff_local.stack import LOCAL_ARCHIVE, load_plan, read_stack_file
from tests.harness import STACK_FILES, load_stack_config


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_every_shipped_stack_file_gives_a_local_plan(path: Path) -> None:
    plan = load_plan(path)
    assert plan.sources == [s.name for s in plan.config.sources]
    assert plan.archive_bucket
    assert all(note for note in plan.notes)
    # Pulumi secrets are never decrypted locally: third-party destinations say how to run them.
    for local in plan.destinations:
        assert local.secret is None
        assert local.destination.name in local.note


def test_config_is_read_as_the_program_reads_it() -> None:
    """Same strings and secret keys as the Pulumi test harness feeds the program."""
    for path in STACK_FILES:
        values, secret_keys, _ = read_stack_file(path)
        expected_values, expected_secrets = load_stack_config(path)
        assert set(values) == set(expected_values)
        assert secret_keys == expected_secrets


def test_dev_stack_archives_locally_with_small_batches() -> None:
    plan = load_plan(Path("Pulumi.dev.yaml"))
    assert plan.config.archive == ArchiveSettings()  # no liftoff:archive on this stack
    assert plan.archive == LOCAL_ARCHIVE
    assert plan.archive_bucket == "liftoff-dev-archive"
    assert any("liftoff:kubernetes" in note for note in plan.notes)


def test_local_secrets_enable_a_destination() -> None:
    path = Path("stacks/kubernetes-private-cloud.yaml")
    plan = load_plan(path, {"crm": {"signingSecret": "s3cret"}})
    by_name = {d.destination.name: d for d in plan.destinations}
    assert by_name["crm"].secret == "s3cret"
    assert by_name["amplitude"].secret is None


def test_a_broken_stack_file_fails_with_the_programs_message(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text(
        "config:\n  liftoff:target: kubernetes\n  liftoff:postgres:\n    version: '9'\n"
        "  liftoff:sources:\n    - name: Web!\n"
    )
    with pytest.raises(ConfigError) as local:
        load_plan(path)
    values, secrets = load_stack_config(path)
    with pytest.raises(ConfigError) as program:
        load_config(values, project="liftoff", stack="broken", secret_keys=secrets)
    assert str(local.value) == str(program.value)
    assert "liftoff:postgres.version" in str(local.value)


def test_bootstrap_requirements_use_the_repositorys_pins() -> None:
    """`python3 -m liftoff_local` installs a subset; its pins must be requirements.txt's."""
    from tests.servers import REPO_ROOT

    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("-r "):
                found.update(pins(path.parent / line[3:].strip()))
            elif "==" in line:
                name, version = line.split("==")
                found[name.split("[")[0].lower()] = version
        return found

    local = pins(REPO_ROOT / "liftoff_local" / "requirements.txt")
    everything = pins(REPO_ROOT / "requirements.txt")
    assert {"pyyaml", "moto", "nats-py", "psycopg", "uvicorn"} <= set(local)
    assert {name: everything.get(name) for name in local} == local


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: p.name)
def test_the_collector_hears_of_its_sources_as_on_the_platform(path: Path) -> None:
    """liftoff local builds the collector's sources with the platform's own builder (no copy
    of it): origins of the sources that restrict them, sources that keep no IP address."""
    from components.ingest import collector_sources

    sources = load_plan(path).config.sources
    shop = type(sources[0])(name="shop", allowed_origins=("https://shop.example",))
    quiet = type(sources[0])(name="server", collect_ip=False)
    settings = collector_sources((*sources, shop, quiet))
    assert settings.allowed_origins is not None
    assert settings.allowed_origins["shop"] == ("https://shop.example",)
    assert settings.no_ip_sources is not None and "server" in settings.no_ip_sources
