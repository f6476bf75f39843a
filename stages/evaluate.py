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

import contextlib
import json
import logging
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa

from irforge import indexes, layout
from irforge.judgments import JudgmentsError, load_qrels, load_queries
from irforge.retrieval import BM25Retriever, Run, chunks_to_docs, reciprocal_rank_fusion
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="evaluate", version="2", params=("seed", "corpus", "bm25", "evaluate"))

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP")


def judgments(ctx: StageContext) -> tuple[dict[str, str], dict[str, dict[str, int]]] | None:
    """The evaluation queries (only those with judgments) and qrels, or None when the corpus has none."""
    cfg = ctx.section("corpus")
    if not cfg.get("queries") or not cfg.get("qrels"):
        return None
    qpath, rpath = ctx.path(cfg["queries"]), ctx.path(cfg["qrels"])
    for key, path in (("queries", qpath), ("qrels", rpath)):
        if not path.exists():  # a typo must not pass for "no judgments"
            raise JudgmentsError(f"{path}: corpus.{key} not found (set corpus.queries and corpus.qrels to null "
                                 "for a corpus without judgments)")
    queries, qrels = load_queries(ctx.use_input(qpath, "queries")), load_qrels(ctx.use_input(rpath, "qrels"))
    return {q: t for q, t in queries.items() if q in qrels}, qrels


def score(run: Run, qrels: dict[str, dict[str, int]], measures: list[str]) -> tuple[dict[str, float], list[dict]]:
    """Mean and per-query values of ``measures`` (ir-measures names) for a document-level run."""
    import ir_measures

    parsed = [ir_measures.parse_measure(m) for m in measures]
    run_dict = {qid: {doc: score for doc, score in hits} for qid, hits in run.items()}
    per_query = [
        {"query_id": m.query_id, "measure": str(m.measure), "value": float(m.value)}
        for m in ir_measures.iter_calc(parsed, qrels, run_dict)
    ]
    means = {str(m): v for m, v in ir_measures.calc_aggregate(parsed, qrels, run_dict).items()}
    return {m: means[str(p)] for m, p in zip(measures, parsed, strict=True)}, per_query


def open_system(ctx: StageContext, system: str):
    """The retriever of one system; a system without its index is an error that says how to build it."""
    index = ctx.path(layout.index_dir(system))
    if not index.exists():
        raise FileNotFoundError(f"evaluate: system '{system}' (evaluate.systems) has no index at {index}; "
                                f"build it with `irforge run index {system}` or `dvc repro`")
    ctx.use_input(index, "index")
    if system in ("bm25", "bm25-d2q"):
        bm25 = ctx.section("bm25")
        return BM25Retriever(index, k1=float(bm25["k1"]), b=float(bm25["b"]))
    if (index / indexes.SYSTEM_FILE).exists():
        model = indexes.read_system(index)["model"]
        if indexes.model_name_in(ctx.root, model) != model:
            ctx.use_input(ctx.path(model), "model")
        return indexes.open_retriever(index, ctx.root, threads=int(ctx.section("evaluate").get("threads", 1)))
    raise ValueError(f"evaluate: unknown system '{system}' ({index} is neither a BM25 nor a neural index)")


def fusion_name(members: list[str]) -> str:
    return "rrf(" + "+".join(members) + ")"


