"""Re-indexing the served system as the corpus changes, at the cost of the change (the logic; the Prefect
flow in pipelines/reindex.py only wires these steps as tasks).

One run: read the current corpus with the chunk stage's rules, compare each document's content hash with the
served version (added / changed / deleted), re-chunk only the added and changed documents, update a
hard-linked copy of the served Lucene index (or build it in full on the first run, when chunk/index params
changed, or every ``reindex.full_every`` runs), evaluate it when the corpus has judgments, and decide whether
it may be served (:func:`gate`). See :mod:`irforge.ops.serving` for the folder layout and
:mod:`irforge.ops.refresh` for the update.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from irforge.config import Config
from irforge.contract import SCHEMAS, Stage, artifacts
from irforge.corpus import BadRow, Chunker, CorpusError, Document, load_documents, passage_text, sha256_text
from irforge.engine import Node, StageContext
from irforge.ops import serving
from irforge.ops.refresh import ChangeSet, diff, doc_hashes, link_index, merge_chunks, update_lucene_index
from irforge.retrieval import build_lucene_index

log = logging.getLogger(__name__)

# Re-indexing is not a DAG stage, but its versions carry the same provenance record as a stage's outputs.
REINDEX = Stage(name="reindex", version="2", params=("corpus", "chunk", "index", "bm25", "evaluate", "reindex"))

# system -> (chunk rows -> Lucene (id, contents)). Only new/changed chunks pass through it on a refresh.
# Hook for systems whose contents need per-chunk model output (a bm25 system with doc2query expansions would
# read them from doc2query's row cache, generating only the missing ones).
Contents = Callable[[StageContext, list[dict[str, Any]]], Iterator[tuple[str, str]]]


def _bm25_contents(ctx: StageContext, rows: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for row in rows:
        yield row["chunk_id"], passage_text(row["title"], row["text"])


CONTENTS: dict[str, Contents] = {"bm25": _bm25_contents}


@dataclass
class Plan:
    system: str
    mode: str  # full | incremental | unchanged
    reason: str
    previous: str | None  # the served version the diff is against
    changes: ChangeSet
    documents: list[Document] = field(repr=False)
    bad: list[BadRow] = field(repr=False)
    corpus: Path = Path()


def _ctx(root: str | Path, config: Config) -> StageContext:
    node = Node(REINDEX, None, sys.modules[__name__], outputs=())
    return StageContext(node, Path(root), config)


def screened_documents(root: Path, config: Config) -> tuple[list[Document], list[BadRow], Path]:
    """The corpus's valid documents in file order, with the chunk stage's rules (duplicate ids, oversize)."""
    cfg = config.section("chunk")
    corpus = load_documents(root, config.section("corpus"), cfg.max_doc_chars)
    bad = [b for b in corpus.bad if not b.skipped]
    examples = "; ".join(f"{b.source}:{b.line} {b.reason}" for b in bad[:3]) + (" ..." if len(bad) > 3 else "")
    if corpus.bad_fraction() > cfg.max_bad_fraction:
        raise CorpusError(f"{corpus.path}: {len(bad)} of {corpus.total} rows are bad, above "
                          f"chunk.max_bad_fraction={cfg.max_bad_fraction} ({examples}); nothing was re-indexed")
    if bad:
        log.warning("%s: %d rows quarantined (%s); they are listed in the version's quarantine", corpus.path, len(bad),
                    examples)
    return corpus.documents, corpus.bad, corpus.file


def build_key(config: Config, system: str) -> str:
    """What makes two versions' chunks and index comparable; when it changes, the next build is a full one."""
    return artifacts.stable_hash({"system": system, "chunk": config.as_params("chunk"),
                                  "index": config.as_params("index")})


