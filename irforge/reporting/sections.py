"""The report's sections: each takes plain data (metrics, per-query values, log rows, ...) and returns HTML,
saving its figures into the report folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from irforge.evaluation.ablation import ablation_rows
from irforge.reporting import figures
from irforge.reporting.html import esc, image, table


def systems(metrics: dict[str, dict], measures: list[str], baseline: str, main: str, folder: Path) -> str:
    best = max(metrics, key=lambda s: metrics[s].get(main, -1))
    header = ["system", *measures, "latency mean ms", "latency p95 ms", f"Δ {main} vs {baseline}", "p (t-test)",
              "p (randomisation)"]
    rows, classes = [], []
    for system, m in metrics.items():
        rows.append([system, *(f"{m.get(x, float('nan')):.4f}" for x in measures), m.get("latency_mean_ms", ""),
                     m.get("latency_p95_ms", ""), m.get(f"delta_vs_{baseline}", ""), m.get(f"p_ttest_vs_{baseline}", ""),
                     m.get(f"p_randomisation_vs_{baseline}", "")])
        classes.append("best" if system == best else "")
    out = [f"<h2>Systems</h2><p>Best by {esc(main)}: <b>{esc(best)}</b>. Significance: paired tests of per-query "
           f"{esc(main)} against {esc(baseline)}.</p>", table(header, rows, classes)]
    shown = [x for x in measures if x in (main, "RR@10", "R@100", "AP")] or measures[:1]
    out.append(image(figures.save(figures.measure_bars(metrics, shown, baseline), folder, "measures.png")))
    out.append(image(figures.save(figures.latency_bars(metrics), folder, "latency.png")))
    return "\n".join(out)


def verdict(result: dict[str, Any], folder: Path) -> str:
    """Which system `irforge publish` serves and how sure that is: the default unless another is better with the
    configured confidence, each system's estimate with its interval and P(better than the default)."""
    rows_in = result.get("systems") or {}
    choice, default = result.get("choice"), result.get("default")
    head = (f"<h2>Which system to serve</h2><p><b>{esc(choice or 'none')}</b>: {esc(result.get('choice_reason', ''))}."
            "</p>")
    if not rows_in:
        return head + "<p>" + esc("Judge a few queries in the judging page (`irforge judge serve`, README: "
                                  "'Which system is best on my corpus?') for a verdict on this corpus.") + "</p>"
    split = {"dev": "the dev split", "all": "every judged query (the dev split is too small to choose on)"}
    uncertain = result.get("unjudged") == "uncertain"
    text = (f"Chosen on {split.get(result.get('split'), 'the judged queries')} ({result['queries']} queries, "
            f"{result['judgments']} judgments). P(better than the default) is 1 - a one-sided paired randomisation "
            "p-value on these queries" + (", averaged over the unjudged documents' possible grades" if uncertain
                                          else "") + "; the interval resamples the queries (bootstrap)"
            + ("; P(best) is over the unjudged documents' grades" if uncertain else "")
            + f". It assumes {result.get('assumes', '')}. {result.get('message', '')}.")
    ranked = sorted(rows_in.items(), key=lambda kv: -kv[1]["estimate"])
    rows = [[name, f"{r['estimate']:.4f}", f"{r['low']:.4f} – {r['high']:.4f}",
             f"{r['p_better_than_default']:.2f}" if "p_better_than_default" in r else "(default)",
             *([f"{r['p_best']:.2f}"] if uncertain else [])] for name, r in ranked]
    classes = ["best" if name == choice else "" for name, _ in ranked]
    figure = image(figures.save(figures.verdict_intervals(rows_in, default, choice), folder, "verdict.png"))
    return head + f"<p>{esc(text)}</p>" + table(["system", "nDCG@10", "95 % interval", "P(better than default)",
                                                 *(["P(best)"] if uncertain else [])], rows, classes) + figure


