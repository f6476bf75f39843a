"""filter: give every generated query a verdict (kept, or the first rule that rejected it).

Rules, in order (the first that fails is the row's ``reason``; later rules are not applied to it):

1. ``cleaning``: the generation stage already dropped it (its own reason follows the colon).
2. ``unknown_chunk`` / ``empty_text``: the row cannot be checked (source chunk not in the chunks artifact,
   or no text).
3. ``leakage``: the query duplicates or nearly duplicates an evaluation query of the collection
   (``corpus.queries``): same normalised words, word-set Jaccard >= ``leakage.jaccard``, or dense
   cosine >= ``leakage.cosine`` (:mod:`irforge.corpus.leakage`, the rule doc2query and the audit apply too).
   Training on the test queries would inflate every figure.
4. ``round_trip`` (Promptagator): the source chunk is not within the top ``filter.k`` of the retrievers in
   ``filter.retrievers`` (BM25 over the Lucene index, dense = the shared encoder through faiss), combined by
   ``filter.combine`` (any / all).
5. ``too_easy``: the source chunk is rank 1 under ``filter.too_easy.retriever`` with a relative score gap
   (s1 - s2) / s1 >= ``filter.too_easy.margin`` over the best chunk of another document: the query (nearly)
   copies its chunk and teaches nothing. On a small corpus round-trip alone keeps almost everything (see docs/filtermine.md).
6. ``low_score`` (InPars): outside the top ``filter.keep_fraction`` by the generator's mean log-prob, ranked
   within each ``filter.fraction_per`` group (template, generator or all).

A seeded share of the kept queries (``filter.holdout``; by default a fifth when the corpus has no judgments) is
held out (``holdout`` column): never trained on, it is the synthetic test set the evaluate stage scores every
system on, each query's own document counting as its one relevant document.

Every input row is in the output with the source chunk's rank under each retriever (null: not within
``filter.depth``, or that retriever not used). Pass rates per reason, generator and template go to DVC metrics.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from irforge.config import Section
from irforge.contract import SCHEMAS, Metrics, Output, Stage
from irforge.corpus import leak_reasons, queries_of, split_queries
from irforge.engine import StageContext
from irforge.retrieval import DenseRetriever, Hits, bm25_search, doc_id_of, rank_of

log = logging.getLogger(__name__)

SOURCES = {"synthesize": "synthetic_queries", "doc2query": "doc2query_queries"}  # source -> artifact
RETRIEVERS = ("bm25", "dense")
REASONS = ("cleaning", "unknown_chunk", "empty_text", "leakage", "round_trip", "too_easy", "low_score")


class TooEasyConfig(Section):
    enabled: bool = True  # reject queries whose source wins by a landslide (see docs/filtermine.md)
    retriever: Literal["bm25", "dense"] = "bm25"  # whose scores decide
    margin: float = Field(0.5, ge=0, le=1)  # relative gap (s1 - s2) / s1 to the best chunk of another document


class FilterConfig(Section):
    sources: list[Literal["synthesize", "doc2query"]] = Field(["synthesize"], min_length=1)
    round_trip: bool = True  # false = keep queries whatever their source's rank (ablation: filter off)
    retrievers: list[Literal["bm25", "dense"]] = Field(["bm25", "dense"], min_length=1)
    combine: Literal["any", "all"] = "any"  # keep when the source is in the top k of any / all retrievers
    k: int = Field(20, ge=1)  # round-trip cut-off
    depth: int | None = Field(100, ge=1)  # ranks recorded up to this depth (null rank = deeper)
    too_easy: TooEasyConfig = TooEasyConfig()
    keep_fraction: float = Field(1.0, gt=0, le=1)  # InPars score filter: keep the top fraction by mean log-prob
    fraction_per: Literal["template", "generator", "all"] = "template"  # rank log-probs within each ...
    # Share of the kept queries held out as a synthetic test set (never trained on; evaluate scores every
    # system on it, labelled synthetic). null: 0.2 for a corpus without judgments, 0 with them.
    holdout: float | None = Field(None, ge=0, lt=1)

    @model_validator(mode="after")
    def _too_easy_retriever_is_used(self) -> FilterConfig:
        if self.too_easy.enabled and self.too_easy.retriever not in self.retrievers:
            raise ValueError(f"filter.too_easy.retriever '{self.too_easy.retriever}' must be one of filter.retrievers")
        return self


STAGE = Stage(
    name="filter",
    version="3",
    params=("seed", "bm25", "encoder", "leakage", "filter"),
    config=FilterConfig,
    # Both generators' outputs, whichever filter.sources names: `dvc exp run -S filter.sources=...` then needs
    # no new dvc.yaml (the DAG's shape does not depend on it).
    inputs=("chunks", "index/bm25", "queries", *SOURCES.values()),
    outputs=(
        Output("filtered_queries", "queries.parquet", "filtered_queries",
               description="every generated query with its verdict, reason and round-trip ranks"),
        Metrics(),
    ),
)


def round_trip_ok(ranks: dict[str, int | None], k: int, combine: str) -> bool:
    hits = [r is not None and r <= k for r in ranks.values()]
    return any(hits) if combine == "any" else all(hits)


def is_too_easy(hits: Hits, rank: int | None, margin: float) -> bool:
    """Source at rank 1 and clearly ahead of the best chunk of any other document (relative score gap).

    Chunks of the source's own document are skipped: a query that copies the document's title ties with
    all of them, which says nothing about how easily it is told apart from the rest of the corpus.
    """
    if rank != 1:
        return False
    source_doc = doc_id_of(hits[0][0])
    runner_up = next((score for chunk_id, score in hits[1:] if doc_id_of(chunk_id) != source_doc), None)
    if runner_up is None or hits[0][1] <= 0:
        return True  # nothing else in the corpus matches at all
    return (hits[0][1] - runner_up) / hits[0][1] >= margin


def top_fraction(rows: list[dict[str, Any]], candidates: list[int], fraction: float, per: str) -> set[int]:
    """Row indices among ``candidates`` in the top ``fraction`` by mean_logprob within each group."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in candidates:
        groups["all" if per == "all" else rows[i][per]].append(i)
    keep: set[int] = set()
    for members in groups.values():
        def order(i: int) -> tuple[float, str]:
            lp = rows[i]["mean_logprob"]
            return (-lp if not math.isnan(lp) else math.inf, rows[i]["query_id"])
        members.sort(key=order)
        keep.update(members[: math.ceil(fraction * len(members))])
    return keep