def plan(root: str | Path, config: Config, system: str, full: bool = False) -> Plan:
    root = Path(root)
    docs, bad, corpus = screened_documents(root, config)
    current = {d.doc_id: sha256_text(d.doc_id, d.title, d.text) for d in docs}
    previous = serving.served_version(root, system)
    mode, reason = "incremental", "corpus changed"
    if previous is None:
        mode, reason = "full", "first version"
    elif full:
        mode, reason = "full", "full rebuild requested"
    else:
        old = serving.manifest(root, system, previous)
        full_every = config.section("reindex").full_every
        if old.get("build_key") != build_key(config, system):
            mode, reason = "full", "chunk/index params changed since the served version"
        elif full_every and old.get("incremental_since_full", 0) + 1 >= full_every:
            mode, reason = "full", f"reindex.full_every={full_every} reached"
    if mode == "full":
        changes = diff({}, current)
    else:
        chunks = artifacts.read_artifact(serving.served_dir(root, system) / "chunks.parquet", "chunks", ["doc_id", "doc_hash"])
        changes = diff(doc_hashes(chunks), current)
        if changes.empty:
            mode, reason = "unchanged", "no document added, changed or deleted"
    log.info("reindex %s: %s (%s) %s", system, mode, reason, changes.summary())
    return Plan(system, mode, reason, previous, changes, docs, bad, corpus)


def build(root: str | Path, config: Config, p: Plan, folder: Path) -> dict[str, Any]:
    """Write the new version (chunks, quarantine, index) into ``folder``; return build statistics."""
    root = Path(root)
    if p.system not in CONTENTS:
        raise ValueError(f"reindex: no contents function for system '{p.system}' (have: {', '.join(CONTENTS)}); "
                         "register one in irforge.ops.reindex.CONTENTS")
    ctx, cfg = _ctx(root, config), config.section("chunk")
    model = ctx.model(cfg.tokenizer)
    ctx.use_input(p.corpus, "corpus")
    started = time.perf_counter()
    chunker = Chunker(model.path / "tokenizer.json", cfg.max_tokens, cfg.stride)
    todo = [d for d in p.documents if d.doc_id in p.changes.to_chunk]
    rows = [row for i in range(0, len(todo), 256) for row in chunker.split(todo[i : i + 256])]
    new_chunks = pa.Table.from_pylist(rows, schema=SCHEMAS["chunks"])
    chunk_s = time.perf_counter() - started

    started = time.perf_counter()
    threads = ctx.threads
    contents = CONTENTS[p.system](ctx, rows)
    if p.mode == "incremental":
        previous = serving.served_dir(root, p.system)
        old = ctx.read_file(previous / "chunks.parquet", "chunks")
        ctx.use_input(previous / "index", "index")
        chunks = merge_chunks(old, new_chunks, p.changes.to_remove, [d.doc_id for d in p.documents])
        removed = chunk_ids_of(old, p.changes.to_remove)
        link_index(previous / "index", folder / "index")
        stats = update_lucene_index(folder / "index", removed, contents, threads=threads)
    else:
        chunks = new_chunks
        n = build_lucene_index(contents, folder / "index", threads=threads)
        stats = {"deleted": 0, "added": n, "documents": n}
    index_s = time.perf_counter() - started
    if stats["documents"] != chunks.num_rows:
        raise RuntimeError(f"reindex: index holds {stats['documents']} chunks, chunks table {chunks.num_rows}")
    ctx.write_file(folder / "chunks.parquet", "chunks", chunks)
    ctx.write_file(folder / "quarantine.parquet", "quarantine",
              pa.Table.from_pylist([vars(b) for b in p.bad], schema=SCHEMAS["quarantine"]))
    (folder / "index" / artifacts.DIR_PROVENANCE).write_text(
        json.dumps({**ctx.provenance(), "artifact": "folder"}, indent=2, sort_keys=True))
    return {"chunks": chunks.num_rows, "rechunked_documents": len(todo), "new_chunks": new_chunks.num_rows,
            "index": stats, "seconds": {"chunk": round(chunk_s, 3), "index": round(index_s, 3)}}


def chunk_ids_of(chunks: pa.Table, docs: set[str]) -> list[str]:
    """chunk ids of ``docs`` in a chunks table."""
    import pyarrow.compute as pc

    mask = pc.is_in(chunks.column("doc_id"), value_set=pa.array(sorted(docs), pa.string()))
    return chunks.filter(mask).column("chunk_id").to_pylist()


