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
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from irforge.config import Section
from irforge.contract import ARTIFACTS, SCHEMAS, Metrics, Output, Stage
from irforge.corpus import SPLITS, qrels_of, queries_of, splits_of
from irforge.engine import StageContext
from irforge.evaluation import (
    DEFAULT_MEASURES,
    PassageScorer,
    Searcher,
    SearchPlan,
    experiment_verdict,
    fusion_name,
    group_passages,
    open_scorer,
    score,
    significance,
)
from irforge.retrieval import Run, open_system

log = logging.getLogger(__name__)


class FeedbackConfig(Section):
    """A pseudo-relevance feedback system: ``system`` searched again with its queries moved towards the top
    documents of ``feedback`` (its own run, or any other: a fusion's top documents feed a dense leg well)."""

    system: str  # the system searched again: a faiss or impact system (rocchio) or a bm25 one (rm3, rocchio)
    method: Literal["rocchio", "rm3"] = "rocchio"
    feedback: str = "self"  # whose top documents: self, or a system, fusion or feedback system (faiss, impact)
    docs: int = Field(5, ge=1)  # feedback documents per query
    terms: int = Field(10, ge=1)  # bm25: expansion terms
    alpha: float = Field(1.0, ge=0)  # rocchio: weight of the query
    beta: float = Field(0.5, ge=0)  # rocchio: weight of the mean feedback vector
    query_weight: float = Field(0.5, ge=0, le=1)  # rm3: share of the original query in the expanded one


class RerankConfig(Section):
    """A reranked system: the top ``depth`` documents of ``system`` (any run) scored again by a reranker."""

    system: str  # the first-stage run: a system, feedback system or fusion
    kind: Literal["qlm", "cross-encoder", "bi-encoder"]  # query likelihood (causal LM) | cross-encoder | bi-encoder
    model: str  # pkg: name, folder or hub id
    depth: int = Field(10, ge=1)  # documents reranked per query
    max_passages: int = Field(2, ge=1)  # passages of a document scored (those sharing most words with the query)
    fusion: Literal["none", "rrf"] = "none"  # rrf: fuse the reranker's order with the first stage's
    max_length: int = Field(256, gt=0)  # passage tokens read
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # qlm: auto = bfloat16 where the CPU has native bf16


ZERO_SHOT_FUSION = "rrf(bm25+dense-zs+splade-zs)"  # the robust default: +0.03 to +0.13 nDCG@10 over BM25 on the
# collections tried, and never chosen on one collection's numbers (docs/judging.md)
# ... and with EmbeddingGemma as a fourth leg: +0.014 to +0.037 over it on six of seven collections, -0.003 on the
# seventh (docs/training.md, "Stronger models"). evaluate.default auto serves the first of these that is evaluated.
DEFAULT_FUSIONS = ("rrf(bm25+dense-zs+splade-zs+gemma-zs)", ZERO_SHOT_FUSION)


