"""report: one static HTML page (plus PNG figures beside it) that tells what the pipeline achieved.

Sections, each skipped with a note when its artifact does not exist: the system table (every measure,
latency, paired significance against BM25), trained vs zero-shot (``evaluate.compare``), bar charts of the main measures, per-query wins and losses
against BM25 (with the biggest gains and losses spelled out), training curves (loss parts, non-zeros and
FLOPS for SPLADE), the ablation table (``report.ablation``, written by benchmarks/ablation.py), filter pass
rates and example generated queries with their verdicts. Readable offline: no script, no remote asset.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from irforge import layout
from irforge.judgments import load_queries
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="report", version="1", params=("seed", "corpus", "evaluate", "report"))

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.best td { font-weight: bold; }
.note { color: #777; font-style: italic; }
.kept { color: #1a7f37; } .rejected { color: #b42318; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f'<td class="text">{_esc(v)}</td>' if isinstance(v, str) and j else f"<td>{_esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(fig, folder: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(folder / name, dpi=100, metadata={"Software": None})  # no version stamp: reproducible bytes
    plt.close(fig)
    return f'<img src="{name}" alt="{_esc(name)}">'


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- sections


def systems_section(metrics: dict[str, dict], measures: list[str], baseline: str, main: str, folder: Path) -> str:
    plt = _plt()
    best = max(metrics, key=lambda s: metrics[s].get(main, -1))
    header = ["system", *measures, "latency mean ms", "latency p95 ms", f"Δ {main} vs {baseline}", "p (t-test)",
              "p (randomisation)"]
    rows, classes = [], []
    for system, m in metrics.items():
        rows.append([system, *(f"{m.get(x, float('nan')):.4f}" for x in measures), m.get("latency_mean_ms", ""),
                     m.get("latency_p95_ms", ""), m.get(f"delta_vs_{baseline}", ""), m.get(f"p_ttest_vs_{baseline}", ""),
                     m.get(f"p_randomisation_vs_{baseline}", "")])
        classes.append("best" if system == best else "")
    out = [f"<h2>Systems</h2><p>Best by {_esc(main)}: <b>{_esc(best)}</b>. Significance: paired tests of per-query "
           f"{_esc(main)} against {_esc(baseline)}.</p>", _table(header, rows, classes)]
    shown = [x for x in measures if x in (main, "RR@10", "R@100", "AP")] or measures[:1]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 0.35 * len(metrics) + 1.5), squeeze=False)
    names = list(metrics)
    for ax, measure in zip(axes[0], shown, strict=True):
        values = [metrics[s].get(measure, 0.0) for s in names]
        colors = ["#888" if s == baseline else ("#2b6cb0" if "zs" in s else "#c05621") for s in names]
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        ax.set_title(measure)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.25 if max(values) > 0 else 1)
    out.append(_figure(fig, folder, "measures.png"))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(metrics) + 1.5))
    ax.barh(names, [metrics[s].get("latency_mean_ms", 0.0) for s in names], color="#4a5568")
    ax.invert_yaxis()
    ax.set_xlabel("mean query latency (ms, encoding included)")
    out.append(_figure(fig, folder, "latency.png"))
    return "\n".join(out)


def comparison_section(metrics: dict[str, dict], pairs: list[list[str]], main: str) -> str:
    """Each trained system against the same system zero-shot (``evaluate.compare``): the comparison that says
    whether training on the generated queries paid off."""
    rows = [[system, reference, f"{metrics[system][main]:.4f}", f"{metrics[reference][main]:.4f}",
             f"{metrics[system].get(f'delta_vs_{reference}', 0.0):+.4f}",
             f"{metrics[system].get(f'wins_vs_{reference}', '')} / {metrics[system].get(f'losses_vs_{reference}', '')}",
             metrics[system].get(f"p_randomisation_vs_{reference}", "")]
            for system, reference in pairs if system in metrics and reference in metrics]
    if not rows:
        return ""
    return ("<h2>Trained vs zero-shot</h2><p>Paired tests on per-query " + _esc(main) + " (evaluate.compare).</p>"
            + _table(["system", "reference", main, f"reference {main}", "Δ", "queries won / lost", "p (randomisation)"],
                     rows))


def wins_section(per_query: dict[str, dict[str, float]], baseline: str, main: str, queries: dict[str, str],
                 folder: Path, examples: int) -> str:
    plt = _plt()
    if baseline not in per_query:
        return f'<h2>Per-query wins and losses</h2><p class="note">No {_esc(baseline)} run to compare with.</p>'
    qids = sorted(per_query[baseline])
    base = np.array([per_query[baseline][q] for q in qids])
    others = [s for s in per_query if s != baseline]
    rows = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for system in others:
        diff = np.array([per_query[system].get(q, 0.0) for q in qids]) - base
        rows.append([system, int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum()),
                     f"{diff.mean():+.4f}"])
        ax.plot(np.sort(diff)[::-1], label=system)
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel("queries, sorted by difference")
    ax.set_ylabel(f"{main} − {baseline}")
    ax.legend(fontsize=7)
    out = [f"<h2>Per-query wins and losses against {_esc(baseline)} ({_esc(main)})</h2>",
           _table(["system", "wins", "ties", "losses", "mean Δ"], rows), _figure(fig, folder, "wins_losses.png")]
    if others:
        best = max(others, key=lambda s: np.mean([per_query[s].get(q, 0.0) for q in qids]))
        diffs = sorted(((per_query[best].get(q, 0.0) - per_query[baseline][q], q) for q in qids))
        pick = [d for d in diffs[::-1][:examples] if d[0] > 0] + [d for d in diffs[:examples] if d[0] < 0]
        out.append(f"<h3>Biggest gains and losses of {_esc(best)}</h3>")
        out.append(_table(["query", "text", baseline, best, "Δ"],
                          [[q, queries.get(q, ""), f"{per_query[baseline][q]:.3f}", f"{per_query[best].get(q, 0.0):.3f}",
                            f"{d:+.3f}"] for d, q in pick]))
    return "\n".join(out)


def training_section(rows: list[dict], folder: Path) -> str:
    plt = _plt()
    models = sorted({r["model"] for r in rows})
    out = ["<h2>Training</h2>"]
    summary = []
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        summary.append([model, len(mine), f"{mine[0]['loss']:.4f}", f"{mine[-1]['loss']:.4f}",
                        f"{mine[-1]['nnz_query']:.1f}" if mine[-1].get("nnz_query") is not None else "",
                        f"{mine[-1]['nnz_doc']:.1f}" if mine[-1].get("nnz_doc") is not None else "",
                        f"{mine[-1]['flops']:.2f}" if mine[-1].get("flops") is not None else ""])
    out.append(_table(["model", "steps", "first loss", "last loss", "non-zeros / query", "non-zeros / passage",
                       "FLOPS"], summary))
    sparse = [r for r in rows if r.get("nnz_doc") is not None]
    fig, axes = plt.subplots(1, 3 if sparse else 1, figsize=(13 if sparse else 6, 3.5), squeeze=False)
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
    out.append(_figure(fig, folder, "training.png"))
    return "\n".join(out)


def ablation_rows(path: Path) -> list[dict]:
    """The rows of an ablation results file (benchmarks/ablation.py); a malformed one names the row and field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected an object with a list 'rows'")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ValueError(f"{path}: row {i}: field 'name' must be a string")
        metrics = row.get("metrics")
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise ValueError(f"{path}: row {i} ({row['name']}): field 'metrics' must map systems to their measures")
    return rows


