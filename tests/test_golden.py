"""Every shipped stack still declares exactly what was recorded in tests/golden/.

A refactor must leave these green. A change that means to alter declarations re-records them
from the reference code: `python -m tests.golden --update` (see tests/golden/__init__.py).
"""

from __future__ import annotations

import difflib

import pytest

from tests.conftest import stack_run
from tests.golden import dump, golden_path, record
from tests.harness import STACK_FILES, stack_name_of

MAX_DIFF_LINES = 300


def diff(expected: str, actual: str, stack: str) -> str:
    lines = list(
        difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            fromfile=f"tests/golden/{stack}.json",
            tofile=f"{stack} as declared now",
            lineterm="",
            n=6,
        )
    )
    cut = lines[:MAX_DIFF_LINES]
    if len(lines) > MAX_DIFF_LINES:
        cut.append(f"... {len(lines) - MAX_DIFF_LINES} more diff lines")
    return "\n".join(cut)


@pytest.mark.parametrize("stack", [stack_name_of(p) for p in STACK_FILES])
def test_stack_declares_what_was_recorded(stack):
    path = golden_path(stack)
    assert path.exists(), f"no record for {stack}: run python -m tests.golden --update"
    expected = path.read_text()
    actual = dump(record(stack_run(stack)))
    assert actual == expected, (
        "declarations changed (re-record only if intended: python -m tests.golden --update)\n"
        + diff(expected, actual, stack)
    )


def test_a_changed_input_shows_in_the_diff():
    data = record(stack_run("dev"))
    changed = dump(data).replace('"liftoff"', '"liftoff-renamed"', 1)
    shown = diff(dump(data), changed, "dev")
    assert "+" in shown and "liftoff-renamed" in shown
    assert changed != dump(data)
