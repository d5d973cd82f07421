"""The README's signal contract table is the code's: one row per signal, same severity,
threshold key and default, meaning and runbook."""

from __future__ import annotations

from pathlib import Path

from components.observability import SIGNALS, number_text

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_table_matches_the_contract():
    rows = {
        line.split("|")[1].strip(): line
        for line in README.read_text().splitlines()
        if line.startswith("| `Liftoff")
    }
    assert set(rows) == {f"`{signal.name}`" for signal in SIGNALS}
    for signal in SIGNALS:
        row = rows[f"`{signal.name}`"]
        assert f"| {signal.severity} |" in row
        assert signal.meaning in row and signal.runbook in row
        if signal.threshold is not None:
            threshold = signal.threshold
            assert f"`{threshold.key}`: {number_text(threshold.default)} ({threshold.unit})" in row
