"""index: build one retrieval system's index (one `index-<system>` run per system of ``index.systems``).

Each system names its kind: ``bm25`` (Lucene over the chunks; ``expansions: doc2query`` appends the
doc2query queries: the docTTTTTquery recipe), ``faiss`` (dense vectors of ``model``; flat by default, HNSW or
IVF-PQ via ``index.faiss``) or ``impact`` (quantised SPLADE weights of ``model`` in a Lucene impact index). A
model is a ``pkg:`` name, a folder, a hub id, or a trained model's folder under ``artifacts/`` (then this
system waits for the stage that trains it). Each index is a folder published atomically, with provenance
and a ``system.json`` (kind, model, query settings) inside, so any system opens from its folder alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import Field

from irforge.config import Section
from irforge.contract import ARTIFACTS, Output, Stage
from irforge.corpus import passage_text
from irforge.engine import StageContext
from irforge.retrieval import build_faiss_folder, build_impact_index, build_lucene_index, write_system
from irforge.runtime import progress

log = logging.getLogger(__name__)


class FaissConfig(Section):
    type: Literal["auto", "flat", "hnsw", "ivfpq"] = "auto"  # auto: flat up to auto_flat_max vectors, else hnsw
    auto_flat_max: int = Field(100_000, ge=1)  # auto: exact search up to this many passages (docs/scale.md)
    hnsw_m: int = Field(32, ge=2)  # hnsw: graph links per vector
    hnsw_ef_search: int = Field(256, ge=1)  # hnsw: candidates kept while searching (recall against latency)
    ivf_lists: int = Field(0, ge=0)  # ivfpq: coarse cells (0 = about sqrt(number of passages))
    pq_m: int = Field(16, ge=1)  # ivfpq: sub-quantisers (must divide the vector dimension)
    pq_bits: int = Field(8, ge=1, le=16)  # ivfpq: bits per sub-quantiser code
    ivf_nprobe: int = Field(16, ge=1)  # ivfpq: cells searched per query


class SystemSpec(Section):
    kind: Literal["bm25", "faiss", "impact"]
    model: str | None = None  # faiss / impact: the model encoding passages and queries
    expansions: Literal["doc2query"] | None = None  # bm25: append these generated queries to each chunk
    faiss: FaissConfig | None = None  # faiss: overrides index.faiss for this system
    # faiss: float32, or bfloat16 weights (auto: where the CPU has native bf16; 3x faster for EmbeddingGemma at the
    # same nDCG@10, benchmarks/bench_encoding.py); queries are then encoded the same way (system.json records it)
    precision: Literal["auto", "float32", "bfloat16"] = "float32"


class IndexConfig(Section):
    systems: dict[str, SystemSpec] = {
        "bm25": SystemSpec(kind="bm25"),
        "bm25-d2q": SystemSpec(kind="bm25", expansions="doc2query"),
        "dense-zs": SystemSpec(kind="faiss", model="pkg:all-minilm-l6-v2"),
        "dense": SystemSpec(kind="faiss", model=f"{ARTIFACTS}/train/dense"),
        "splade-zs": SystemSpec(kind="impact", model="pkg:splade-tiny"),
        "splade": SystemSpec(kind="impact", model=f"{ARTIFACTS}/train/splade"),
    }
    max_length: int = Field(256, gt=0)  # passage tokens read by neural encoders
    query_max_length: int = Field(256, gt=0)  # query tokens read at search time (longer queries are cut, and counted)
    impact_scale: float = Field(100, gt=0)  # SPLADE weight -> integer impact: round(weight * scale)
    faiss: FaissConfig = FaissConfig()


def systems(config: Any) -> list[str]:
    return list(config.section("index").systems)


def system_inputs(config: Any, system: str | None) -> list[str]:
    """What one system's index is built from: the chunks, plus expansions or a trained model."""
    spec: SystemSpec = config.section("index").systems[system]
    inputs = ["expanded_chunks" if spec.expansions == "doc2query" else "chunks"]
    if spec.model and spec.model.startswith(ARTIFACTS + "/"):
        inputs.append(spec.model)  # a trained model: the train stage's output at that path
    return inputs


STAGE = Stage(
    name="index",
    version="3",
    params=("seed", "index"),
    config=IndexConfig,
    variants=systems,
    inputs=(system_inputs,),
    outputs=(Output("index/{variant}", "{variant}", "folder", description="one system's index"),),
)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: IndexConfig = ctx.section("index")
    system = ctx.variant
    spec = cfg.systems[system]
    if spec.kind != "bm25" and not spec.model:
        raise ValueError(f"index.systems.{system}: kind '{spec.kind}' needs a model")
    if spec.kind == "bm25":
        return _bm25(ctx, system, spec)
    if spec.kind == "faiss":
        return _faiss(ctx, system, spec, cfg)
    return _impact(ctx, system, spec, cfg)


