"""synthesize: training queries per chunk by few-shot prompting an instruct LLM (InPars, Promptagator).

The template (``synthesize.template``) is a file in irforge/prompts/ (``inpars-vanilla``, ``inpars-gbq``:
InPars "guided by bad questions", ``promptagator``: task instruction + examples) or a path to one. Few-shot
examples are the generic ones shipped with irforge, a JSONL file, or the collection's *training* judgments
(``examples: {queries: ..., qrels: ...}``); evaluation queries (``corpus.queries``) are refused.

Output: ``queries.parquet`` (generated_queries with the template id on every row, kept or not) and
``metrics.json`` (counts per cleaning reason). Rows are cached per chunk (see irforge.gencache).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa

from irforge import layout
from irforge.cleaning import CleaningRules
from irforge.generation import Generator
from irforge.judgments import load_queries
from irforge.prompting import check_no_test_queries, load_template, resolve_examples
from irforge.querygen import generate_queries, sampling_from_params, select_chunks
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="synthesize", version="1", params=("seed", "corpus", "synthesize"))


def test_queries(ctx: StageContext) -> dict[str, str]:
    """The collection's evaluation queries (empty when it has none): they must never reach a prompt."""
    path = ctx.section("corpus").get("queries")
    if not path or not ctx.path(path).exists():
        return {}
    return load_queries(ctx.use_input(ctx.path(path), "queries"))


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section("synthesize")
    seed = ctx.seed
    chunks = ctx.read(ctx.path(layout.CHUNKS), "chunks").to_pylist()
    first_chunk = {}
    for c in chunks:
        first_chunk.setdefault(c["doc_id"], (c["title"], c["text"]))
    examples, files = resolve_examples(cfg.get("examples", "generic"), ctx.root, int(cfg.get("n_examples", 3)), seed,
                                       first_chunk)
    for f in files:
        ctx.use_input(f, "examples")
    check_no_test_queries(examples, test_queries(ctx), source=f"synthesize.examples ({cfg.get('examples')})")
    template = load_template(cfg["template"], examples, max_passage_words=int(cfg.get("max_passage_words", 200)))

    selected = select_chunks(chunks, cfg.get("max_chunks"), seed)
    generator = Generator(cfg["model"], ctx.path(layout.CACHE), threads=cfg.get("threads"),
                          chat_template=cfg.get("chat_template", "auto"), dtype=cfg.get("dtype", "float32"))
    ctx.use_model(generator.info.record)
    result = generate_queries(
        selected, generator, template, sampling_from_params(cfg), seed, int(cfg.get("batch_size", 8)),
        ctx.path(cfg.get("cache") or layout.GENERATION_CACHE), CleaningRules.from_params(cfg.get("cleaning")),
        cfg["model"], desc=f"synthesize {template.id}",
    )
    ctx.write(ctx.path(layout.SYNTHETIC), "generated_queries",
              pa.Table.from_pylist(result.rows, schema=SCHEMAS["generated_queries"]))
    metrics = {"template": template.id, **result.metrics}
    ctx.write_text(ctx.path(layout.SYNTHETIC_METRICS), json.dumps(metrics, indent=2, sort_keys=True) + "\n",
                   provenance=False)
    return {"chunks": len(selected), "queries": len(result.rows), "kept": result.metrics["kept"], "metrics": metrics}