def pass_rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def block(members: list[dict[str, Any]]) -> dict[str, Any]:
        kept = sum(r["kept"] for r in members)
        return {"input": len(members), "kept": kept, "pass_rate": round(kept / len(members), 4) if members else 0.0}

    reasons = Counter(r["reason"].split(":")[0] for r in rows if r["reason"])
    # Of the rows a rule was applied to (those that passed every earlier rule), the share it let through.
    reached, rule_pass = len(rows), {}
    for reason in REASONS:
        rule_pass[reason] = round(1 - reasons[reason] / reached, 4) if reached else 0.0
        reached -= reasons[reason]
    by = {key: {value: block([r for r in rows if r[key] == value]) for value in sorted({r[key] for r in rows})}
          for key in ("generator", "template")}
    return {**block(rows), "rejected": {r: reasons[r] for r in REASONS}, "rule_pass_rate": rule_pass,
            "by_generator": by["generator"], "by_template": by["template"]}


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: FilterConfig = ctx.section("filter")
    enc_cfg, bm25 = ctx.section("encoder"), ctx.section("bm25")
    retrievers, combine, k = cfg.retrievers, cfg.combine, cfg.k
    depth = max(cfg.depth or k, k, 2)
    easy, leak = cfg.too_easy, ctx.section("leakage")

    rows = [r for source in cfg.sources for r in ctx.read(SOURCES[source]).to_pylist()]
    chunks = ctx.read("chunks", ["chunk_id", "title", "text", "content_hash"]).to_pylist()
    known = {c["chunk_id"] for c in chunks}

    reason: list[str | None] = [None] * len(rows)
    for i, row in enumerate(rows):
        if not row["kept"]:
            reason[i] = f"cleaning: {row['reason'] or 'dropped by generation'}"
        elif row["chunk_id"] not in known:
            reason[i] = f"unknown_chunk: {row['chunk_id']}"
        elif not row["text"].strip():
            reason[i] = "empty_text"
    # Rank every row that has text and a known chunk, kept by cleaning or not: the ranks explain the verdicts.
    searchable = [i for i, r in enumerate(rows) if r["chunk_id"] in known and r["text"].strip()]
    queries = {str(i): rows[i]["text"] for i in searchable}

    hits: dict[str, dict[str, Hits]] = {}
    encoder = None
    eval_queries = queries_of(ctx.read("queries"))
    if "dense" in retrievers or (eval_queries and leak.cosine is not None):
        encoder = ctx.dense_encoder(enc_cfg.model, enc_cfg.max_length, enc_cfg.precision)
    if "bm25" in retrievers:
        hits["bm25"] = bm25_search(ctx.input_path("index/bm25"), queries, depth, bm25.k1, bm25.b, threads=ctx.threads)
    query_vectors = None
    if encoder is not None:
        query_vectors = encoder.encode_query_texts([rows[i]["query_id"] for i in searchable],
                                                   list(queries.values()), desc="encode queries")
    if "dense" in retrievers:
        dense = DenseRetriever.from_chunks(encoder, chunks, threads=ctx.threads)
        scores, positions = dense.search_vectors(query_vectors, depth)
        hits["dense"] = {key: [(dense.ids[p], float(s)) for p, s in zip(positions[n], scores[n], strict=True) if p >= 0]
                         for n, key in enumerate(queries)}

    ranks: dict[str, list[int | None]] = {r: [None] * len(rows) for r in RETRIEVERS}
    for name, run_hits in hits.items():
        for key, found in run_hits.items():
            ranks[name][int(key)] = rank_of(found, rows[int(key)]["chunk_id"])

    if eval_queries:
        cosines = None
        if encoder is not None and leak.cosine is not None:
            eval_vectors = encoder.encode_queries(eval_queries, desc="encode eval queries")
            cosines = query_vectors @ eval_vectors.T
        open_rows = [n for n, i in enumerate(searchable) if reason[i] is None]
        verdicts = leak_reasons([rows[searchable[n]]["text"] for n in open_rows], eval_queries, leak.jaccard,
                                None if cosines is None else cosines[open_rows], leak.cosine)
        for n, verdict in zip(open_rows, verdicts, strict=True):
            reason[searchable[n]] = verdict

    for i in searchable:
        if reason[i] is not None:
            continue
        if cfg.round_trip and not round_trip_ok({r: ranks[r][i] for r in retrievers}, k, combine):
            reason[i] = f"round_trip: source not in top {k} ({combine} of {', '.join(retrievers)})"
        elif easy.enabled and is_too_easy(hits[easy.retriever][str(i)], ranks[easy.retriever][i], easy.margin):
            reason[i] = f"too_easy: rank 1 under {easy.retriever} with margin >= {easy.margin}"

    survivors = [i for i in range(len(rows)) if reason[i] is None]
    keep = top_fraction(rows, survivors, cfg.keep_fraction, cfg.fraction_per)
    for i in survivors:
        if i not in keep:
            reason[i] = f"low_score: below the top {cfg.keep_fraction:g} by mean_logprob per {cfg.fraction_per}"

    share = cfg.holdout if cfg.holdout is not None else (0.0 if eval_queries else 0.2)
    kept_ids = [rows[i]["query_id"] for i in range(len(rows)) if reason[i] is None]
    held = {q for q, part in split_queries(kept_ids, round(share * len(kept_ids)), ctx.seed).items() if part == "dev"}
    out_rows = [{
        "query_id": r["query_id"], "chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "text": r["text"],
        "generator": r["generator"], "prompt_id": r["prompt_id"], "template": r["template"],
        "mean_logprob": r["mean_logprob"], "rank_bm25": ranks["bm25"][i], "rank_dense": ranks["dense"][i],
        "kept": reason[i] is None, "reason": reason[i], "holdout": r["query_id"] in held,
    } for i, r in enumerate(rows)]
    if held:
        log.info("%d of %d kept queries held out as the synthetic test set (filter.holdout %.2f): never trained on",
                 len(held), len(kept_ids), share)
    ctx.write("filtered_queries", pa.Table.from_pylist(out_rows, SCHEMAS["filtered_queries"]))
    metrics = {"filter": pass_rates(out_rows)}
    if encoder is not None:
        log.info("encoder cache: %d hits, %d misses", encoder.cache_hits, encoder.cache_misses)
    ctx.metrics(metrics)
    m = metrics["filter"]
    return {"input": m["input"], "kept": m["kept"], "holdout": len(held), "pass_rate": m["pass_rate"],
            "rejected": m["rejected"], "metrics": metrics}