# Rows encoded at a time: the stage holds one block's text and outputs besides the index, whatever the corpus size.
BLOCK = 16_384
CHUNK_COLUMNS = ["chunk_id", "title", "text", "content_hash"]


def _bm25(ctx: StageContext, system: str, spec: SystemSpec) -> dict[str, Any]:
    source = "expanded_chunks" if spec.expansions else "chunks"
    columns = None if spec.expansions else ["chunk_id", "title", "text"]

    def contents() -> Iterator[tuple[str, str]]:
        rows = (row for batch in ctx.batches(source, columns) for row in batch.to_pylist())
        for row in progress(rows, desc=f"index {system}", total=ctx.count(source), unit="chunk"):
            yield row["chunk_id"], passage_text(row["title"], row["text"], row.get("expansion", ""))

    with ctx.publish("index/{variant}") as tmp:
        n = build_lucene_index(contents(), tmp, threads=ctx.threads)
        write_system(tmp, {"kind": "bm25", "expansions": spec.expansions})
    log.info("indexed %d chunks into %s", n, ctx.output("index/{variant}").path)
    return {"system": system, "documents": n}


def _blocks(ctx: StageContext, encode: Callable[[list[dict]], Any]) -> Iterator[Any]:
    """``encode(rows)`` of each block of ``BLOCK`` chunk rows, in order."""
    for batch in ctx.batches("chunks", CHUNK_COLUMNS, size=BLOCK):
        yield encode(batch.to_pylist())


def _faiss(ctx: StageContext, system: str, spec: SystemSpec, cfg: IndexConfig) -> dict[str, Any]:
    fcfg = spec.faiss or cfg.faiss
    ids = [i for batch in ctx.batches("chunks", ["chunk_id"]) for i in batch.column(0).to_pylist()]
    # Through the row cache (float32): the filter and mine read the same model's vectors, so a run encodes each
    # chunk once per model, and a run after a small corpus change encodes only what changed. Blocks go into the
    # index as they are encoded: the index holds the only copy of the corpus's vectors.
    encoder = ctx.dense_encoder(spec.model, cfg.max_length, spec.precision)
    vectors = _blocks(ctx, lambda rows: encoder.encode_chunks(rows, desc=f"encode {system}"))
    with ctx.publish("index/{variant}") as tmp:
        meta = build_faiss_folder(vectors, ids, tmp, fcfg.as_params(), spec.model, cfg.query_max_length, ctx.seed,
                                  ctx.threads, encoder.precision)
    log.info("%s: %d passage vectors from the cache, %d encoded", system, encoder.cache_hits, encoder.cache_misses)
    recall = {"recall_at_10_vs_flat": meta["recall_at_10_vs_flat"]} if "recall_at_10_vs_flat" in meta else {}
    if recall:
        log.info("%s: %s index finds %.1f%% of the exact top 10 (sampled passages as queries)", system,
                 meta["faiss_type"], 100 * recall["recall_at_10_vs_flat"])
    return {"system": system, "documents": len(ids), "faiss": meta["faiss_type"], **recall}


def _impact(ctx: StageContext, system: str, spec: SystemSpec, cfg: IndexConfig) -> dict[str, Any]:
    # Through the row cache: a re-run, or a run after a small corpus change, encodes only what changed.
    encoder = ctx.splade_encoder(spec.model, cfg.max_length)
    postings = 0

    def vectors() -> Iterator[tuple[str, dict[str, int]]]:
        nonlocal postings
        for rows, encoded in _blocks(ctx, lambda rows: (rows, encoder.encode_chunks(rows, cfg.impact_scale,
                                                                                      desc=f"encode {system}"))):
            postings += sum(len(v) for v in encoded)
            yield from zip([r["chunk_id"] for r in rows], encoded, strict=True)

    with ctx.publish("index/{variant}") as tmp:
        n = build_impact_index(vectors(), tmp, threads=ctx.threads)
        write_system(tmp, {"kind": "impact", "model": spec.model, "scale": cfg.impact_scale,
                           "query_max_length": cfg.query_max_length})
    log.info("%s: %d passage vectors from the cache, %d encoded", system, encoder.cache_hits, encoder.cache_misses)
    log.info("%s: %.1f terms per passage on average", system, postings / max(1, n))
    return {"system": system, "documents": n, "terms_per_passage": round(postings / max(1, n), 1)}
