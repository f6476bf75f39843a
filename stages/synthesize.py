"""synthesize: training queries per chunk by few-shot prompting an instruct LLM (InPars, Promptagator).

The template (``synthesize.template``) is a file in irforge/generation/prompts/ (``inpars-vanilla``,
``inpars-gbq``: InPars "guided by bad questions", ``promptagator``: task instruction + examples) or a path to
one; a list of templates gives each chunk one of them (query types: ``[question, keywords, claim]``). Few-shot
examples are the generic ones shipped with irforge, a JSONL file, the collection's *training* judgments
(``examples: {queries: ..., qrels: ...}``), or its judged queries' dev split (``examples: dev``); a test-split
query is refused, and the examples used are listed in ``metrics.json`` (``irforge audit --validate`` checks them).

Output: ``queries.parquet`` (generated_queries with the template id on every row, kept or not) and
``metrics.json`` (counts per cleaning reason). Rows are cached per chunk (see :mod:`irforge.generation.cache`).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from pydantic import Field

from irforge.contract import SCHEMAS, Metrics, Output, Stage
from irforge.corpus import qrels_of, queries_of, splits_of
from irforge.engine import StageContext
from irforge.generation import (
    QueryGenConfig,
    check_no_test_queries,
    generate_queries,
    load_templates,
    resolve_examples,
    select_chunks,
)

log = logging.getLogger(__name__)


class SynthesizeConfig(QueryGenConfig):
    model: str = "pkg:qwen2.5-coder-0.5b-instruct"
    # inpars-vanilla | inpars-gbq | promptagator | question | keywords | claim | path/to/template.txt, or a list
    template: str | list[str] = "promptagator"
    # generic (irforge's own) | dev (the dev split's judged queries) | path.jsonl | {queries: ..., qrels: ...}
    # training judgments (never test ones)
    examples: str | dict[str, str] = "generic"
    max_chunks: int | None = Field(16, ge=1)
    batch_size: int = Field(8, ge=1)  # for Qwen 0.5B 4x faster than 1, but samples then depend on batch-mates


def example_files(config: Any) -> list[str]:
    """Few-shot example files named in params: DVC must track them."""
    examples = config.section("synthesize").examples
    if examples in ("generic", "dev"):
        return []
    return [examples] if isinstance(examples, str) else [examples[k] for k in ("queries", "qrels") if k in examples]


STAGE = Stage(
    name="synthesize",
    version="2",
    params=("seed", "synthesize"),
    config=SynthesizeConfig,
    inputs=("chunks", "queries", "qrels"),
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
    judged = ctx.read("queries")
    queries, splits = queries_of(judged), splits_of(judged)
    dev = {q: t for q, t in queries.items() if splits[q] == "dev"}
    examples, files = resolve_examples(cfg.examples, ctx.root, cfg.n_examples, seed, first_chunk,
                                       dev=(dev, qrels_of(ctx.read("qrels"))))
    for f in files:
        ctx.use_input(f, "examples")
    # Test (and unjudged) queries must never reach a prompt; the dev split is there for it.
    check_no_test_queries(examples, {q: t for q, t in queries.items() if q not in dev},
                          source=f"synthesize.examples ({cfg.examples})")
    templates = load_templates(cfg.template, examples, max_passage_words=cfg.max_passage_words)

    selected = select_chunks(chunks, cfg.max_chunks, seed)
    generator = ctx.generator(cfg.model, cfg.chat_template, cfg.dtype)
    ids = ", ".join(t.id for t in templates)
    result = generate_queries(selected, generator, templates, cfg.sampling(), seed, cfg.batch_size,
                              ctx.cache_dir / "generation.sqlite", cfg.cleaning, cfg.model, desc=f"synthesize {ids}")
    ctx.write("synthetic_queries", pa.Table.from_pylist(result.rows, schema=SCHEMAS["generated_queries"]))
    shown = [{"query_id": e.query_id, "query": e.query} for e in examples] if any(t.examples for t in templates) else []
    metrics = {"template": ids, **result.metrics, "examples": shown}
    ctx.metrics(metrics)
    return {"chunks": len(selected), "queries": len(result.rows), "kept": result.metrics["kept"], "metrics": metrics}
