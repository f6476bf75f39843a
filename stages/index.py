"""index: build one retrieval system's index from the chunks.

Lucene systems: ``bm25`` (Lucene over title + chunk text) and ``bm25-d2q`` (the same, with the doc2query
expansion appended: the docTTTTTquery recipe). Neural systems are declared in ``index.systems``: each names
its kind and model, e.g. ``dense-zs`` (zero-shot MiniLM) and ``dense`` (the trained one) as faiss indexes
(``kind: faiss``; flat by default, HNSW or IVF-PQ via ``index.faiss``), ``splade-zs`` and ``splade`` as
Lucene impact indexes of quantised SPLADE weights (``kind: impact``). Each index is a folder artifact
published atomically, with its provenance and a ``system.json`` (kind, model, query settings) inside, so the
evaluate stage can open any system from its folder alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from irforge import indexes, layout
from irforge.progress import progress
from irforge.retrieval import build_lucene_index
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="index", version="2", params=("seed", "index"))


def lucene_contents(title: str, text: str, expansion: str = "") -> str:
    return "\n".join(part for part in (title, text, expansion) if part)


def _bm25(ctx: StageContext) -> Iterator[tuple[str, str]]:
    chunks = ctx.read(ctx.path(layout.CHUNKS), "chunks", ["chunk_id", "title", "text"]).to_pylist()
    for row in progress(chunks, desc="index bm25", unit="chunk"):
        yield row["chunk_id"], lucene_contents(row["title"], row["text"])


def _bm25_d2q(ctx: StageContext) -> Iterator[tuple[str, str]]:
    rows = ctx.read(ctx.path(layout.EXPANDED), "expanded_chunks").to_pylist()
    for row in progress(rows, desc="index bm25-d2q", unit="chunk"):
        yield row["chunk_id"], lucene_contents(row["title"], row["text"], row["expansion"])


LUCENE_SYSTEMS: dict[str, Callable[[StageContext], Iterator[tuple[str, str]]]] = {
    "bm25": _bm25,
    "bm25-d2q": _bm25_d2q,
}


def _passages(ctx: StageContext) -> tuple[list[str], list[str]]:
    chunks = ctx.read(ctx.path(layout.CHUNKS), "chunks", ["chunk_id", "title", "text"]).to_pylist()
    return [c["chunk_id"] for c in chunks], [indexes.passage_text(c["title"], c["text"]) for c in chunks]


def _model(ctx: StageContext, name: str) -> str:
    """The model to encode with; a trained model folder under the project is recorded as an input too."""
    resolved = indexes.model_name_in(ctx.root, name)
    if resolved != name:
        ctx.use_input(ctx.path(name), "model")
    return resolved


def _faiss(ctx: StageContext, system: str, spec: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    from irforge.encoding import DenseEncoder

    fcfg = {**cfg.get("faiss", {}), **spec.get("faiss", {})}
    ids, texts = _passages(ctx)
    encoder = DenseEncoder(_model(ctx, spec["model"]), ctx.path(layout.CACHE), max_length=int(cfg["max_length"]),
                           batch_size=int(cfg["batch_size"]), threads=int(cfg.get("threads", 2)))
    ctx.use_model(encoder.model_info.record)
    vectors = encoder.encode(texts, desc=f"encode {system}")
    kind = fcfg.get("type", "flat")
    index = indexes.build_faiss(vectors, kind, hnsw_m=int(fcfg.get("hnsw_m", 32)),
                                ivf_lists=int(fcfg.get("ivf_lists", 0)), pq_m=int(fcfg.get("pq_m", 16)),
                                pq_bits=int(fcfg.get("pq_bits", 8)), seed=ctx.seed,
                                threads=int(cfg.get("threads", 2)))
    with ctx.publish_dir(ctx.path(layout.index_dir(system))) as tmp:
        indexes.save_faiss(index, ids, tmp)
        indexes.write_system(tmp, {"kind": "faiss", "faiss_type": kind, "model": spec["model"],
                                   "dim": int(vectors.shape[1]), "query_max_length": int(cfg["query_max_length"])})
    return {"system": system, "documents": len(ids), "faiss": kind}


def _impact(ctx: StageContext, system: str, spec: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    from irforge.splade import SpladeEncoder

    ids, texts = _passages(ctx)
    scale = float(cfg["impact_scale"])
    encoder = SpladeEncoder(_model(ctx, spec["model"]), ctx.path(layout.CACHE), max_length=int(cfg["max_length"]),
                            batch_size=int(cfg["batch_size"]), threads=int(cfg.get("threads", 2)))
    ctx.use_model(encoder.model_info.record)
    vectors = encoder.encode(texts, scale, desc=f"encode {system}")
    postings = sum(len(v) for v in vectors)
    with ctx.publish_dir(ctx.path(layout.index_dir(system))) as tmp:
        n = indexes.build_impact_index(zip(ids, vectors, strict=True), tmp, threads=int(cfg.get("threads", 2)))
        indexes.write_system(tmp, {"kind": "impact", "model": spec["model"], "scale": scale,
                                   "query_max_length": int(cfg["query_max_length"])})
    log.info("%s: %.1f terms per passage on average", system, postings / max(1, n))
    return {"system": system, "documents": n, "terms_per_passage": round(postings / max(1, n), 1)}


NEURAL_KINDS = {"faiss": _faiss, "impact": _impact}


def run(ctx: StageContext, system: str = "bm25") -> dict[str, Any]:
    cfg = ctx.section("index")
    neural = cfg.get("systems") or {}
    if system in LUCENE_SYSTEMS:
        docs = LUCENE_SYSTEMS[system](ctx)
        with ctx.publish_dir(ctx.path(layout.index_dir(system))) as tmp:
            n = build_lucene_index(docs, tmp, threads=int(cfg.get("threads", 2)))
        log.info("indexed %d chunks into %s", n, layout.index_dir(system))
        return {"system": system, "documents": n}
    if system not in neural:
        known = [*LUCENE_SYSTEMS, *neural]
        raise ValueError(f"index: unknown system '{system}' (known: {', '.join(known)}; neural ones in index.systems)")
    spec = neural[system]
    if spec.get("kind") not in NEURAL_KINDS:
        raise ValueError(f"index.systems.{system}.kind must be one of {', '.join(NEURAL_KINDS)}, got {spec.get('kind')!r}")
    return NEURAL_KINDS[spec["kind"]](ctx, system, spec, cfg)
