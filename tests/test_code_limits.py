"""Size limits of the platform's code: no function over 60 lines, no file over 500, in
components/ (the Pulumi program) and services/ (what runs inside the platform). A function
past the limit is split into named steps, not carved where the count runs out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.harness import ROOT

MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 500
PACKAGES = [
    "components",
    pytest.param(
        "services",
        # services/ is split by role on branch i17-services; remove this mark when it lands
        # (strict: the day services/ meets the limits, this XPASS fails until then).
        marks=pytest.mark.xfail(strict=True, reason="services/ split on i17-services"),
    ),
]


def over_the_limits(package: Path, root: Path = ROOT) -> list[str]:
    """Every file and function of `package` past the limits, named relative to `root`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(root)
        lines = len(source.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_and_files_stay_within_the_limits(package):
    assert over_the_limits(ROOT / package) == []


def test_a_long_function_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "short.py").write_text("def short():\n    return 1\n")
    assert over_the_limits(tmp_path, tmp_path) == [
        f"long.py:1 long: {MAX_FUNCTION_LINES + 1} lines"
    ]
