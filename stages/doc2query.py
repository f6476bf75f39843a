"""doc2query: N queries per chunk from a generator model, and the chunks expanded with them (docTTTTTquery).

Works with a causal LM plus a prompt template (``doc2query``: a zero-shot instruction asking for short
keyword queries that avoid the title's words, or a few-shot one such as ``inpars-gbq`` shown irforge's
generic examples) and with any seq2seq model (T5 doc2query), which reads the bare passage (template
``doc2query-t5``). Only ``max_chunks`` chunks, chosen by seed, get queries (cost bound); the rest are
expanded with nothing. Generated rows are cached per chunk (see :mod:`irforge.generation.cache`).

The expansions go into an evaluated index (``bm25-d2q``), so a query that (nearly) repeats an evaluation query
of the collection is dropped with reason ``leakage`` by the same rule the filter applies to training queries
(:mod:`irforge.corpus.leakage`: ``leakage.jaccard`` on words, ``leakage.cosine`` on the shared encoder's vectors).

Outputs: ``queries.parquet`` (every sample, kept or not, with the cleaning reason), ``expanded.parquet`` (every
chunk with its kept queries, for a ``bm25`` system with ``expansions: doc2query``) and ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import pyarrow as pa
from pydantic import Field

from irforge.contract import SCHEMAS, Metrics, Output, Stage
from irforge.corpus import leak_reasons, queries_of
from irforge.engine import StageContext
from irforge.generation import QueryGenConfig, generate_queries, generic_examples, load_templates, select_chunks

log = logging.getLogger(__name__)


class Doc2QueryConfig(QueryGenConfig):
    model: str = "pkg:smollm2-135m-instruct"
    template: str = "inpars-gbq"  # auto = doc2query (causal) / doc2query-t5 (seq2seq); or a template id/path
    max_chunks: int | None = Field(24, ge=1)
    n: int = Field(3, ge=1)


STAGE = Stage(
    name="doc2query",
    version="2",
    params=("seed", "doc2query", "leakage", "encoder"),
    config=Doc2QueryConfig,
    inputs=("chunks", "queries"),
    outputs=(
        Output("doc2query_queries", "queries.parquet", "generated_queries", description="every generated sample"),
        Output("expanded_chunks", "expanded.parquet", "expanded_chunks", description="chunks + kept queries"),
        Metrics(),
    ),
)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: Doc2QueryConfig = ctx.section("doc2query")
    seed = ctx.seed
    chunks = ctx.read("chunks").to_pylist()
    selected = select_chunks(chunks, cfg.max_chunks, seed)
    generator = ctx.generator(cfg.model, cfg.chat_template, cfg.dtype)
    auto = "doc2query-t5" if generator.is_encoder_decoder else "doc2query"
    names = [auto if n == "auto" else n for n in ([cfg.template] if isinstance(cfg.template, str) else cfg.template)]
    # Few-shot templates show irforge's generic examples (doc2query never uses the collection's queries).
    templates = load_templates(names, generic_examples()[: cfg.n_examples], max_passage_words=cfg.max_passage_words)
    result = generate_queries(selected, generator, templates, cfg.sampling(), seed, cfg.batch_size,
                              ctx.cache_dir / "generation.sqlite", cfg.cleaning, cfg.model, desc="doc2query")
    leaked = drop_leaks(ctx, result.rows)
    if leaked:
        result.metrics["kept"] -= leaked
        result.metrics["kept_fraction"] = round(result.metrics["kept"] / len(result.rows), 4)
        log.warning("doc2query: %d generated queries repeat an evaluation query and are left out of the expansions",
                    leaked)
    result.metrics["dropped"]["leakage"] = leaked
    ctx.write("doc2query_queries", pa.Table.from_pylist(result.rows, schema=SCHEMAS["generated_queries"]))

    kept: dict[str, list[str]] = defaultdict(list)
    for row in result.rows:
        if row["kept"]:
            kept[row["chunk_id"]].append(row["text"])
    expanded = [{"chunk_id": c["chunk_id"], "doc_id": c["doc_id"], "title": c["title"], "text": c["text"],
                 "expansion": "\n".join(kept.get(c["chunk_id"], []))} for c in chunks]
    ctx.write("expanded_chunks", pa.Table.from_pylist(expanded, schema=SCHEMAS["expanded_chunks"]))
    ctx.metrics(result.metrics)
    return {"chunks": len(selected), "queries": len(result.rows), "kept": result.metrics["kept"],
            "metrics": result.metrics}


def drop_leaks(ctx: StageContext, rows: list[dict[str, Any]]) -> int:
    """Mark kept rows that repeat an evaluation query as dropped (reason ``leakage: ...``); how many."""
    eval_queries = queries_of(ctx.read("queries"))
    kept = [r for r in rows if r["kept"]]
    if not eval_queries or not kept:
        return 0
    leak, enc = ctx.section("leakage"), ctx.section("encoder")
    cosines = None
    if leak.cosine is not None:
        encoder = ctx.dense_encoder(enc.model, enc.max_length, enc.precision)
        mine = encoder.encode_query_texts([r["query_id"] for r in kept], [r["text"] for r in kept],
                                          desc="encode queries (leakage)")
        cosines = mine @ encoder.encode_queries(eval_queries, desc="encode eval queries").T
    verdicts = leak_reasons([r["text"] for r in kept], eval_queries, leak.jaccard, cosines, leak.cosine)
    for row, verdict in zip(kept, verdicts, strict=True):
        if verdict:
            row["kept"], row["reason"] = False, verdict
    return sum(v is not None for v in verdicts)
