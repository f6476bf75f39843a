"""The evaluate stage's metrics.json as a table a person reads: one row per system, few columns."""

from __future__ import annotations

from typing import Any


def headline_rows(metrics: dict[str, Any], measure: str, reference: str = "bm25") -> tuple[list[str], list[list[Any]]]:
    """Header and rows: each system's ``measure`` on all judged queries and on the dev and test splits, and its
    test-split difference to ``reference`` with the paired test's p-value; best on test first."""
    header = ["system", measure, "dev", "test", f"test vs {reference}", "p (paired)"]
    rows = []
    for system, values in metrics.items():
        if not isinstance(values, dict) or measure not in values:
            continue  # a synthetic-only or note entry
        test, dev = values.get("test") or {}, values.get("dev") or {}
        delta, p = test.get(f"delta_vs_{reference}"), test.get(f"p_randomisation_vs_{reference}")
        rows.append([system, _fmt(values[measure]), _fmt(dev.get(measure)), _fmt(test.get(measure)),
                     "" if delta is None else f"{delta:+.4f}", "" if p is None else f"{p:.3f}"])
    rows.sort(key=lambda r: -(float(r[3] or r[1] or 0)))
    return header, rows


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"
