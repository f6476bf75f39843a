"""index: build one retrieval system's index from the chunks.

Systems: ``bm25`` (Lucene over title + chunk text) and ``bm25-d2q`` (the same, with the doc2query
expansion appended: the docTTTTTquery recipe). Each index is a folder artifact published atomically, with
its provenance inside. Dense (faiss) and learned-sparse (Lucene impact) systems plug in here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from irforge import layout
from irforge.progress import progress
from irforge.retrieval import build_lucene_index
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="index", version="1", params=("index",))


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


def run(ctx: StageContext, system: str = "bm25") -> dict[str, Any]:
    cfg = ctx.section("index")
    if system not in LUCENE_SYSTEMS:
        raise ValueError(f"index: unknown system '{system}' (known: {', '.join(LUCENE_SYSTEMS)})")
    threads = int(cfg.get("threads", 2))
    docs = LUCENE_SYSTEMS[system](ctx)
    with ctx.publish_dir(ctx.path(layout.index_dir(system))) as tmp:
        n = build_lucene_index(docs, tmp, threads=threads)
    log.info("indexed %d chunks into %s", n, layout.index_dir(system))
    return {"system": system, "documents": n}
