"""evaluate: run the collection's queries against each system and score the runs with ir-measures.

Systems (``evaluate.systems``) are BM25 indexes or neural indexes (faiss, Lucene impact) opened from their
folders; ``evaluate.fusions`` adds reciprocal-rank fusions of chosen systems. Queries are searched one at a
time so each system's latency (query encoding included) is measured: mean and p95 per system. Chunk hits are
aggregated to documents (max score per document), since judgments are per document. Every system is tested
against ``evaluate.baseline`` (BM25) on per-query ``significance_measure`` with a paired t-test and a paired
randomisation test, and each pair in ``evaluate.compare`` (a trained system and the same system zero-shot)
with the same tests.

Outputs: ``metrics.json`` (DVC metrics: one block per system), ``systems.csv`` (DVC plots), per-query values
as Parquet, the runs as Parquet and as TREC run files. A corpus without judgments is fine: the stage says so
and writes empty outputs, so the DAG still completes.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from irforge.config import Section
from irforge.contract import ARTIFACTS, SCHEMAS, Metrics, Output, Stage
from irforge.corpus import qrels_of, queries_of
from irforge.engine import StageContext
from irforge.evaluation import DEFAULT_MEASURES, score, search_timed, significance
from irforge.retrieval import Run, chunks_to_docs, open_system, reciprocal_rank_fusion

log = logging.getLogger(__name__)


def fusion_name(members: list[str]) -> str:
    return "rrf(" + "+".join(members) + ")"


class EvaluateConfig(Section):
    # Systems to compare; each is an index of index.systems (artifacts/index/<system>).
    systems: list[str] = Field(["bm25", "bm25-d2q", "dense-zs", "dense", "splade-zs", "splade"], min_length=1)
    # Reciprocal-rank fusions (RRF) of systems listed above.
    fusions: list[list[str]] = [["bm25", "dense-zs"], ["bm25", "dense"], ["bm25", "splade-zs"], ["bm25", "splade"],
                                ["bm25", "dense-zs", "splade-zs"], ["bm25", "dense", "splade"]]
    # Paired tests of [system, reference]: each trained system against the same system zero-shot.
    compare: list[list[str]] = [["dense", "dense-zs"], ["splade", "splade-zs"],
                                ["rrf(bm25+dense)", "rrf(bm25+dense-zs)"],
                                ["rrf(bm25+dense+splade)", "rrf(bm25+dense-zs+splade-zs)"]]
    rrf_k: int = Field(60, ge=0)  # RRF constant: score = sum 1 / (rrf_k + rank)
    measures: list[str] = Field(list(DEFAULT_MEASURES), min_length=1)  # ir-measures names
    depth: int = Field(1000, ge=1)  # documents per query in the run
    chunk_factor: int = Field(2, ge=1)  # chunk hits fetched per document kept, before max-aggregation
    baseline: str = "bm25"  # every other system is tested against this one
    significance_measure: str = "nDCG@10"  # per-query measure the paired tests compare
    resamples: int = Field(10000, ge=1)  # paired randomisation test resamples

    @model_validator(mode="after")
    def _names_are_known(self) -> EvaluateConfig:
        for members in self.fusions:
            missing = [m for m in members if m not in self.systems]
            if len(members) < 2 or missing:
                raise ValueError(f"evaluate.fusions: {members} must name 2+ systems listed in evaluate.systems"
                                 + (f" ('{missing[0]}' is not)" if missing else ""))
        runs = [*self.systems, *(fusion_name(m) for m in self.fusions)]
        for pair in self.compare:
            if len(pair) != 2:
                raise ValueError(f"evaluate.compare: {pair} must be a pair [system, reference]")
            unknown = [name for name in pair if name not in runs]
            if unknown:
                raise ValueError(f"evaluate.compare: '{unknown[0]}' is neither in evaluate.systems nor a fusion of "
                                 f"evaluate.fusions (known: {', '.join(runs)})")
        if self.significance_measure not in self.measures:
            raise ValueError(f"evaluate.significance_measure '{self.significance_measure}' must be one of "
                             f"evaluate.measures ({', '.join(self.measures)})")
        return self


def evaluated_indexes(config: Any, variant: str | None) -> list[str]:
    """The index of every evaluated system, and the trained model its queries are encoded with."""
    systems = config.section("evaluate").systems
    specs = config.section("index").systems
    unknown = [s for s in systems if s not in specs]
    if unknown:
        raise ValueError(f"evaluate.systems: '{unknown[0]}' is not a system of index.systems "
                         f"(known: {', '.join(specs)})")
    models = [specs[s].model for s in systems if specs[s].model and specs[s].model.startswith(ARTIFACTS + "/")]
    return [*(f"index/{s}" for s in systems), *models]


STAGE = Stage(
    name="evaluate",
    version="3",
    params=("seed", "bm25", "evaluate"),
    config=EvaluateConfig,
    inputs=("queries", "qrels", evaluated_indexes),
    outputs=(
        Output("per_query", "per_query.parquet", "per_query_metrics", description="one row per system, query, measure"),
        Output("runs", "runs.parquet", "run", description="the ranked lists"),
        Output("trec_runs", "trec", "folder", description="one TREC run file per system"),
        Output("systems_table", "systems.csv", "csv", cache=False, description="one row per system (dvc plots)"),
        Metrics(),
    ),
    plots=({"nDCG@10 per system": {"template": "bar_horizontal", "x": "nDCG@10",
                                   "y": {"artifacts/evaluate/systems.csv": "system"}}},
           {"Latency per system": {"template": "bar_horizontal", "x": "latency_mean_ms",
                                   "y": {"artifacts/evaluate/systems.csv": "system"}}}),
)


def systems_csv(metrics: dict[str, dict[str, Any]], columns: list[str]) -> str:
    lines = ["system," + ",".join(columns)]
    lines += [system + "," + ",".join(str(values.get(c, "")) for c in columns) for system, values in metrics.items()]
    return "\n".join(lines) + "\n"


def trec_lines(system: str, run: Run) -> str:
    return "".join(
        f"{qid} Q0 {doc} {rank} {score:.6f} {system}\n"
        for qid in sorted(run) for rank, (doc, score) in enumerate(run[qid], start=1)
    )


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: EvaluateConfig = ctx.section("evaluate")
    bm25 = ctx.section("bm25")
    measures, depth, main, baseline = cfg.measures, cfg.depth, cfg.significance_measure, cfg.baseline
    qrels = qrels_of(ctx.read("qrels"))
    queries = {q: t for q, t in queries_of(ctx.read("queries")).items() if q in qrels}
    metrics: dict[str, Any] = {}
    per_query_rows: list[dict] = []
    run_rows: list[dict] = []
    runs: dict[str, Run] = {}
    latencies: dict[str, np.ndarray] = {}
    if not qrels:
        log.warning("the corpus has no queries/qrels (corpus.queries, corpus.qrels): evaluation skipped")
    else:
        log.info("evaluating %d judged queries on %s", len(queries), ", ".join(cfg.systems))
        # Every index opens before any search: a missing one fails fast. Queries are encoded one at a time with
        # runtime.query_threads, so latency is what one user waits.
        retrievers = {s: open_system(ctx.input_path(f"index/{s}"), ctx, bm25.k1, bm25.b,
                                     threads=ctx.runtime.query_threads) for s in cfg.systems}
        for system, retriever in retrievers.items():
            # Fetch extra chunk hits so that `depth` documents remain after max-aggregation.
            chunk_hits, seconds = search_timed(retriever, queries, k=depth * cfg.chunk_factor)
            retriever.close()
            runs[system] = {qid: chunks_to_docs(hits, depth) for qid, hits in chunk_hits.items()}
            latencies[system] = np.array(seconds)
        for members in cfg.fusions:
            runs[fusion_name(members)] = reciprocal_rank_fusion([runs[m] for m in members], k=cfg.rrf_k, depth=depth)
            latencies[fusion_name(members)] = sum(latencies[m] for m in members)  # members run one after the other
        per_query_main: dict[str, dict[str, float]] = {}
        for system, system_run in runs.items():
            means, per_query = score(system_run, qrels, measures)
            metrics[system] = {m: round(v, 4) for m, v in means.items()}
            metrics[system]["latency_mean_ms"] = round(float(latencies[system].mean() * 1000), 2)
            metrics[system]["latency_p95_ms"] = round(float(np.percentile(latencies[system], 95) * 1000), 2)
            per_query_main[system] = {r["query_id"]: r["value"] for r in per_query if r["measure"] == main}
            per_query_rows += [{"system": system, **row} for row in per_query]
            run_rows += [
                {"system": system, "query_id": qid, "doc_id": doc, "rank": rank, "score": s}
                for qid, hits in system_run.items() for rank, (doc, s) in enumerate(hits, start=1)
            ]
            log.info("%s: %s", system, "  ".join(f"{m} {v}" for m, v in metrics[system].items()))
        if baseline in per_query_main:
            for system in runs:
                if system != baseline:
                    test = significance(per_query_main, system, baseline, ctx.seed, cfg.resamples)
                    metrics[system].update({f"{k}_vs_{baseline}": v for k, v in test.items()})
        # The comparison that matters for training: each trained system against the same system zero-shot.
        for system, reference in cfg.compare:
            test = significance(per_query_main, system, reference, ctx.seed, cfg.resamples)
            metrics[system].update({f"{k}_vs_{reference}": v for k, v in test.items()})

    ctx.write("per_query", pa.Table.from_pylist(per_query_rows, SCHEMAS["per_query_metrics"]))
    ctx.write("runs", pa.Table.from_pylist(run_rows, SCHEMAS["run"]))
    # One folder artifact, replaced whole: a system dropped from evaluate.systems leaves no stale run behind.
    with ctx.publish("trec_runs") as trec:
        for system, system_run in runs.items():
            (trec / f"{system}.trec").write_text(trec_lines(system, system_run), encoding="utf-8")
    ctx.metrics(metrics)
    ctx.write_text("systems_table", systems_csv(metrics, [*measures, "latency_mean_ms", "latency_p95_ms"]))
    return {"systems": list(metrics), "metrics": metrics}