class EvaluateConfig(Section):
    # Systems to compare; each is an index of index.systems (artifacts/index/<system>).
    systems: list[str] = Field(["bm25", "bm25-d2q", "dense-zs", "dense", "splade-zs", "splade"], min_length=1)
    # Pseudo-relevance feedback systems: name -> FeedbackConfig. Usable in fusions and compare like systems.
    feedback: dict[str, FeedbackConfig] = Field(default_factory=lambda: {
        "bm25-rm3": FeedbackConfig(system="bm25", method="rm3", docs=10, terms=10),
        "dense-zs-prf": FeedbackConfig(system="dense-zs", feedback="rrf(bm25+dense-zs)", docs=3, beta=1.0),
        "dense-prf": FeedbackConfig(system="dense", feedback="rrf(bm25+dense)", docs=3, beta=1.0)})
    # Reranked systems: name -> RerankConfig. None by default (a QLM reranker costs seconds per query on CPU).
    rerank: dict[str, RerankConfig] = {}
    # Reciprocal-rank fusions (RRF) of systems or feedback systems listed above.
    fusions: list[list[str]] = [["bm25", "dense-zs"], ["bm25", "dense"], ["bm25", "splade-zs"], ["bm25", "splade"],
                                ["bm25", "dense-zs", "splade-zs"], ["bm25", "dense", "splade"],
                                ["bm25-rm3", "dense-zs-prf"], ["bm25-rm3", "dense-prf"]]
    # Paired tests of [system, reference]: each trained system against the same system zero-shot.
    compare: list[list[str]] = [["dense", "dense-zs"], ["splade", "splade-zs"],
                                ["rrf(bm25+dense)", "rrf(bm25+dense-zs)"],
                                ["rrf(bm25+dense+splade)", "rrf(bm25+dense-zs+splade-zs)"],
                                ["dense-prf", "dense-zs-prf"], ["dense-zs-prf", "dense-zs"],
                                ["rrf(bm25-rm3+dense-zs-prf)", "rrf(bm25+dense-zs+splade-zs)"]]
    rrf_k: int = Field(60, ge=0)  # RRF constant: score = sum 1 / (rrf_k + rank)
    measures: list[str] = Field(list(DEFAULT_MEASURES), min_length=1)  # ir-measures names
    depth: int = Field(1000, ge=1)  # documents per query in the run
    chunk_factor: int = Field(2, ge=1)  # chunk hits fetched per document kept, before max-aggregation
    baseline: str = "bm25"  # every other system is tested against this one
    significance_measure: str = "nDCG@10"  # per-query measure the paired tests compare
    resamples: int = Field(10000, ge=1)  # paired randomisation test resamples
    # The verdict (verdict.json, read by `irforge publish`): the robust default is served unless a system is better
    # with this confidence (over resampled queries and, with incomplete judgments, the unjudged documents).
    default: str | None = "auto"  # auto: the first of DEFAULT_FUSIONS evaluated, else the baseline
    confidence: float = Field(0.95, gt=0.5, lt=1)
    delta: float = Field(0.01, ge=0)  # nDCG@10 within which systems count as tied (the judging stopping rule)
    choose_on: Literal["auto", "dev", "all"] = "auto"  # auto: the dev split with >= 20 queries, else all judged queries
    unjudged: Literal["auto", "nonrelevant", "uncertain"] = "auto"  # auto: uncertain when the qrels record
    # judged-not-relevant documents (grade 0: pooled judging, as the judging page's), else not relevant (a test
    # collection listing its relevant documents)

    @model_validator(mode="after")
    def _names_are_known(self) -> EvaluateConfig:
        clash = sorted(set(self.feedback) & set(self.systems))
        if clash:
            raise ValueError(f"evaluate.feedback: '{clash[0]}' is already a system of evaluate.systems")
        clash = sorted(set(self.rerank) & {*self.systems, *self.feedback})
        if clash:
            raise ValueError(f"evaluate.rerank: '{clash[0]}' is already a system or feedback system")
        searched = [*self.systems, *self.feedback, *self.rerank]
        for members in self.fusions:
            missing = [m for m in members if m not in searched]
            if len(members) < 2 or missing:
                raise ValueError(f"evaluate.fusions: {members} must name 2+ systems of evaluate.systems or "
                                 "evaluate.feedback" + (f" ('{missing[0]}' is not one)" if missing else ""))
        runs = [*searched, *(fusion_name(m) for m in self.fusions)]
        for name, fb in self.feedback.items():
            if fb.system not in self.systems:
                raise ValueError(f"evaluate.feedback.{name}.system: '{fb.system}' is not in evaluate.systems")
            if fb.feedback not in ("self", *runs) or fb.feedback == name:
                raise ValueError(f"evaluate.feedback.{name}.feedback: '{fb.feedback}' must be self or another "
                                 f"run (known: {', '.join(r for r in runs if r != name)})")
        for name, rr in self.rerank.items():
            if rr.system not in runs or rr.system == name:
                raise ValueError(f"evaluate.rerank.{name}.system: '{rr.system}' must be another run "
                                 f"(known: {', '.join(r for r in runs if r != name)})")
        for pair in self.compare:
            if len(pair) != 2:
                raise ValueError(f"evaluate.compare: {pair} must be a pair [system, reference]")
            unknown = [name for name in pair if name not in runs]
            if unknown:
                raise ValueError(f"evaluate.compare: '{unknown[0]}' is not a system, feedback system or fusion "
                                 f"(known: {', '.join(runs)})")
        if self.default not in (None, "auto") and self.default not in runs:
            raise ValueError(f"evaluate.default: '{self.default}' is not a system, feedback system or fusion of this "
                             f"evaluate section (known: {', '.join(runs)}); name one, or null to serve the best estimate")
        if self.significance_measure not in self.measures:
            raise ValueError(f"evaluate.significance_measure '{self.significance_measure}' must be one of "
                             f"evaluate.measures ({', '.join(self.measures)})")
        self.derived_order()  # a cycle (a fusion feeding a feedback system it contains) is an error now
        return self

    def default_run(self) -> str | None:
        """The run served unless another is better with confidence (``default``; auto: the zero-shot fusion, with
        EmbeddingGemma when that leg is evaluated)."""
        if self.default != "auto":
            return self.default
        fused = {fusion_name(m) for m in self.fusions}
        return next((f for f in DEFAULT_FUSIONS if f in fused), self.baseline)

    def derived_order(self) -> list[str]:
        """Feedback systems, reranks and fusions in an order where every run is computed after the runs it reads."""
        needs: dict[str, list[str]] = {fusion_name(m): list(m) for m in self.fusions}
        for name, fb in self.feedback.items():
            needs[name] = [fb.system] + ([] if fb.feedback == "self" else [fb.feedback])
        for name, rr in self.rerank.items():
            needs[name] = [rr.system]
        done, order = set(self.systems), []
        while len(order) < len(needs):
            ready = [n for n in needs if n not in done and all(d in done for d in needs[n])]
            if not ready:
                stuck = sorted(n for n in needs if n not in done)
                raise ValueError(f"evaluate: feedback systems, reranks and fusions depend on each other in a cycle: "
                                 f"{', '.join(stuck)}")
            order += ready
            done.update(ready)
        return order