def splits(metrics: dict[str, dict], pairs: list[list[str]], baseline: str, main: str) -> str:
    """Each system on the dev split (what tuning may look at) and the test split (the number to quote), with the
    paired tests on the test queries alone."""
    if not any("test" in m for m in metrics.values()):
        return ""
    references = {system: reference for system, reference in pairs}
    rows = []
    for system, m in metrics.items():
        dev, test = m.get("dev", {}), m.get("test", {})
        reference = references.get(system)
        rows.append([system, f"{dev.get(main, float('nan')):.4f}", f"{test.get(main, float('nan')):.4f}",
                     f"{test.get(f'delta_vs_{baseline}', 0.0):+.4f}", test.get(f"p_randomisation_vs_{baseline}", ""),
                     f"{reference}: {test.get(f'delta_vs_{reference}', 0.0):+.4f}" if reference else "",
                     test.get(f"p_randomisation_vs_{reference}", "") if reference else ""])
    return ("<h2>Dev and test splits</h2><p>The judged queries are split once by seed (judgments.dev_queries): "
            "settings are tuned on dev only; the test split is the number to quote. Paired randomisation tests on "
            "the test queries alone.</p>"
            + table(["system", f"dev {main}", f"test {main}", f"test Δ vs {baseline}", "p", "test Δ vs reference",
                     "p"], rows))


def synthetic(result: dict[str, Any], judged: dict[str, dict], pairs: list[list[str]], main: str) -> str:
    """Every system on the held-out generated queries (not human judgments), next to the judged score when there
    is one, with how far the synthetic ranking agrees with the judged one."""
    systems = result.get("systems") or {}
    if not systems:
        return ""
    rows = []
    for system, m in systems.items():
        real = judged.get(system, {})
        real = real.get("test") or real
        rows.append([system, f"{m.get(main, float('nan')):.4f}",
                     f"{real[main]:.4f}" if main in real else "—"])
    trained = [f"{a} vs {b}: {systems[a][main] - systems[b][main]:+.4f}" for a, b in pairs
               if a in systems and b in systems and main in systems[a] and main in systems[b]]
    agreement = result.get("agreement")
    if agreement:
        tau = agreement.get("kendall_tau")
        trust = (f" Against the judgments: Kendall's tau {tau if tau is not None else 'undefined (ties)'} over "
                 f"{agreement['systems']} systems; {agreement['pairs_same_sign']} of {agreement['pairs']} compared "
                 "pairs get the judged sign.")
    else:
        trust = (" There are no judgments to check it against. It is not a ranking of the systems (on Cranfield it "
                 "ranked 17 systems almost unlike human judgments did: Kendall's tau 0.03; docs/filtermine.md), and "
                 "nothing is chosen by it: without judgments `irforge publish` serves the default "
                 "(evaluate.default). For a verdict on this corpus, judge in the judging page (`irforge judge serve`).")
    return ("<h2>Synthetic evaluation (generated queries, not human judgments)</h2><p>" + esc(
        f"{result['queries']} generated queries held out by the filter (filter.holdout), never trained on; each "
        f"query's own document counts as its one relevant document. It favours the retrievers the round-trip "
        f"filter used to keep the queries.{trust}") + "</p>"
            + (f"<p>{esc('; '.join(trained))}.</p>" if trained else "")
            + table(["system", f"synthetic {main}", f"judged {main}"], rows))


def comparison(metrics: dict[str, dict], pairs: list[list[str]], main: str) -> str:
    """Each trained system against the same system zero-shot (``evaluate.compare``): the comparison that says
    whether training on the generated queries paid off."""
    rows = [[system, reference, f"{metrics[system][main]:.4f}", f"{metrics[reference][main]:.4f}",
             f"{metrics[system].get(f'delta_vs_{reference}', 0.0):+.4f}",
             f"{metrics[system].get(f'wins_vs_{reference}', '')} / {metrics[system].get(f'losses_vs_{reference}', '')}",
             metrics[system].get(f"p_randomisation_vs_{reference}", "")]
            for system, reference in pairs if system in metrics and reference in metrics]
    if not rows:
        return ""
    return ("<h2>Trained vs zero-shot</h2><p>Paired tests on per-query " + esc(main) + " (evaluate.compare).</p>"
            + table(["system", "reference", main, f"reference {main}", "Δ", "queries won / lost", "p (randomisation)"],
                    rows))


