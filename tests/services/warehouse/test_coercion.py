"""The writer's row coercion (:class:`services.warehouse.writer.Coercion`) against the rule it
implements, value by value: :func:`services.warehouse.typed.coerce`, a misfit NULL and kept in
the discards (in column order within a row)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.warehouse.typed import COLUMN_TYPES, MISFIT, as_text, coerce
from services.warehouse.writer import Coercion

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["2026-11-27T20:19:03.512Z", "2026-11-27", "2026-13-45T99:00:00Z", "42"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
COLUMNS = st.dictionaries(
    st.sampled_from([f"c{n}" for n in range(8)]),
    st.sampled_from([*COLUMN_TYPES, "numeric"]),  # numeric: a type foreign to the writer
    min_size=1,
)


def expected(table: str, columns: dict[str, str], row: dict[str, Any]) -> tuple[list, list]:
    values, discards = [], []
    for column, kind in columns.items():
        value = row.get(column)
        fitted = None if value is None else coerce(value, kind)
        if fitted is MISFIT:
            discards.append(
                (table, column, kind, as_text(value), row.get("id"), row.get("received_at"))
            )
            fitted = None
        values.append(fitted)
    return values, discards


@given(COLUMNS, st.lists(st.dictionaries(st.sampled_from([f"c{n}" for n in range(10)]), JSON)))
def test_coercion_is_coerce_value_by_value(columns: dict[str, str], rows: list[dict]) -> None:
    coercion = Coercion("t", columns)
    for index, row in enumerate(rows):
        row = {**row, "id": f"m-{index}", "received_at": "2026-11-27T20:19:03Z"}
        discards: list[Any] = []
        values = coercion.values(row, discards)
        want_values, want_discards = expected("t", columns, row)
        assert values == want_values
        assert [type(v) for v in values] == [type(v) for v in want_values]  # 1 is not 1.0
        assert discards == want_discards
