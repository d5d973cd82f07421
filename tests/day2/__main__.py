"""`python -m tests.day2`: the README's change matrix table, from `changes.CHANGES` (paste it
between the README's `change-matrix` markers; tests/test_change_matrix.py checks it), or with
`--explain` every change's effects on every stack, as the test computes them."""

from __future__ import annotations

import argparse
import logging

from tests.day2.changes import CHANGES, UPGRADE

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.day2", description=__doc__)
    parser.add_argument("--explain", action="store_true")
    if parser.parse_args().explain:
        explain()
    else:
        print(table())


if __name__ == "__main__":
    main()
