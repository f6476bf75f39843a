"""report: one static HTML page (plus PNG figures beside it) that tells what the pipeline achieved.

Sections, each skipped with a note when its artifact does not exist: the system table (every measure,
latency, paired significance against the baseline), trained vs zero-shot (``evaluate.compare``), bar charts of
the main measures, per-query wins and losses (with the biggest gains and losses spelled out), training
curves, the ablation table (``report.ablation``, written by benchmarks/ablation.py), each stage's cost at this
corpus's size read off the measured curve (``report.scale``, written by benchmarks/scale.py), filter pass rates and
example generated queries with their verdicts. Rendering lives in :mod:`irforge.reporting`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from irforge.config import Section
from irforge.contract import Output, Stage
from irforge.corpus import queries_of
from irforge.engine import StageContext
from irforge.evaluation import ablation_corpus, corpus_identity, same_corpus
from irforge.reporting import html, sections

log = logging.getLogger(__name__)


class ReportConfig(Section):
    title: str = "irforge report"  # page title
    examples: int = Field(10, ge=0)  # example queries shown (generated queries, biggest gains/losses)
    # benchmarks/ablation.py writes it (kept in git); null: no ablation section
    ablation: str | None = "benchmarks/results/ablation.json"
    # benchmarks/scale.py writes it (kept in git): each stage's cost curve, read off at this corpus's size
    scale: str | None = "benchmarks/results/scale.json"


def train_logs(config: Any, variant: str | None) -> list[str]:
    return [f"train_log/{m}" for m in config.section("train").models]


def ablation_file(config: Any) -> list[str]:
    return ["${report.ablation}"] if config.section("report").ablation else []


def scale_file(config: Any) -> list[str]:
    return ["${report.scale}"] if config.section("report").scale else []


STAGE = Stage(
    name="report",
    version="7",
    params=("seed", "corpus", "evaluate", "report"),
    config=ReportConfig,
    inputs=("chunks", "evaluate.metrics", "verdict", "synthetic", "per_query", "queries", "filtered_queries", train_logs),
    raw=(ablation_file, scale_file),
    outputs=(Output("report", "", "folder", description="index.html and its figures"),),
)


def corpus_line(corpus_params: Any, identity: dict[str, Any] | None, queries: list[dict]) -> str:
    """Which corpus and which judgments the page describes."""
    line = f"Corpus: {html.esc(corpus_params.path)}"
    if identity:
        line += f" (sha256 of its files {html.esc(identity['sha256'][:12])})"
    judged = [q for q in queries if q.get("split") in ("dev", "test")]
    if judged and corpus_params.qrels:
        dev = sum(q["split"] == "dev" for q in judged)
        line += (f". Judgments: {html.esc(corpus_params.qrels)}, {len(judged)} judged queries ({dev} dev, "
                 f"{len(judged) - dev} test).")
    else:
        line += ". No judgments: no system is evaluated."
    return line


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: ReportConfig = ctx.section("report")
    ev = ctx.section("evaluate")
    measures, main, baseline = ev.measures, ev.significance_measure, ev.baseline
    parts: list[str] = []
    written: list[str] = []
    with ctx.publish("report") as folder:
        metrics = ctx.read_json("evaluate.metrics") if ctx.has_input("evaluate.metrics") else {}
        if ctx.has_input("verdict"):
            parts.append(sections.verdict(ctx.read_json("verdict"), folder))
            written.append("verdict")
        if metrics:  # systems in params order, then the fusions (metrics.json is sorted by name)
            order = [s for s in ev.systems if s in metrics]
            metrics = {s: metrics[s] for s in order + sorted(set(metrics) - set(order))}
            parts.append(sections.systems(metrics, measures, baseline, main, folder))
            parts.append(sections.splits(metrics, ev.compare, baseline, main))
            parts.append(sections.comparison(metrics, ev.compare, main))
            written.append("systems")
            per_query: dict[str, dict[str, float]] = {}
            for r in ctx.read("per_query").to_pylist():
                if r["measure"] == main:
                    per_query.setdefault(r["system"], {})[r["query_id"]] = r["value"]
            queries = queries_of(ctx.read("queries"))
            parts.append(sections.wins(per_query, baseline, main, queries, folder, cfg.examples))
        elif ctx.has_input("evaluate.metrics"):
            parts.append(html.note("Systems", "No system was evaluated: this corpus has no judged queries "
                                   "(corpus.queries / corpus.qrels are null, or no judgment names a known query)."))
        else:
            parts.append(html.missing("Systems", ctx.input("evaluate.metrics").path))
        synthetic = ctx.read_json("synthetic") if ctx.has_input("synthetic") else {}
        if synthetic.get("systems"):
            parts.append(sections.synthetic(synthetic, metrics, ev.compare, main))
            written.append("synthetic")
        logs = [i.name for i in ctx.node.inputs if i.name.startswith("train_log/") and ctx.has_input(i.name)]
        if logs:
            parts.append(sections.training([r for name in logs for r in ctx.read(name).to_pylist()], folder))
            written.append("training")
        else:
            parts.append(html.missing("Training", "a training log"))
        corpus = corpus_identity(ctx.input_path("chunks")) if ctx.has_input("chunks") else None
        ablation = ctx.path(cfg.ablation) if cfg.ablation else None
        if ablation is not None and ablation.exists():
            recorded = ablation_corpus(ctx.use_input(ablation, "ablation"))
            if same_corpus(recorded, corpus):
                parts.append(sections.ablation(ablation, main, folder))
                written.append("ablation")
            else:  # numbers measured on another corpus are not shown as if they were this one's
                where = f"on {recorded.get('path')} (corpus sha256 {str(recorded.get('sha256'))[:12]})" \
                    if isinstance(recorded, dict) else "on a corpus it does not name"
                parts.append(html.note("Ablation", f"{cfg.ablation} was measured {where}, not on this corpus: not "
                                       "shown. Run benchmarks/ablation.py --fresh here to measure this one."))
        scale = ctx.path(cfg.scale) if cfg.scale else None
        if scale is not None and scale.exists() and ctx.has_input("chunks"):
            parts.append(sections.scale(ctx.use_input(scale, "scale"), ctx.count("chunks"), folder))
            written.append("scale")
        if ctx.has_input("filtered_queries"):
            parts.append(sections.generated_queries(ctx.read("filtered_queries").to_pylist(), cfg.examples, ctx.seed))
            written.append("filter")
        else:
            parts.append(html.missing("Generated queries and the filter", ctx.input("filtered_queries").path))
        judged = ctx.read("queries").to_pylist() if ctx.has_input("queries") else []
        intro = corpus_line(ctx.section("corpus"), corpus, judged) + \
            " Every number on this page comes from this corpus unless its section says otherwise."
        (folder / "index.html").write_text(html.page(cfg.title, intro, parts), encoding="utf-8")
    where = ctx.output("report").path
    log.info("report: %s/index.html (%s)", where, ", ".join(written) or "no sections with data")
    return {"report": f"{where}/index.html", "sections": written}
