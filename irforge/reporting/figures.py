"""The report's figures (matplotlib, Agg backend), each saved as a PNG beside the page with no version stamp,
so the same data gives the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig, folder: Path, name: str) -> str:
    """Write ``fig`` as ``folder/name`` and close it; returns the file name."""
    fig.tight_layout()
    fig.savefig(folder / name, dpi=100, metadata={"Software": None})  # no version stamp: reproducible bytes
    plt().close(fig)
    return name


def measure_bars(metrics: dict[str, dict], shown: list[str], baseline: str):
    names = list(metrics)
    fig, axes = plt().subplots(1, len(shown), figsize=(4.2 * len(shown), 0.35 * len(metrics) + 1.5), squeeze=False)
    for ax, measure in zip(axes[0], shown, strict=True):
        values = [metrics[s].get(measure, 0.0) for s in names]
        colors = ["#888" if s == baseline else ("#2b6cb0" if "zs" in s else "#c05621") for s in names]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(measure)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.25 if max(values) > 0 else 1)
    return fig


def verdict_intervals(systems: dict[str, dict], default: str | None, choice: str | None):
    """Each system's estimate with its 95 % interval (resampled queries; unjudged documents when uncertain)."""
    names = sorted(systems, key=lambda s: -systems[s]["estimate"])
    fig, ax = plt().subplots(figsize=(8, 0.35 * len(names) + 1.5))
    for y, name in enumerate(names):
        row = systems[name]
        color = "#2f855a" if name == choice else ("#2b6cb0" if name == default else "#4a5568")
        ax.plot([row["low"], row["high"]], [y, y], color=color, lw=2)
        ax.plot(row["estimate"], y, "o", color=color)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("nDCG@10: estimate and 95 % interval (green: served, blue: the default)")
    return fig


def latency_bars(metrics: dict[str, dict]):
    names = list(metrics)
    fig, ax = plt().subplots(figsize=(7, 0.35 * len(metrics) + 1.5))
    ax.barh(names, [metrics[s].get("latency_mean_ms", 0.0) for s in names], color="#4a5568")
    ax.invert_yaxis()
    ax.set_xlabel("mean query latency (ms, encoding included)")
    return fig


def sorted_differences(diffs: dict[str, np.ndarray], ylabel: str):
    fig, ax = plt().subplots(figsize=(8, 4))
    for system, diff in diffs.items():
        ax.plot(np.sort(diff)[::-1], label=system)
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel("queries, sorted by difference")
    ax.set_ylabel(ylabel)
    if diffs:  # a project with only the baseline system has no difference to draw
        ax.legend(fontsize=7)
    return fig


def training_curves(rows: list[dict[str, Any]]):
    models = sorted({r["model"] for r in rows})
    sparse = [r for r in rows if r.get("nnz_doc") is not None]
    fig, axes = plt().subplots(1, 3 if sparse else 1, figsize=(13 if sparse else 6, 3.5), squeeze=False)
    ax = axes[0][0]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        ax.plot([r["step"] for r in mine], [r["loss"] for r in mine], label=f"{model} loss")
        if model == "splade":
            ax.plot([r["step"] for r in mine], [r["loss_reg"] for r in mine], "--", label="splade FLOPS term")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    if sparse:
        steps = [r["step"] for r in sparse]
        axes[0][1].plot(steps, [r["nnz_query"] for r in sparse], label="query")
        axes[0][1].plot(steps, [r["nnz_doc"] for r in sparse], label="passage")
        axes[0][1].set_title("SPLADE non-zero terms")
        axes[0][1].legend(fontsize=7)
        axes[0][2].plot(steps, [r["flops"] for r in sparse])
        axes[0][2].set_title("SPLADE FLOPS estimate")
    return fig


def ablation_bars(rows: list[dict], varying: list[str], value: dict[tuple[str, str], float],
                  references: dict[str, float], main: str):
    fig, ax = plt().subplots(figsize=(12, 0.25 * len(rows) * len(varying) + 2))
    height = 0.8 / len(varying)
    for j, system in enumerate(varying):
        ys = [i + j * height for i in range(len(rows))]
        ax.barh(ys, [value.get((r["name"], system), 0.0) for r in rows], height=height, label=system)
    for k, (system, v) in enumerate(sorted(references.items(), key=lambda kv: kv[1])):
        ax.axvline(v, color="#555", linestyle=(0, (2, 2 + k)), linewidth=1)
        ax.text(v, -0.6, f"{system} {v:.3f}", rotation=90, va="bottom", ha="right", fontsize=7, color="#555")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))], [r["name"] for r in rows])
    ax.invert_yaxis()
    lo = min(min(value.values()), *references.values()) if references else min(value.values())
    ax.set_xlim(max(0.0, lo - 0.05), max(value.values()) + 0.02)
    ax.set_xlabel(f"{main} (dotted lines: systems no run changed)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: bars reach the right edge
    return fig


def cost_at(points: list[tuple[float, float]], n: float) -> float:
    """A stage's cost at ``n`` passages from its measured ``(passages, seconds)``: the power law through the two
    nearest measured sizes (log-log interpolation; beyond the ends, the end segment's slope)."""
    points = sorted(points)
    if len(points) == 1:
        return points[0][1] * n / points[0][0]  # one size: linear in the corpus
    i = min(max(1, int(np.searchsorted([p[0] for p in points], n))), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    slope = np.log(y1 / y0) / np.log(x1 / x0) if y0 > 0 and y1 > 0 else 1.0
    return float(y0 * (n / x0) ** slope)


def stage_order(sizes: list[dict[str, Any]]) -> list[str]:
    """The stages of a cost curve in pipeline order (chunk, then each index's encoding before its build)."""
    first = ["chunk", "bm25 index", "dense-zs encoding", "faiss index", "splade-zs encoding", "impact index"]
    seen = list(dict.fromkeys(s for r in sizes for s in r["stages"]))
    return [s for s in first if s in seen] + [s for s in seen if s not in first]


def scale_curve(sizes: list[dict[str, Any]], search_systems: list[str], mark: int | None = None):
    """Wall seconds per stage against passages (log-log; dashed: extrapolated), and search p95 per system;
    ``mark``: the passages of the corpus a report describes."""
    fig, (ax, bx) = plt().subplots(1, 2, figsize=(11, 4.2))
    for stage in stage_order(sizes):
        pts = [(r["passages"], r["stages"][stage]["wall_s"], "extrapolated" in r["stages"][stage])
               for r in sizes if stage in r["stages"]]
        measured = [p for p in pts if not p[2]]
        line, = ax.plot([p[0] for p in measured], [p[1] for p in measured], "o-", label=stage)
        guessed = [p for p in pts if p[2]]
        if guessed and measured:
            ax.plot([measured[-1][0], *[p[0] for p in guessed]], [measured[-1][1], *[p[1] for p in guessed]], "o--",
                    color=line.get_color(), mfc="none")
    for system in search_systems:
        pts = [(r["passages"], r["search"][system]["p95_ms"]) for r in sizes if system in r.get("search", {})]
        bx.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=system)
    for a in (ax, bx):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("passages")
        a.grid(True, which="both", alpha=0.3)
        if mark:
            a.axvline(mark, color="#c05621", ls=":", label=f"this corpus ({mark:,})")
        a.legend(fontsize=7)
    ax.set_ylabel("wall seconds on 2 cores (dashed: extrapolated)")
    ax.set_title("cost of each stage")
    bx.set_ylabel("p95 ms per query, top 100")
    bx.set_title("search latency, one query at a time")
    return fig