SYNTHETIC = "artifacts/filter/queries.parquet"  # the filter's verdicts: its held-out rows are the synthetic test set


def synthetic_judgments(root: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]] | None:
    """The experiment's held-out generated queries (``filter.holdout``) and their own documents as judgments."""
    path = Path(root) / SYNTHETIC
    if not path.exists():
        return None
    rows = [r for r in artifacts.read_artifact(path, "filtered_queries").to_pylist() if r.get("holdout")]
    if not rows:
        return None
    return {r["query_id"]: r["text"] for r in rows}, {r["query_id"]: {r["doc_id"]: 1} for r in rows}


def evaluate(root: str | Path, config: Config, folder: Path) -> dict[str, float] | None:
    """Score the version's index on the corpus's judgments, or, for a corpus without them, on the experiment's
    synthetic test set (the gate then keeps a version from losing its own queries' documents); None: neither."""
    from irforge.corpus import load_qrels, load_queries
    from irforge.evaluation import score
    from irforge.retrieval import BM25Retriever, chunks_to_docs

    root, corpus, cfg = Path(root), config.section("corpus"), config.section("reindex")
    qpath = root / corpus.queries if corpus.queries else None
    rpath = root / corpus.qrels if corpus.qrels else None
    extra: dict[str, float] = {}
    if qpath and rpath and qpath.exists() and rpath.exists():
        qrels = load_qrels(rpath)
        queries = {q: t for q, t in load_queries(qpath).items() if q in qrels}
    elif not corpus.queries and (held := synthetic_judgments(root)) is not None:
        queries, qrels = held
        extra["synthetic_queries"] = len(queries)
        log.info("no judgments: scoring the new version on %d held-out generated queries (synthetic)", len(queries))
    else:
        return None
    bm25, depth = config.section("bm25"), cfg.eval_depth
    retriever = BM25Retriever(folder / "index", k1=bm25.k1, b=bm25.b)
    try:
        hits = retriever.search(queries, k=depth * 2)
    finally:
        retriever.close()
    run = {qid: chunks_to_docs(h, depth) for qid, h in hits.items()}
    means, _ = score(run, qrels, cfg.measures)
    return {m: round(v, 4) for m, v in means.items()} | extra


def gate(config: Config, served: dict[str, Any] | None, metrics: dict[str, float] | None) -> str | None:
    """Why the new version must not be served (None: serve it)."""
    cfg = config.section("reindex")
    measure, limit = cfg.gate_measure, cfg.max_metric_drop
    if not (measure and limit is not None and metrics and served and served.get("metrics")):
        return None
    before, after = served["metrics"].get(measure), metrics.get(measure)
    if before is not None and after is not None and before - after > float(limit):
        return f"{measure} fell from {before} to {after} (more than reindex.max_metric_drop={limit})"
    return None




def commit(root: str | Path, config: Config, p: Plan, name: str, folder: Path, stats: dict[str, Any],
           metrics: dict[str, float] | None) -> str | None:
    """Write the version's manifest and move it into ``versions/``; returns why it must not be served (or None)."""
    from irforge.engine import created_at

    served = serving.manifest(root, p.system, p.previous) if p.previous else None
    held = gate(config, served, metrics)
    manifest = {
        "version": name, "system": p.system, "mode": p.mode, "reason": p.reason, "changes": p.changes.summary(),
        "served_before": p.previous, "build_key": build_key(config, p.system),
        "incremental_since_full": 0 if p.mode == "full" else (served or {}).get("incremental_since_full", 0) + 1,
        "created_at": created_at(), "metrics": metrics, "held": held, **stats,
    }
    (folder / serving.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    serving.commit_version(root, p.system, name, folder)
    return held


def publish(root: str | Path, config: Config, system: str, version: str, held: str | None) -> dict[str, Any]:
    """Serve ``version`` (atomic switch) and prune old versions, unless the gate held it back."""
    if held:
        log.warning("reindex %s: %s built but NOT served: %s", system, version, held)
        return {"served": serving.served_version(root, system), "held": held}
    serving.switch(root, system, version)
    removed = serving.prune(root, system, config.section("reindex").keep)
    return {"served": version, "pruned": removed}