def ablation_section(path: Path, main: str, folder: Path) -> str:
    """One row per ablation run: its overrides, training examples and the systems the overrides changed;
    the systems no run changed (BM25, the zero-shot models) are the reference lines of the figure."""
    rows = ablation_rows(path)
    if not rows:
        return ""
    systems = list(dict.fromkeys(s for r in rows for s in r.get("metrics", {})))
    value = {(r["name"], s): r["metrics"][s][main] for r in rows for s in r.get("metrics", {}) if main in r["metrics"][s]}
    varying = [s for s in systems if len({round(value[(r["name"], s)], 6) for r in rows if (r["name"], s) in value}) > 1]
    fixed = {s: value[(rows[0]["name"], s)] for s in systems if s not in varying and (rows[0]["name"], s) in value}
    table = [[r["name"], "; ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items()) or "(params.yaml)",
              r.get("examples", ""), *(f"{value[(r['name'], s)]:.4f}" if (r["name"], s) in value else "" for s in varying),
              r.get("seconds", "")] for r in rows]
    unchanged = ("Unchanged in every run: " + ", ".join(f"{_esc(s)} {v:.4f}" for s, v in fixed.items()) + ".") if fixed else ""
    out = [f"<h2>Ablation ({_esc(main)})</h2><p>From {_esc(path.name)} (benchmarks/ablation.py): each run re-executes "
           f"the stages its params overrides touch, and everything downstream of them. {unchanged}</p>",
           _table(["run", "overrides", "training examples", *varying, "seconds"], table)]
    if varying:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(12, 0.25 * len(rows) * len(varying) + 2))
        height = 0.8 / len(varying)
        for j, system in enumerate(varying):
            ys = [i + j * height for i in range(len(rows))]
            ax.barh(ys, [value.get((r["name"], system), 0.0) for r in rows], height=height, label=system)
        references = {s: v for s, v in fixed.items() if s != "bm25-d2q"}
        for k, (system, v) in enumerate(sorted(references.items(), key=lambda kv: kv[1])):
            ax.axvline(v, color="#555", linestyle=(0, (2, 2 + k)), linewidth=1)
            ax.text(v, -0.6, f"{system} {v:.3f}", rotation=90, va="bottom", ha="right", fontsize=7, color="#555")
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))], [r["name"] for r in rows])
        ax.invert_yaxis()
        lo = min(min(value.values()), *references.values()) if references else min(value.values())
        ax.set_xlim(max(0.0, lo - 0.05), max(value.values()) + 0.02)
        ax.set_xlabel(f"{main} (dotted lines: systems no run changed)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: bars reach the right edge
        out.append(_figure(fig, folder, "ablation.png"))
    return "\n".join(out)


def filter_section(rows: list[dict], examples: int, seed: int) -> str:
    total = len(rows)
    kept = sum(r["kept"] for r in rows)
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            reasons[r["reason"] or "unspecified"] = reasons.get(r["reason"] or "unspecified", 0) + 1
    out = [f"<h2>Generated queries and the filter</h2><p>{kept} of {total} generated queries kept "
           f"({kept / max(1, total):.1%}).</p>",
           _table(["rejected because", "queries", "share"],
                  [[k, v, f"{v / max(1, total):.1%}"] for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])])]
    by_template: dict[str, list[int]] = {}
    for r in rows:
        by_template.setdefault(r["template"], [0, 0])
        by_template[r["template"]][0] += 1
        by_template[r["template"]][1] += int(r["kept"])
    out.append(_table(["template", "generated", "kept", "pass rate"],
                      [[t, n, k, f"{k / max(1, n):.1%}"] for t, (n, k) in sorted(by_template.items())]))
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(total, min(examples, total), replace=False)) if total else []
    sample = [rows[i] for i in pick]
    out.append(_table(["chunk", "query", "template", "BM25 rank of source", "verdict"],
                      [[r["chunk_id"], r["text"], r["template"], "" if r["rank_bm25"] is None else r["rank_bm25"],
                        "kept" if r["kept"] else f"rejected: {r['reason']}"] for r in sample],
                      ["kept" if r["kept"] else "rejected" for r in sample]))
    return "\n".join(out)


