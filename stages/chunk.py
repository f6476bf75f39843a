"""chunk: validate the raw corpus and split documents into passages.

Reads the corpus (``corpus.path``: a BEIR folder, JSONL, Parquet or a folder of documents, see
:mod:`irforge.corpus.readers`). Every row is validated; a bad row goes to the quarantine artifact with its
file, line, field and reason. The stage fails only when more than ``chunk.max_bad_fraction`` of the rows are
bad. Documents are cut into passages of at most ``chunk.max_tokens`` tokens of ``chunk.tokenizer``
(sentence-aware windows overlapping by ``chunk.stride``, see :mod:`irforge.corpus.chunking`). A document
whose text yields no token at all (only control or zero-width characters) is quarantined too.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from irforge.config import Section
from irforge.contract import SCHEMAS, Output, Stage
from irforge.corpus import BadRow, Chunker, CorpusError, Document, load_documents
from irforge.engine import StageContext
from irforge.runtime import map_partitions, progress

log = logging.getLogger(__name__)

_RAW_PREVIEW = 500


class ChunkConfig(Section):
    tokenizer: str = "pkg:all-minilm-l6-v2"  # passages are measured in this model's tokens
    max_tokens: int = Field(256, gt=0)  # passage length cap (all-MiniLM-L6-v2 reads 256 tokens)
    stride: int = Field(32, ge=0)  # tokens shared by consecutive passages of a long document
    max_doc_chars: int = Field(1_000_000, gt=0)  # longer documents are quarantined as oversize
    max_bad_fraction: float = Field(0.01, ge=0, le=1)  # fail when more than this share of rows is quarantined

    @model_validator(mode="after")
    def _stride_below_window(self) -> ChunkConfig:
        if self.stride >= self.max_tokens:
            raise ValueError(f"chunk.stride must be smaller than chunk.max_tokens ({self.stride} >= {self.max_tokens})")
        return self


STAGE = Stage(
    name="chunk",
    version="2",
    params=("corpus", "chunk"),
    config=ChunkConfig,
    raw=("${corpus.path}",),
    outputs=(
        Output("chunks", "chunks.parquet", "chunks", description="passages of the valid documents"),
        Output("quarantine", "quarantine.parquet", "quarantine", description="rows that failed validation, and why"),
    ),
)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: ChunkConfig = ctx.section("chunk")
    model = ctx.model(cfg.tokenizer)
    chunker = Chunker(model.path / "tokenizer.json", cfg.max_tokens, cfg.stride)
    corpus = load_documents(ctx.root, ctx.section("corpus"), cfg.max_doc_chars,
                            wrap=lambda rows: progress(rows, desc="validate", unit="doc"))
    ctx.use_input(corpus.file, "corpus")
    bad = corpus.bad
    _check_bad(ctx, bad, corpus.total, cfg.max_bad_fraction, corpus.path)  # fail before chunking when already bad

    # Sharded over the Dask cluster when the flow runs on one (irforge flow --dask); same rows either way.
    parts = map_partitions(functools.partial(_split_batch, chunker), corpus.documents, batch=256, desc="chunk")
    batches = [SCHEMAS["chunks"].empty_table()] + [table for table, _ in parts]  # Arrow: less memory than dicts
    tokenless = [row for _, rows in parts for row in rows]
    if tokenless:
        bad = sorted(bad + tokenless, key=lambda b: (b.source, b.line))
        _check_bad(ctx, bad, corpus.total, cfg.max_bad_fraction, corpus.path)
    chunks = pa.concat_tables(batches).combine_chunks()
    ctx.write("chunks", chunks)
    skipped = sum(b.skipped for b in bad)
    return {"documents": len(corpus.documents) - len(tokenless), "quarantined": len(bad) - skipped, "skipped": skipped,
            "chunks": chunks.num_rows}


def _split_batch(chunker: Chunker, docs: list[Document]) -> list[tuple[pa.Table, list[BadRow]]]:
    """Chunk one batch: its passages as Arrow, and the documents that produced no token (to quarantine)."""
    split = chunker.split(docs)
    produced = {r["doc_id"] for r in split}
    tokenless = [BadRow(d.source, d.line, "no tokens: the text holds only control or zero-width characters",
                        doc_id=d.doc_id, field="text", raw=d.text[:_RAW_PREVIEW])
                 for d in docs if d.doc_id not in produced]
    return [(pa.Table.from_pylist(split, schema=SCHEMAS["chunks"]), tokenless)]


def _check_bad(ctx: StageContext, bad: list[BadRow], total: int, limit: float, corpus_path: Path) -> None:
    """Write the quarantine artifact, log a sample, and fail when more than ``limit`` of the rows are bad."""
    quarantine = pa.Table.from_pylist([vars(b) for b in bad], schema=SCHEMAS["quarantine"])
    ctx.write("quarantine", quarantine)
    where = ctx.output("quarantine").path
    for b in [b for b in bad if not b.skipped][:5]:
        log.warning("quarantined %s:%d %s%s", b.source, b.line, b.reason, f" (id {b.doc_id})" if b.doc_id else "")
    if len(bad) > 5:
        log.warning("... and %d more quarantined rows, see %s", len(bad) - 5, where)
    skipped = sum(b.skipped for b in bad)  # files left out on purpose (corpus.include / exclude)
    if skipped:
        log.info("%d files skipped by corpus.include / corpus.exclude or for want of a reader, listed in %s",
                 skipped, where)
    failed, total = len(bad) - skipped, total - skipped
    if total and failed / total > limit:
        raise CorpusError(
            f"{corpus_path}: {failed} of {total} rows ({failed / total:.1%}) are bad, above "
            f"chunk.max_bad_fraction={limit}; the reasons are in {where} (nothing else was written)"
        )