def wins(per_query: dict[str, dict[str, float]], baseline: str, main: str, queries: dict[str, str],
         folder: Path, examples: int) -> str:
    if baseline not in per_query:
        return f'<h2>Per-query wins and losses</h2><p class="note">No {esc(baseline)} run to compare with.</p>'
    qids = sorted(per_query[baseline])
    base = np.array([per_query[baseline][q] for q in qids])
    others = [s for s in per_query if s != baseline]
    rows, diffs = [], {}
    for system in others:
        diff = np.array([per_query[system].get(q, 0.0) for q in qids]) - base
        diffs[system] = diff
        rows.append([system, int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum()),
                     f"{diff.mean():+.4f}"])
    fig = figures.sorted_differences(diffs, f"{main} − {baseline}")
    out = [f"<h2>Per-query wins and losses against {esc(baseline)} ({esc(main)})</h2>",
           table(["system", "wins", "ties", "losses", "mean Δ"], rows), image(figures.save(fig, folder, "wins_losses.png"))]
    if others:
        best = max(others, key=lambda s: np.mean([per_query[s].get(q, 0.0) for q in qids]))
        ranked = sorted((per_query[best].get(q, 0.0) - per_query[baseline][q], q) for q in qids)
        pick = [d for d in ranked[::-1][:examples] if d[0] > 0] + [d for d in ranked[:examples] if d[0] < 0]
        out.append(f"<h3>Biggest gains and losses of {esc(best)}</h3>")
        out.append(table(["query", "text", baseline, best, "Δ"],
                         [[q, queries.get(q, ""), f"{per_query[baseline][q]:.3f}", f"{per_query[best].get(q, 0.0):.3f}",
                           f"{d:+.3f}"] for d, q in pick]))
    return "\n".join(out)


def training(rows: list[dict], folder: Path) -> str:
    models = sorted({r["model"] for r in rows})
    summary = []
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        summary.append([model, len(mine), f"{mine[0]['loss']:.4f}", f"{mine[-1]['loss']:.4f}",
                        f"{mine[-1]['nnz_query']:.1f}" if mine[-1].get("nnz_query") is not None else "",
                        f"{mine[-1]['nnz_doc']:.1f}" if mine[-1].get("nnz_doc") is not None else "",
                        f"{mine[-1]['flops']:.2f}" if mine[-1].get("flops") is not None else ""])
    out = ["<h2>Training</h2>",
           table(["model", "steps", "first loss", "last loss", "non-zeros / query", "non-zeros / passage", "FLOPS"],
                 summary),
           image(figures.save(figures.training_curves(rows), folder, "training.png"))]
    return "\n".join(out)


def ablation(path: Path, main: str, folder: Path) -> str:
    """One row per ablation run: its overrides, training examples and the systems the overrides changed;
    the systems no run changed (BM25, the zero-shot models) are the reference lines of the figure."""
    rows = ablation_rows(path)
    if not rows:
        return ""
    names = list(dict.fromkeys(s for r in rows for s in r.get("metrics", {})))
    value = {(r["name"], s): r["metrics"][s][main] for r in rows for s in r.get("metrics", {}) if main in r["metrics"][s]}
    varying = [s for s in names if len({round(value[(r["name"], s)], 6) for r in rows if (r["name"], s) in value}) > 1]
    fixed = {s: value[(rows[0]["name"], s)] for s in names if s not in varying and (rows[0]["name"], s) in value}
    body = [[r["name"], "; ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items()) or "(params.yaml)",
             r.get("examples", ""), *(f"{value[(r['name'], s)]:.4f}" if (r["name"], s) in value else "" for s in varying),
             r.get("seconds", "")] for r in rows]
    unchanged = ("Unchanged in every run: " + ", ".join(f"{esc(s)} {v:.4f}" for s, v in fixed.items()) + ".") if fixed else ""
    out = [f"<h2>Ablation ({esc(main)})</h2><p>From {esc(path.name)} (benchmarks/ablation.py): each run re-executes "
           f"the stages its params overrides touch, and everything downstream of them. {unchanged}</p>",
           table(["run", "overrides", "training examples", *varying, "seconds"], body)]
    if varying:
        references = {s: v for s, v in fixed.items() if s != "bm25-d2q"}
        fig = figures.ablation_bars(rows, varying, value, references, main)
        out.append(image(figures.save(fig, folder, "ablation.png")))
    return "\n".join(out)


