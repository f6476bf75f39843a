"""synthesize: training queries per chunk by few-shot prompting an instruct LLM (InPars, Promptagator).

The template (``synthesize.template``) is a file in irforge/generation/prompts/ (``inpars-vanilla``,
``inpars-gbq``: InPars "guided by bad questions", ``promptagator``: task instruction + examples) or a path to
one. Few-shot examples are the generic ones shipped with irforge, a JSONL file, or the collection's
*training* judgments (``examples: {queries: ..., qrels: ...}``); evaluation queries are refused.

Output: ``queries.parquet`` (generated_queries with the template id on every row, kept or not) and
``metrics.json`` (counts per cleaning reason). Rows are cached per chunk (see :mod:`irforge.generation.cache`).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from pydantic import Field

from irforge.contract import SCHEMAS, Metrics, Output, Stage
from irforge.corpus import queries_of
from irforge.engine import StageContext
from irforge.generation import (
    QueryGenConfig,
    check_no_test_queries,
    generate_queries,
    load_template,
    resolve_examples,
    select_chunks,
)

log = logging.getLogger(__name__)


class SynthesizeConfig(QueryGenConfig):
    model: str = "pkg:qwen2.5-coder-0.5b-instruct"
    template: str = "promptagator"  # inpars-vanilla | inpars-gbq | promptagator | path/to/template.txt
    # generic (irforge's own) | path.jsonl | {queries: ..., qrels: ...} training judgments (never test ones)
    examples: str | dict[str, str] = "generic"
    max_chunks: int | None = Field(16, ge=1)
    batch_size: int = Field(8, ge=1)  # for Qwen 0.5B 4x faster than 1, but samples then depend on batch-mates


def example_files(config: Any) -> list[str]:
    """Few-shot example files named in params: DVC must track them."""
    examples = config.section("synthesize").examples
    if examples == "generic":
        return []
    return [examples] if isinstance(examples, str) else [examples[k] for k in ("queries", "qrels") if k in examples]


STAGE = Stage(
    name="synthesize",
    version="1",
    params=("seed", "synthesize"),
    config=SynthesizeConfig,
    inputs=("chunks", "queries"),
    raw=(example_files,),
    outputs=(
        Output("synthetic_queries", "queries.parquet", "generated_queries", description="every generated sample"),
        Metrics(),
    ),
)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: SynthesizeConfig = ctx.section("synthesize")
    seed = ctx.seed
    chunks = ctx.read("chunks").to_pylist()
    first_chunk = {}
    for c in chunks:
        first_chunk.setdefault(c["doc_id"], (c["title"], c["text"]))
    examples, files = resolve_examples(cfg.examples, ctx.root, cfg.n_examples, seed, first_chunk)
    for f in files:
        ctx.use_input(f, "examples")
    # The collection's evaluation queries must never reach a prompt.
    check_no_test_queries(examples, queries_of(ctx.read("queries")), source=f"synthesize.examples ({cfg.examples})")
    template = load_template(cfg.template, examples, max_passage_words=cfg.max_passage_words)

    selected = select_chunks(chunks, cfg.max_chunks, seed)
    generator = ctx.generator(cfg.model, cfg.chat_template, cfg.dtype)
    result = generate_queries(selected, generator, template, cfg.sampling(), seed, cfg.batch_size,
                              ctx.cache_dir / "generation.sqlite", cfg.cleaning, cfg.model,
                              desc=f"synthesize {template.id}")
    ctx.write("synthetic_queries", pa.Table.from_pylist(result.rows, schema=SCHEMAS["generated_queries"]))
    metrics = {"template": template.id, **result.metrics}
    ctx.metrics(metrics)
    return {"chunks": len(selected), "queries": len(result.rows), "kept": result.metrics["kept"], "metrics": metrics}
