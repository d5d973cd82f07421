"""`python -m tests.day2`: the README's change matrix table, from `changes.CHANGES`
(tests/test_change_matrix.py checks the README has it; `--readme` writes it between the
README's `change-matrix` markers), or with `--explain` every change's effects on every stack,
as the test computes them."""

from __future__ import annotations

import argparse
import logging

from tests.day2.changes import CHANGES, UPGRADE
from tests.harness import ROOT

START, END = "<!-- change-matrix:start -->\n", "<!-- change-matrix:end -->"

TARGETS = {"aws": "AWS", "kubernetes": "Kubernetes", UPGRADE: "both"}


def table() -> str:
    lines = [
        "| change | target | verdict | what happens |",
        "|---|---|---|---|",
    ]
    for change in CHANGES:
        verdict = change.verdict
        if change.procedure:
            verdict = f"[{verdict}]({change.procedure})"
        if change.refused:
            verdict += ", refused without it"
        lines.append(f"| {change.what} | {TARGETS[change.target]} | {verdict} | {change.note} |")
    return "\n".join(lines)


def explain() -> None:
    from tests.day2.matrix import all_outcomes

    logging.disable(logging.WARNING)
    for outcome in all_outcomes():
        print(f"{outcome.change.id} on {outcome.stack}: {outcome.verdict}")
        for effect in outcome.effects:
            loses = f" LOSES {effect.loses}" if effect.loses else ""
            print(f"    {effect.action} {effect.resource} {effect.why[:160]}{loses}")


def write_readme() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    readme.write_text(f"{head}{START}{table()}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.day2", description=__doc__)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--readme", action="store_true")
    arguments = parser.parse_args()
    if arguments.explain:
        explain()
    elif arguments.readme:
        write_readme()
    else:
        print(table())


if __name__ == "__main__":
    main()