def generated_queries(rows: list[dict[str, Any]], examples: int, seed: int) -> str:
    total = len(rows)
    kept = sum(r["kept"] for r in rows)
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            reasons[r["reason"] or "unspecified"] = reasons.get(r["reason"] or "unspecified", 0) + 1
    out = [f"<h2>Generated queries and the filter</h2><p>{kept} of {total} generated queries kept "
           f"({kept / max(1, total):.1%}).</p>",
           table(["rejected because", "queries", "share"],
                 [[k, v, f"{v / max(1, total):.1%}"] for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])])]
    by_template: dict[str, list[int]] = {}
    for r in rows:
        by_template.setdefault(r["template"], [0, 0])
        by_template[r["template"]][0] += 1
        by_template[r["template"]][1] += int(r["kept"])
    out.append(table(["template", "generated", "kept", "pass rate"],
                     [[t, n, k, f"{k / max(1, n):.1%}"] for t, (n, k) in sorted(by_template.items())]))
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(total, min(examples, total), replace=False)) if total else []
    sample = [rows[i] for i in pick]
    out.append(table(["chunk", "query", "template", "BM25 rank of source", "verdict"],
                     [[r["chunk_id"], r["text"], r["template"], "" if r["rank_bm25"] is None else r["rank_bm25"],
                       "kept" if r["kept"] else f"rejected: {r['reason']}"] for r in sample],
                     ["kept" if r["kept"] else "rejected" for r in sample]))
    return "\n".join(out)


def scale(path: Path, passages: int, folder: Path) -> str:
    """What each stage costs at this corpus's size, read off the curve benchmarks/scale.py measured (10^4-10^6
    passages on 2 cores), with this corpus marked on the plot."""
    import json

    results = json.loads(path.read_text(encoding="utf-8"))
    sizes = list(results.get("sizes", {}).values())
    if not sizes:
        return ""
    rows = []
    for stage in figures.stage_order(sizes):
        pts = [(r["passages"], r["stages"][stage]["wall_s"]) for r in sizes
               if stage in r["stages"] and r["stages"][stage]["wall_s"] > 0]
        rss = max((r["stages"][stage].get("peak_rss_mb", 0) for r in sizes if stage in r["stages"]), default=0)
        measured = ", ".join(f"{r['passages']:,}: {r['stages'][stage]['wall_s']:,.0f} s"
                             + (" (extrapolated)" if "extrapolated" in r["stages"][stage] else "")
                             for r in sizes if stage in r["stages"])
        rows.append([stage, f"{figures.cost_at(pts, passages):,.0f} s", measured, f"{rss / 1024:.1f} GB" if rss else ""])
    searched = list(sizes[0].get("search", {}))
    fig = figures.scale_curve(sizes, searched, mark=passages)
    return "\n".join([
        f"<h2>Cost at scale</h2><p>This corpus has {passages:,} passages. Each stage's cost here is read off the curve "
        f"measured by benchmarks/scale.py ({esc(path.name)}; default params, 2 cores) between the two nearest "
        "measured sizes (beyond them, the nearest segment's growth). The measured rows are real text (Cranfield "
        "sentences recombined); encoding above 10^5 passages is extrapolated from the measured rate.</p>",
        table(["stage", "estimated wall time here", "measured (passages: wall)", "largest peak RSS"], rows),
        image(figures.save(fig, folder, "scale.png"))])