@contextlib.contextmanager
def _quiet_bars():
    """No progress bars while queries are encoded one at a time (a bar per query is noise)."""
    previous = os.environ.get("IRFORGE_PROGRESS")
    os.environ["IRFORGE_PROGRESS"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("IRFORGE_PROGRESS", None)
        else:
            os.environ["IRFORGE_PROGRESS"] = previous


def search_timed(retriever, queries: dict[str, str], k: int) -> tuple[Run, list[float]]:
    """Search query by query (encoding included), so each query's latency is what a user would wait."""
    run: Run = {}
    latencies: list[float] = []
    with _quiet_bars():
        for qid, text in queries.items():
            started = time.perf_counter()
            run.update(retriever.search({qid: text}, k))
            latencies.append(time.perf_counter() - started)
    return run, latencies


def significance(per_query: dict[str, dict[str, float]], system: str, baseline: str, seed: int,
                 resamples: int) -> dict[str, float]:
    """Paired tests of ``system`` against ``baseline`` on per-query values: t-test and randomisation test."""
    from scipy import stats

    qids = sorted(per_query[baseline])
    a = np.array([per_query[system].get(q, 0.0) for q in qids])
    b = np.array([per_query[baseline][q] for q in qids])
    diff = a - b
    if not np.any(diff):
        return {"delta": 0.0, "p_ttest": 1.0, "p_randomisation": 1.0, "wins": 0, "losses": 0}
    t = stats.ttest_rel(a, b)
    perm = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                  n_resamples=resamples, rng=np.random.default_rng(seed))
    return {"delta": round(float(diff.mean()), 4), "p_ttest": float(f"{t.pvalue:.3g}"),
            "p_randomisation": float(f"{perm.pvalue:.3g}"),
            "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}


def compare_pairs(cfg: dict[str, Any], runs: list[str]) -> list[tuple[str, str]]:
    """``evaluate.compare``: (system, reference) pairs to test against each other; both must be among ``runs``."""
    pairs = []
    for pair in cfg.get("compare") or []:
        if len(pair) != 2:
            raise ValueError(f"evaluate.compare: {pair} must be a pair [system, reference]")
        unknown = [name for name in pair if name not in runs]
        if unknown:
            raise ValueError(f"evaluate.compare: '{unknown[0]}' is neither in evaluate.systems nor a fusion of "
                             f"evaluate.fusions (known: {', '.join(runs)})")
        pairs.append((str(pair[0]), str(pair[1])))
    return pairs


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
    cfg = ctx.section("evaluate")
    measures = list(cfg.get("measures", DEFAULT_MEASURES))
    depth = int(cfg.get("depth", 1000))
    main_measure = cfg.get("significance_measure", measures[0])
    baseline = cfg.get("baseline", "bm25")
    loaded = judgments(ctx)
    metrics: dict[str, Any] = {}
    per_query_rows: list[dict] = []
    run_rows: list[dict] = []
    runs: dict[str, Run] = {}
    latencies: dict[str, np.ndarray] = {}
    fusions = [list(f) for f in cfg.get("fusions") or []]
    for members in fusions:
        missing = [m for m in members if m not in cfg["systems"]]
        if len(members) < 2 or missing:
            raise ValueError(f"evaluate.fusions: {members} must name 2+ systems listed in evaluate.systems"
                             + (f" ('{missing[0]}' is not)" if missing else ""))
    pairs = compare_pairs(cfg, [*cfg["systems"], *(fusion_name(m) for m in fusions)])  # fail before any search
    if loaded is None:
        log.warning("the corpus has no queries/qrels (corpus.queries, corpus.qrels): evaluation skipped")
    else:
        queries, qrels = loaded
        log.info("evaluating %d judged queries on %s", len(queries), ", ".join(cfg["systems"]))
        retrievers = {system: open_system(ctx, system) for system in cfg["systems"]}  # fail before any search
        for system, retriever in retrievers.items():
            # Fetch extra chunk hits so that `depth` documents remain after max-aggregation.
            chunk_hits, seconds = search_timed(retriever, queries, k=depth * int(cfg.get("chunk_factor", 2)))
            retriever.close()
            runs[system] = {qid: chunks_to_docs(hits, depth) for qid, hits in chunk_hits.items()}
            latencies[system] = np.array(seconds)
        for members in fusions:
            runs[fusion_name(members)] = reciprocal_rank_fusion([runs[m] for m in members], k=int(cfg.get("rrf_k", 60)),
                                                                depth=depth)
            latencies[fusion_name(members)] = sum(latencies[m] for m in members)  # members run one after the other
        per_query_main: dict[str, dict[str, float]] = {}
        for system, system_run in runs.items():
            means, per_query = score(system_run, qrels, measures)
            metrics[system] = {m: round(v, 4) for m, v in means.items()}
            metrics[system]["latency_mean_ms"] = round(float(latencies[system].mean() * 1000), 2)
            metrics[system]["latency_p95_ms"] = round(float(np.percentile(latencies[system], 95) * 1000), 2)
            per_query_main[system] = {r["query_id"]: r["value"] for r in per_query if r["measure"] == main_measure}
            per_query_rows += [{"system": system, **row} for row in per_query]
            run_rows += [
                {"system": system, "query_id": qid, "doc_id": doc, "rank": rank, "score": s}
                for qid, hits in system_run.items() for rank, (doc, s) in enumerate(hits, start=1)
            ]
            log.info("%s: %s", system, "  ".join(f"{m} {v}" for m, v in metrics[system].items()))
        resamples = int(cfg.get("resamples", 10000))
        if baseline in per_query_main:
            for system in runs:
                if system != baseline:
                    test = significance(per_query_main, system, baseline, ctx.seed, resamples)
                    metrics[system].update({f"{k}_vs_{baseline}": v for k, v in test.items()})
        # The comparison that matters for training: each trained system against the same system zero-shot.
        for system, reference in pairs:
            test = significance(per_query_main, system, reference, ctx.seed, resamples)
            metrics[system].update({f"{k}_vs_{reference}": v for k, v in test.items()})

    out = ctx.path(layout.EVALUATION)
    ctx.write(ctx.path(layout.PER_QUERY), "per_query_metrics", pa.Table.from_pylist(per_query_rows, SCHEMAS["per_query_metrics"]))
    ctx.write(ctx.path(layout.RUNS), "run", pa.Table.from_pylist(run_rows, SCHEMAS["run"]))
    # One folder artifact, replaced whole: a system dropped from evaluate.systems leaves no stale run behind.
    with ctx.publish_dir(ctx.path(layout.TREC_RUNS)) as trec:
        for system, system_run in runs.items():
            (trec / f"{system}.trec").write_text(trec_lines(system, system_run), encoding="utf-8")
    ctx.write_text(ctx.path(layout.METRICS), json.dumps(metrics, indent=2, sort_keys=True) + "\n", provenance=False)
    columns = [*measures, "latency_mean_ms", "latency_p95_ms"]
    ctx.write_text(ctx.path(layout.SYSTEMS_TABLE), systems_csv(metrics, columns), provenance=False)
    log.info("wrote %s", out)
    return {"systems": list(metrics), "metrics": metrics}
