"""doc2query: N queries per chunk from a generator model, and the chunks expanded with them (docTTTTTquery).

Works with a causal LM plus a prompt template (``doc2query``: a zero-shot instruction asking for short
keyword queries that avoid the title's words, or a few-shot one such as ``inpars-gbq`` shown irforge's generic
examples) and with any seq2seq model (T5 doc2query), which reads the bare passage (template ``doc2query-t5``). Only ``max_chunks`` chunks, chosen by seed, get queries (cost
bound); the rest are expanded with nothing. Generated rows are cached per chunk (see irforge.gencache).

Outputs: ``queries.parquet`` (generated_queries: every sample, kept or not, with the cleaning reason),
``expanded.parquet`` (expanded_chunks: every chunk with its kept queries, for the ``bm25-d2q`` index) and
``metrics.json`` (counts per cleaning reason).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

import pyarrow as pa

from irforge import layout
from irforge.cleaning import CleaningRules
from irforge.generation import Generator
from irforge.prompting import generic_examples, load_template
from irforge.querygen import generate_queries, sampling_from_params, select_chunks
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="doc2query", version="1", params=("seed", "doc2query"))


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section("doc2query")
    seed = ctx.seed
    chunks = ctx.read(ctx.path(layout.CHUNKS), "chunks").to_pylist()
    selected = select_chunks(chunks, cfg.get("max_chunks"), seed)
    generator = Generator(cfg["model"], ctx.path(layout.CACHE), threads=cfg.get("threads"),
                          chat_template=cfg.get("chat_template", "auto"), dtype=cfg.get("dtype", "float32"))
    ctx.use_model(generator.info.record)
    name = cfg.get("template", "auto")
    if name == "auto":
        name = "doc2query-t5" if generator.is_encoder_decoder else "doc2query"
    # Few-shot templates show irforge's generic examples (doc2query never uses the collection's queries).
    template = load_template(name, generic_examples()[: int(cfg.get("n_examples", 3))],
                             max_passage_words=int(cfg.get("max_passage_words", 200)))
    result = generate_queries(
        selected, generator, template, sampling_from_params(cfg), seed, int(cfg.get("batch_size", 8)),
        ctx.path(cfg.get("cache") or layout.GENERATION_CACHE), CleaningRules.from_params(cfg.get("cleaning")),
        cfg["model"], desc="doc2query",
    )
    ctx.write(ctx.path(layout.DOC2QUERY), "generated_queries",
              pa.Table.from_pylist(result.rows, schema=SCHEMAS["generated_queries"]))

    kept: dict[str, list[str]] = defaultdict(list)
    for row in result.rows:
        if row["kept"]:
            kept[row["chunk_id"]].append(row["text"])
    expanded = [{"chunk_id": c["chunk_id"], "doc_id": c["doc_id"], "title": c["title"], "text": c["text"],
                 "expansion": "\n".join(kept.get(c["chunk_id"], []))} for c in chunks]
    ctx.write(ctx.path(layout.EXPANDED), "expanded_chunks", pa.Table.from_pylist(expanded, schema=SCHEMAS["expanded_chunks"]))
    ctx.write_text(ctx.path(layout.DOC2QUERY_METRICS), json.dumps(result.metrics, indent=2, sort_keys=True) + "\n",
                   provenance=False)
    return {"chunks": len(selected), "queries": len(result.rows), "kept": result.metrics["kept"],
            "metrics": result.metrics}
