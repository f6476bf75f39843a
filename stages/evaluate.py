"""evaluate: run the collection's queries against each system and score the runs with ir-measures.

Chunk hits are aggregated to documents (max score per document), since judgments are per document.
Outputs: ``metrics.json`` (DVC metrics: one block per system), per-query values as Parquet, the runs as
Parquet and as TREC run files. A corpus without judgments is fine: the stage says so and writes empty
outputs, so the DAG still completes.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from irforge import layout
from irforge.retrieval import BM25Retriever, Run, chunks_to_docs
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="evaluate", version="1", params=("corpus", "bm25", "evaluate"))

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP")


class JudgmentsError(ValueError):
    pass


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                qid, text = str(obj["_id"]), obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise JudgmentsError(f"{path}:{line_no}: expected a JSON object with '_id' and 'text' ({e})") from e
            if not isinstance(text, str) or not text.strip():
                raise JudgmentsError(f"{path}:{line_no}: field 'text' must be a non-empty string, found {text!r}")
            queries[qid] = text
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels: TSV ``query-id  corpus-id  score`` with a header line."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (line_no == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise JudgmentsError(f"{path}:{line_no}: expected 3 tab-separated fields, found {len(row)}")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError as e:
                raise JudgmentsError(f"{path}:{line_no}: field 'score' is not an integer: {row[2]!r}") from e
    return qrels


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
    bm25 = ctx.section("bm25")
    if system in ("bm25", "bm25-d2q"):
        index = ctx.use_input(ctx.path(layout.index_dir(system)), "index")
        return BM25Retriever(index, k1=float(bm25["k1"]), b=float(bm25["b"]))
    raise ValueError(f"evaluate: unknown system '{system}'")


def trec_lines(system: str, run: Run) -> str:
    return "".join(
        f"{qid} Q0 {doc} {rank} {score:.6f} {system}\n"
        for qid in sorted(run) for rank, (doc, score) in enumerate(run[qid], start=1)
    )


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section("evaluate")
    measures = list(cfg.get("measures", DEFAULT_MEASURES))
    depth = int(cfg.get("depth", 1000))
    loaded = judgments(ctx)
    metrics: dict[str, Any] = {}
    per_query_rows: list[dict] = []
    run_rows: list[dict] = []
    runs: dict[str, Run] = {}
    if loaded is None:
        log.warning("the corpus has no queries/qrels (corpus.queries, corpus.qrels): evaluation skipped")
    else:
        queries, qrels = loaded
        log.info("evaluating %d judged queries on %s", len(queries), ", ".join(cfg["systems"]))
        for system in cfg["systems"]:
            retriever = open_system(ctx, system)
            # Fetch extra chunk hits so that `depth` documents remain after max-aggregation.
            chunk_hits = retriever.search(queries, k=depth * int(cfg.get("chunk_factor", 2)))
            runs[system] = {qid: chunks_to_docs(hits, depth) for qid, hits in chunk_hits.items()}
            means, per_query = score(runs[system], qrels, measures)
            metrics[system] = {m: round(v, 4) for m, v in means.items()}
            per_query_rows += [{"system": system, **row} for row in per_query]
            run_rows += [
                {"system": system, "query_id": qid, "doc_id": doc, "rank": rank, "score": s}
                for qid, hits in runs[system].items() for rank, (doc, s) in enumerate(hits, start=1)
            ]
            log.info("%s: %s", system, "  ".join(f"{m} {v:.4f}" for m, v in means.items()))

    out = ctx.path(layout.EVALUATION)
    ctx.write(ctx.path(layout.PER_QUERY), "per_query_metrics", pa.Table.from_pylist(per_query_rows, SCHEMAS["per_query_metrics"]))
    ctx.write(ctx.path(layout.RUNS), "run", pa.Table.from_pylist(run_rows, SCHEMAS["run"]))
    # One folder artifact, replaced whole: a system dropped from evaluate.systems leaves no stale run behind.
    with ctx.publish_dir(ctx.path(layout.TREC_RUNS)) as trec:
        for system, system_run in runs.items():
            (trec / f"{system}.trec").write_text(trec_lines(system, system_run), encoding="utf-8")
    ctx.write_text(ctx.path(layout.METRICS), json.dumps(metrics, indent=2, sort_keys=True) + "\n", provenance=False)
    log.info("wrote %s", out)
    return {"systems": list(metrics), "metrics": metrics}