def _missing(title: str, what: str) -> str:
    return f'<h2>{_esc(title)}</h2><p class="note">Skipped: {_esc(what)} does not exist yet.</p>'


# ---------------------------------------------------------------- stage


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section("report")
    ev = ctx.section("evaluate")
    measures = list(ev.get("measures", []))
    main = ev.get("significance_measure", measures[0] if measures else "nDCG@10")
    baseline = ev.get("baseline", "bm25")
    examples = int(cfg.get("examples", 10))
    sections: list[str] = []
    written: list[str] = []
    with ctx.publish_dir(ctx.path(layout.REPORT)) as folder:
        metrics_path = ctx.path(layout.METRICS)
        metrics = json.loads(ctx.use_input(metrics_path, "metrics").read_text()) if metrics_path.exists() else {}
        if metrics:  # systems in params order, then the fusions (metrics.json is sorted by name)
            order = [s for s in ev.get("systems", []) if s in metrics]
            metrics = {s: metrics[s] for s in order + sorted(set(metrics) - set(order))}
            sections.append(systems_section(metrics, measures, baseline, main, folder))
            sections.append(comparison_section(metrics, [list(p) for p in ev.get("compare") or []], main))
            written.append("systems")
            per_query: dict[str, dict[str, float]] = {}
            for r in ctx.read(ctx.path(layout.PER_QUERY), "per_query_metrics").to_pylist():
                if r["measure"] == main:
                    per_query.setdefault(r["system"], {})[r["query_id"]] = r["value"]
            queries = _queries(ctx)
            sections.append(wins_section(per_query, baseline, main, queries, folder, examples))
        else:
            sections.append(_missing("Systems", f"{layout.METRICS} (or it holds no judged runs)"))
        if ctx.path(layout.TRAIN_LOG).exists():
            sections.append(training_section(ctx.read(ctx.path(layout.TRAIN_LOG), "train_log").to_pylist(), folder))
            written.append("training")
        else:
            sections.append(_missing("Training", layout.TRAIN_LOG))
        ablation = ctx.path(cfg["ablation"]) if cfg.get("ablation") else None
        if ablation is not None and ablation.exists():
            sections.append(ablation_section(ctx.use_input(ablation, "ablation"), main, folder))
            written.append("ablation")
        if ctx.path(layout.FILTERED).exists():
            sections.append(filter_section(ctx.read(ctx.path(layout.FILTERED), "filtered_queries").to_pylist(),
                                           examples, ctx.seed))
            written.append("filter")
        else:
            sections.append(_missing("Generated queries and the filter", layout.FILTERED))
        title = cfg.get("title", "irforge report")
        page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
                f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1>"
                f"<p>Corpus: {_esc(ctx.section('corpus')['path'])}. Generated by the irforge report stage.</p>"
                + "\n".join(sections) + "</body></html>\n")
        (folder / "index.html").write_text(page, encoding="utf-8")
    log.info("report: %s/index.html (%s)", layout.REPORT, ", ".join(written) or "no sections with data")
    return {"report": f"{layout.REPORT}/index.html", "sections": written}


def _queries(ctx: StageContext) -> dict[str, str]:
    path = ctx.section("corpus").get("queries")
    if not path or not ctx.path(path).exists():
        return {}
    return load_queries(ctx.use_input(ctx.path(path), "queries"))