def evaluated_indexes(config: Any, variant: str | None) -> list[str]:
    """The index of every evaluated system, the trained models its queries are encoded (or reranked) with, and the
    chunks when a reranker reads passages."""
    systems = config.section("evaluate").systems
    specs = config.section("index").systems
    unknown = [s for s in systems if s not in specs]
    if unknown:
        raise ValueError(f"evaluate.systems: '{unknown[0]}' is not a system of index.systems "
                         f"(known: {', '.join(specs)})")
    rerankers = [rr.model for rr in config.section("evaluate").rerank.values()]
    models = [specs[s].model for s in systems if specs[s].model] + rerankers
    trained = [m for m in dict.fromkeys(models) if m.startswith(ARTIFACTS + "/")]
    expanded = ["expanded_chunks"] if any(specs[s].expansions for s in systems) else []  # synthetic set hygiene
    chunks = ["chunks"] if reads_passages(config) else []
    return [*(f"index/{s}" for s in systems), *trained, *chunks, *expanded]


def reads_passages(config: Any) -> bool:
    """Whether evaluation reads the chunks: a reranker scores passages, SPLADE feedback reads their vectors."""
    cfg, specs = config.section("evaluate"), config.section("index").systems
    return bool(cfg.rerank) or any(specs[fb.system].kind == "impact" for fb in cfg.feedback.values()
                                   if fb.system in specs)


def synthetic_inputs(config: Any, variant: str | None) -> list[str]:
    """The filter's verdicts when it holds out a synthetic test set (filter.holdout, by default only for a corpus
    without judgments): a judged corpus's evaluate does not wait for query generation."""
    holdout = config.section("filter").holdout
    wanted = holdout > 0 if holdout is not None else config.section("corpus").queries is None
    return ["filtered_queries"] if wanted else []


