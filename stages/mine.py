"""mine: hard negatives for every kept query, as training triples.

For each query the filter kept (but not those it held out as the synthetic test set), candidates come from
each retriever in ``mine.retrievers`` (BM25 over the Lucene index, dense = the shared encoder through faiss),
taken from the rank window ``mine.window``
(1-based ranks in that retriever's full ranking, inclusive). The positive is never a candidate, nor (with
``mine.exclude_same_doc``) any other chunk of its document. A chunk proposed by both retrievers keeps its
better rank. The false-negative guard (NV-Retriever) drops a candidate whose dense score is above
``mine.false_negative_ratio`` x the positive's: such "negatives" are often unlabelled positives.
``mine.n_negatives`` are then sampled uniformly from what is left, with a generator seeded by
(seed, query id), so a query's negatives do not depend on which other queries are in the batch.
A query left with fewer candidates keeps what there is (an empty list: in-batch negatives only).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from irforge.config import Pair, Section
from irforge.contract import SCHEMAS, Metrics, Output, Stage
from irforge.engine import StageContext
from irforge.retrieval import DenseRetriever, Hits, bm25_search, doc_id_of

log = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense")


class MineConfig(Section):
    retrievers: list[Literal["bm25", "dense"]] = Field(["bm25", "dense"], min_length=1)  # candidate sources
    window: Pair = (10, 100)  # 1-based ranks (inclusive) negatives are sampled from; skips near-duplicates
    n_negatives: int = Field(4, ge=0)  # negatives per query (fewer when the window holds fewer)
    exclude_same_doc: bool = True  # never use another chunk of the positive's document as a negative
    false_negative_ratio: float | None = Field(0.95, ge=0)  # drop candidates scoring > ratio x the positive

    @field_validator("window")
    @classmethod
    def _ordered(cls, window: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= window[0] <= window[1]:
            raise ValueError(f"mine.window must be [lo, hi] with 1 <= lo <= hi, got {list(window)}")
        return window


STAGE = Stage(
    name="mine",
    version="2",
    params=("seed", "bm25", "encoder", "mine"),
    config=MineConfig,
    inputs=("chunks", "index/bm25", "filtered_queries"),
    outputs=(
        Output("triples", "triples.parquet", "triples", description="query, positive, hard negatives"),
        Metrics(),
    ),
)


def candidates(hits: dict[str, Hits], positive: str, window: tuple[int, int], exclude_same_doc: bool,
               order: list[str]) -> dict[str, dict[str, Any]]:
    """Chunk id -> {rank, score, source} for the hits inside the window, best rank per chunk."""
    lo, hi = window
    doc = doc_id_of(positive)
    found: dict[str, dict[str, Any]] = {}
    for source in order:
        for rank, (chunk_id, score) in enumerate(hits[source][: hi], start=1):
            if rank < lo or chunk_id == positive or (exclude_same_doc and doc_id_of(chunk_id) == doc):
                continue
            if chunk_id not in found or rank < found[chunk_id]["rank"]:
                found[chunk_id] = {"chunk_id": chunk_id, "rank": rank, "score": score, "source": source}
    return found


def sample(found: dict[str, dict[str, Any]], n: int, seed: int, query_id: str) -> list[dict[str, Any]]:
    pool = sorted(found.values(), key=lambda c: (c["rank"], c["source"], c["chunk_id"]))
    if len(pool) <= n:
        return pool
    # Seeded per query: the same query gets the same negatives whatever else is in the input.
    rng = np.random.default_rng([seed, int(hashlib.sha256(query_id.encode()).hexdigest()[:15], 16)])
    picked = sorted(rng.choice(len(pool), size=n, replace=False).tolist())
    return [pool[i] for i in picked]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: MineConfig = ctx.section("mine")
    enc_cfg, bm25 = ctx.section("encoder"), ctx.section("bm25")
    retrievers = cfg.retrievers
    lo, hi = cfg.window
    n, ratio = cfg.n_negatives, cfg.false_negative_ratio

    filtered = ctx.read("filtered_queries").to_pylist()
    queries = [r for r in filtered if r["kept"] and not r.get("holdout")]  # held-out queries test, never train
    chunks = ctx.read("chunks", ["chunk_id", "title", "text", "content_hash"]).to_pylist()
    known = {c["chunk_id"] for c in chunks}
    missing = next((q for q in queries if q["chunk_id"] not in known), None)
    if missing:
        raise ValueError(f"{ctx.output('triples').path}: query {missing['query_id']} has chunk_id "
                         f"'{missing['chunk_id']}', which is not a chunk (re-run filter after chunk)")
    search = {str(i): q["text"] for i, q in enumerate(queries)}

    hits: dict[str, dict[str, Hits]] = {}
    if "bm25" in retrievers:
        hits["bm25"] = bm25_search(ctx.input_path("index/bm25"), search, hi, bm25.k1, bm25.b, threads=ctx.threads)
    dense = None
    query_vectors = np.zeros((len(queries), 0), dtype=np.float32)
    if "dense" in retrievers or ratio is not None:
        encoder = ctx.dense_encoder(enc_cfg.model, enc_cfg.max_length, enc_cfg.precision)
        dense = DenseRetriever.from_chunks(encoder, chunks, threads=ctx.threads)
        query_vectors = encoder.encode_query_texts([q["query_id"] for q in queries], [q["text"] for q in queries],
                                                   desc="encode queries")
        log.info("encoder cache: %d hits, %d misses", encoder.cache_hits, encoder.cache_misses)
    if "dense" in retrievers:
        scores, positions = dense.search_vectors(query_vectors, hi)
        hits["dense"] = {key: [(dense.ids[p], float(s)) for p, s in zip(positions[i], scores[i], strict=True) if p >= 0]
                         for i, key in enumerate(search)}

    rows: list[dict[str, Any]] = []
    guarded = short = pooled = 0
    for i, q in enumerate(queries):
        found = candidates({r: hits[r][str(i)] for r in retrievers}, q["chunk_id"], (lo, hi), cfg.exclude_same_doc,
                           retrievers)
        pooled += len(found)
        if ratio is not None and found:
            ids = sorted(found)
            cand = dense.vectors[[dense.position[c] for c in ids]] @ query_vectors[i]
            limit = ratio * float(dense.vectors[dense.position[q["chunk_id"]]] @ query_vectors[i])
            for chunk_id, score in zip(ids, cand, strict=True):
                if score > limit:
                    del found[chunk_id]
                    guarded += 1
        negatives = sample(found, n, ctx.seed, q["query_id"])
        short += len(negatives) < n
        rows.append({"query_id": q["query_id"], "query": q["text"], "positive_id": q["chunk_id"],
                     "generator": q["generator"], "template": q["template"], "negatives": negatives})

    ctx.write("triples", pa.Table.from_pylist(rows, SCHEMAS["triples"]))
    n_neg = [len(r["negatives"]) for r in rows]
    sources = [neg["source"] for r in rows for neg in r["negatives"]]
    metrics = {"mine": {
        "triples": len(rows),
        "negatives_per_query": round(float(np.mean(n_neg)), 4) if rows else 0.0,
        "queries_short_of_negatives": short,
        "candidates_in_window": pooled,
        "false_negatives_dropped": guarded,
        "negatives_by_source": {r: sources.count(r) for r in retrievers},
    }}
    ctx.metrics(metrics)
    return {"triples": len(rows), "false_negatives_dropped": guarded, "short": short, "metrics": metrics}
