"""The change matrix: every change a customer makes (tests/day2/changes.py), on every shipped
stack it applies to, and the upgrade from the previous release (.release/previous), declared
before and after under mocks and diffed with the providers' replace-on-change facts
(tests/day2/provider_facts.yaml).

A change that replaces or deletes a stateful resource (or that the data path refuses or loses
data on) fails the matrix unless it is listed as needing a procedure: then the README has the
procedure and, where the program can, it refuses the change on an existing stack. Every
listed verdict is exactly the one the declarations show, and the README's table is generated
from the list, so neither can drift.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import stack_run
from tests.day2 import __main__ as day2_cli
from tests.day2.changes import CHANGES, UPGRADE, Change, parsed_config
from tests.day2.diff import (
    PROCEDURE,
    REPLACE,
    VERDICTS,
    diff,
    facts,
    losses,
    records,
    verdict,
)
from tests.day2.matrix import (
    PREVIOUS_RELEASE_FILE,
    RELEASES,
    _run,
    outcome,
    prefetch_previous,
    previous_release,
    stacks_for,
)
from tests.harness import ROOT, STACK_FILES, stack_name_of

README = ROOT / "README.md"


@pytest.fixture(scope="module", autouse=True)
def _previous_release_in_the_background() -> None:
    """The previous release declares itself (a subprocess) while the other changes run."""
    prefetch_previous()


def _anchors() -> set[str]:
    """GitHub's anchors of the README's headings."""
    found = set()
    for line in README.read_text().splitlines():
        if line.startswith("#") and " " in line:
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            found.add(f"#{slug}")
    return found


@pytest.mark.parametrize("change", CHANGES, ids=[c.id for c in CHANGES])
def test_each_change_has_the_verdict_its_declarations_show(change: Change) -> None:
    outcomes = [o for o in (outcome(change, p) for p in stacks_for(change)) if o is not None]
    assert outcomes, f"{change.id} applies to no shipped stack"
    for found in outcomes:
        lost = losses(found.effects)
        if lost:
            explained = "; ".join(f"{e.resource}: {e.why} (loses {e.loses})" for e in lost)
            assert change.verdict == PROCEDURE and change.procedure, (
                f"{change.id} on {found.stack} loses data without a procedure: {explained}"
            )
    worst = max((o.verdict for o in outcomes), key=VERDICTS.index)
    shown = {o.stack: o.verdict for o in outcomes}
    assert change.verdict == worst, f"{change.id}: listed {change.verdict!r}, shown {shown}"


def test_every_procedure_is_a_readme_section() -> None:
    anchors = _anchors()
    shipped = {stack_name_of(p) for p in STACK_FILES}
    for change in CHANGES:
        assert set(change.stacks) <= shipped, change.id
        assert change.verdict in VERDICTS, change.id
        if change.verdict == PROCEDURE:
            assert change.procedure, change.id
        if change.procedure:
            assert change.procedure in anchors, f"{change.id}: no README section {change.procedure}"


@pytest.mark.parametrize(
    "change", [c for c in CHANGES if c.refused], ids=[c.id for c in CHANGES if c.refused]
)
def test_the_program_refuses_it_on_an_existing_stack_unless_the_procedure_was_followed(
    change: Change,
) -> None:
    for path in stacks_for(change):
        before_config = change.before(parsed_config(path))
        deployed = _run(path, before_config).outputs  # what the previous update exported
        after_config = change.after(before_config)
        assert after_config is not None
        unstated = copy.deepcopy(after_config)
        for key, names in change.statement.items():
            for name in names:
                unstated[key].pop(name, None)
        with pytest.raises(ValueError) as refused:
            _run(path, unstated, previous=deployed)
        title = next(
            line.lstrip("#").strip()
            for line in README.read_text().splitlines()
            if line.startswith("#") and _anchors_of(line) == change.procedure
        )
        assert title in str(refused.value), (path.name, str(refused.value)[:500])
        _run(path, after_config, previous=deployed)  # stated: it goes ahead


def _anchors_of(heading: str) -> str:
    title = heading.lstrip("#").strip().lower()
    return "#" + re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def test_the_readme_table_is_the_list() -> None:
    text = README.read_text()
    start, end = day2_cli.START, day2_cli.END
    assert start in text and end in text, "README: the change-matrix markers are missing"
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == day2_cli.table(), "regenerate it: python -m tests.day2 --readme"


def test_the_previous_release_is_a_recorded_commit() -> None:
    commit = previous_release()
    assert re.fullmatch(r"[0-9a-f]{7,40}", commit), PREVIOUS_RELEASE_FILE
    subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"], check=True)
    assert commit in RELEASES.read_text(), "RELEASES.md names the previous release"
    assert any(c.target == UPGRADE for c in CHANGES)


def test_every_fact_names_its_source() -> None:
    table = facts()
    for type_, entry in table["replace_on_change"].items():
        assert entry["paths"] and entry["source"], type_
    for chart, entries in table["charts"].items():
        assert all(e["paths"] and e["source"] for e in entries), chart
    assert all(e["source"] and e["loses"] for e in table["data"])
    assert all(e["holds"] for e in table["stateful"].values())


# --- the differ itself: a replacement it must see, and what it must not call one ----------


def _postgres(run_records: list[dict]) -> dict:
    return next(r for r in run_records if r["name"] == "liftoff-postgres-statefulset")


def test_the_differ_sees_a_claim_template_change_as_a_stateful_replacement() -> None:
    before = records(stack_run("dev"))
    after = copy.deepcopy(before)
    claim = _postgres(after)["inputs"]["spec"]["volumeClaimTemplates"][0]
    claim["spec"]["resources"]["requests"]["storage"] = "4Gi"
    (lost,) = losses(diff(before, after))
    assert lost.action == "replace" and "volumeClaimTemplates" in lost.why
    assert verdict(diff(before, after)) == PROCEDURE


def test_the_differ_honours_ignore_changes_and_retain_on_delete() -> None:
    before = records(stack_run("dev"))
    after = copy.deepcopy(before)
    labels = _postgres(after)["inputs"]["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"]
    labels["team"] = "data"  # under the StatefulSet's ignoreChanges
    assert diff(before, after) == []
    retained = [dict(r, retainOnDelete=True) for r in before if r["name"].endswith("-namespace")]
    kept = [r for r in before if not r["name"].endswith("-namespace")]
    effects = diff([*kept, *retained], kept)
    assert [e.action for e in effects] == ["forget"] and not losses(effects)


def test_the_differ_sees_new_config_map_data_as_an_allowed_replacement() -> None:
    """pulumi-kubernetes replaces a ConfigMap (or Secret) whose data changes unless the
    provider makes them mutable, which liftoff's does not: a replacement, but not of data."""
    before = records(stack_run("dev"))
    after = copy.deepcopy(before)
    dags = next(r for r in after if r["name"] == "liftoff-airflow-dags")
    dags["inputs"]["data"]["liftoff_extra.py"] = "# a new DAG file\n"
    (effect,) = diff(before, after)
    assert effect.action == "replace" and "ConfigMap" in effect.resource and not losses([effect])
    assert verdict([effect]) == REPLACE
    labelled = copy.deepcopy(before)
    next(r for r in labelled if r["name"] == "liftoff-airflow-dags")["inputs"]["metadata"][
        "labels"
    ]["team"] = "data"
    assert [e.action for e in diff(before, labelled)] == ["update"]


def test_the_differ_sees_a_removed_stateful_resource() -> None:
    before = records(stack_run("dev"))
    after = [r for r in before if not r["name"].endswith("-namespace")]
    (lost,) = losses(diff(before, after))
    assert lost.action == "delete" and "Namespace" in lost.resource


def test_a_stack_file_is_what_the_matrix_reads() -> None:
    assert Path(PREVIOUS_RELEASE_FILE).is_file()
    assert parsed_config(ROOT / "Pulumi.dev.yaml")["liftoff:target"] == "kubernetes"