STAGE = Stage(
    name="evaluate",
    version="7",
    params=("seed", "bm25", "evaluate"),
    config=EvaluateConfig,
    inputs=("queries", "qrels", synthetic_inputs, evaluated_indexes),
    outputs=(
        Output("per_query", "per_query.parquet", "per_query_metrics", description="one row per system, query, measure"),
        Output("runs", "runs.parquet", "run", description="the ranked lists"),
        Output("trec_runs", "trec", "folder", description="one TREC run file per system"),
        Output("systems_table", "systems.csv", "csv", cache=False, description="one row per system (dvc plots)"),
        Metrics(),
        Output("verdict", "verdict.json", "json", cache=False, metric=True,
               description="which system to serve and how sure: estimates, intervals, P(better than the default)"),
        Output("synthetic", "synthetic.json", "json", cache=False, metric=True,
               description="every system on the held-out generated queries, and its agreement with the judgments"),
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
    measures, main, baseline = cfg.measures, cfg.significance_measure, cfg.baseline
    qrels = qrels_of(ctx.read("qrels"))
    query_table = ctx.read("queries")
    queries = {q: t for q, t in queries_of(query_table).items() if q in qrels}
    splits = {q: s for q, s in splits_of(query_table).items() if q in queries}
    metrics: dict[str, Any] = {}
    per_query_rows: list[dict] = []
    run_rows: list[dict] = []
    runs: dict[str, Run] = {}
    if not qrels:
        log.warning("the corpus has no queries/qrels (corpus.queries, corpus.qrels): evaluation skipped")
    else:
        log.info("evaluating %d judged queries (%s) on %s", len(queries),
                 ", ".join(f"{split} {sum(v == split for v in splits.values())}" for split in SPLITS),
                 ", ".join([*cfg.systems, *cfg.feedback]))
        runs, latencies, notes = search_all(ctx, cfg, queries)
        split_qids = {split: [q for q, s in splits.items() if s == split] for split in SPLITS}
        split_qids = {split: qids for split, qids in split_qids.items() if qids}
        per_query_main: dict[str, dict[str, float]] = {}
        for system, system_run in runs.items():
            means, per_query = score(system_run, qrels, measures)
            metrics[system] = {m: round(v, 4) for m, v in means.items()}
            metrics[system]["latency_mean_ms"] = round(float(latencies[system].mean() * 1000), 2)
            metrics[system]["latency_p95_ms"] = round(float(np.percentile(latencies[system], 95) * 1000), 2)
            metrics[system].update(notes.get(system, {}))
            per_query_main[system] = {r["query_id"]: r["value"] for r in per_query if r["measure"] == main}
            per_query_rows += [{"system": system, **row} for row in per_query]
            values = by_measure(per_query, measures)
            for split, qids in split_qids.items():  # means over each split's queries (a query with no hits counts 0)
                metrics[system][split] = {m: round(float(np.mean([v.get(q, 0.0) for q in qids])), 4)
                                          for m, v in values.items()}
            run_rows += [
                {"system": system, "query_id": qid, "doc_id": doc, "rank": rank, "score": s}
                for qid, hits in system_run.items() for rank, (doc, s) in enumerate(hits, start=1)
            ]
            log.info("%s: %s", system, "  ".join(f"{m} {v}" for m, v in metrics[system].items()
                                                 if not isinstance(v, dict)))
        pairs = [(s, baseline) for s in runs if s != baseline and baseline in runs] + [tuple(p) for p in cfg.compare]
        within = {split: {s: {q: v for q, v in values.items() if splits.get(q) == split}
                          for s, values in per_query_main.items()} for split in split_qids}
        for system, reference in pairs:
            test = significance(per_query_main, system, reference, ctx.seed, cfg.resamples)
            metrics[system].update({f"{k}_vs_{reference}": v for k, v in test.items()})
            for split, per_split in within.items():
                test = significance(per_split, system, reference, ctx.seed, cfg.resamples)
                metrics[system][split].update({f"{k}_vs_{reference}": v for k, v in test.items()})

    ctx.write("per_query", pa.Table.from_pylist(per_query_rows, SCHEMAS["per_query_metrics"]))
    ctx.write("runs", pa.Table.from_pylist(run_rows, SCHEMAS["run"]))
    # One folder artifact, replaced whole: a system dropped from evaluate.systems leaves no stale run behind.
    with ctx.publish("trec_runs") as trec:
        for system, system_run in runs.items():
            (trec / f"{system}.trec").write_text(trec_lines(system, system_run), encoding="utf-8")
    ctx.metrics(metrics)
    verdict = experiment_verdict(runs, qrels, splits, cfg.default_run(), cfg.delta, cfg.confidence, cfg.choose_on,
                                 cfg.unjudged, ctx.seed)
    log.info("verdict: serve %s (%s)", verdict["choice"], verdict["choice_reason"])
    ctx.write_json("verdict", verdict)
    ctx.write_text("systems_table", systems_csv(metrics, [*measures, "latency_mean_ms", "latency_p95_ms"]))
    synthetic = evaluate_synthetic(ctx, cfg, metrics)
    ctx.write_json("synthetic", synthetic)
    summary = {k: v for k, v in verdict.items() if k != "systems"}  # the per-system table is in verdict.json
    return {"systems": list(metrics), "metrics": metrics, "verdict": summary, "synthetic": synthetic}


def evaluate_synthetic(ctx: StageContext, cfg: EvaluateConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """Every system on the generated queries the filter held out (``filter.holdout``), each query's own document
    relevant: an evaluation without labels. With judgments too, how well it ranks the systems as they do."""
    if not ctx.has_input("filtered_queries"):  # a project evaluated before any query was generated
        return {"queries": 0}
    held = [r for r in ctx.read("filtered_queries").to_pylist() if r.get("holdout")]
    dropped = 0
    if held and ctx.has_input("expanded_chunks"):  # a held-out doc2query query is also in an index's expansions
        expansions = {" ".join(line.lower().split()) for text in ctx.read("expanded_chunks", ["expansion"])
                      .column("expansion").to_pylist() for line in text.split("\n") if line.strip()}
        kept = [r for r in held if " ".join(r["text"].lower().split()) not in expansions]
        dropped, held = len(held) - len(kept), kept
        if dropped:
            log.info("synthetic evaluation: %d held-out queries are doc2query expansions of an evaluated index "
                     "and are left out", dropped)
    if not held:
        return {"queries": 0, "left_out_in_expansions": dropped}
    queries = {r["query_id"]: r["text"] for r in held}
    qrels = {r["query_id"]: {r["doc_id"]: 1} for r in held}
    log.info("synthetic evaluation: %d held-out generated queries (their own document relevant)", len(queries))
    runs, _, _ = search_all(ctx, cfg, queries)
    systems = {name: {m: round(v, 4) for m, v in score(run, qrels, cfg.measures)[0].items()} for name, run in runs.items()}
    out: dict[str, Any] = {"queries": len(queries), "left_out_in_expansions": dropped, "systems": systems}
    if metrics:
        out["agreement"] = agreement_with_judgments(systems, metrics, cfg)
        log.info("synthetic vs judged ranking of the systems: %s", out["agreement"])
    return out


def agreement_with_judgments(synthetic: dict[str, dict], judged: dict[str, dict], cfg: EvaluateConfig) -> dict[str, Any]:
    """Kendall's tau between the systems' synthetic and judged scores (the test split's when there is one), and
    whether the synthetic scores get the sign of each compared pair (evaluate.compare, and each system vs the
    baseline) right."""
    from scipy.stats import kendalltau

    main = cfg.significance_measure
    real = {s: (v.get("test") or v)[main] for s, v in judged.items() if main in (v.get("test") or v)}
    names = [s for s in synthetic if s in real and main in synthetic[s]]
    tau = kendalltau([real[s] for s in names], [synthetic[s][main] for s in names]).statistic if len(names) > 1 else None
    pairs = [tuple(p) for p in cfg.compare] + [(s, cfg.baseline) for s in names if s != cfg.baseline]
    right = [np.sign(real[a] - real[b]) == np.sign(synthetic[a][main] - synthetic[b][main])
             for a, b in pairs if a in names and b in names]
    return {"measure": main, "systems": len(names),
            "kendall_tau": None if tau is None or np.isnan(tau) else round(float(tau), 4),
            "pairs": len(right), "pairs_same_sign": int(sum(right))}


def by_measure(per_query: list[dict], measures: list[str]) -> dict[str, dict[str, float]]:
    values: dict[str, dict[str, float]] = {m: {} for m in measures}
    for row in per_query:
        values.setdefault(row["measure"], {})[row["query_id"]] = row["value"]
    return {m: values[m] for m in measures}


def search_all(ctx: StageContext, cfg: EvaluateConfig, queries: dict[str, str]
               ) -> tuple[dict[str, Run], dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Document runs and per-query latencies of every system, feedback system, rerank and fusion, and notes (how
    many queries a system's query length cut)."""
    bm25 = ctx.section("bm25")
    notes: dict[str, dict[str, Any]] = {}

    def open_index(system: str):
        return open_system(ctx.input_path(f"index/{system}"), ctx, bm25.k1, bm25.b, threads=ctx.runtime.query_threads)

    def count_cut(system: str, retriever: Any) -> None:
        encoder = getattr(retriever, "encoder", None)
        if encoder is not None:
            cut = encoder.truncated(list(queries.values()))
            notes[system] = {"queries_truncated": cut}
            if cut:
                log.warning("%s: %d of %d queries are longer than its query_max_length (%d tokens) and were cut",
                            system, cut, len(queries), encoder.max_length)

    # Queries are encoded (and reranked) one at a time with runtime.query_threads, so latency is what one user waits.
    passages = group_passages(ctx.read("chunks", ["chunk_id", "doc_id", "passage_index", "title", "text",
                                                   "content_hash"]).to_pylist()) if reads_passages(ctx.config) else {}
    threads = ctx.runtime.query_threads  # like every query-time model

    def open_reranker(name: str, step: dict[str, Any]) -> PassageScorer:
        return open_scorer(step["scorer"], step["model"], step["max_length"], step["dtype"], ctx.model,
                           lambda model, length: ctx.dense_encoder(model, length, threads=threads), threads)

    searcher = Searcher(SearchPlan.from_config(cfg), open_index, open_reranker, passages)
    try:
        searched = searcher.search(queries, before=count_cut)
    finally:
        searcher.close()
    return searched.runs, searched.latencies, notes
