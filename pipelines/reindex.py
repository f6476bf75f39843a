"""Scheduled re-indexing: keep the served index fresh as the corpus changes, at the cost of the change.

One run: read the current corpus, compare each document's content hash with the served version
(added / changed / deleted), re-chunk only the added and changed documents (with the chunk stage's own
functions and params), update a hard-linked copy of the served Lucene index (or build it in full on the
first run, when chunk/index params changed, or every ``reindex.full_every`` runs), evaluate it when the
corpus has judgments, and switch ``serve/<system>/served`` to the new version atomically. A new version
whose ``reindex.gate_measure`` falls more than ``reindex.max_metric_drop`` below the served one is built
but not served. See irforge/serving.py for the folder layout and irforge/refresh.py for the update.

Run it once with ``irforge reindex``; deploy it on a schedule with ``prefect deploy`` (prefect.yaml) and a
process worker, or with ``python -m pipelines.reindex serve`` (``flow.serve`` with ``reindex.cron``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from irforge import artifacts, layout, serving
from irforge.params import Params
from irforge.refresh import ChangeSet, diff, doc_hashes, link_index, merge_chunks, update_lucene_index
from irforge.schemas import SCHEMAS
from irforge.retrieval import build_lucene_index
from irforge.stage import Stage, StageContext, created_at
from stages.chunk import BadRow, Chunker, Document, corpus_file, detect_format, read_corpus, screen_documents, sha256_text
from stages.index import lucene_contents

log = logging.getLogger(__name__)

STAGE = Stage(name="reindex", version="1", params=("corpus", "chunk", "index", "bm25", "evaluate", "reindex"))

# system -> (chunk rows -> Lucene (id, contents)). Only new/changed chunks pass through it on a refresh.
# Hook for systems whose contents need per-chunk model output: `bm25-d2q` registers a function that reads
# the doc2query expansions of these chunks from doc2query's row cache (generating only the missing ones),
# so a refresh re-expands only what changed.
Contents = Callable[[StageContext, list[dict[str, Any]]], Iterator[tuple[str, str]]]


def _bm25_contents(ctx: StageContext, rows: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for row in rows:
        yield row["chunk_id"], lucene_contents(row["title"], row["text"])


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


def _ctx(root: str | Path, params: Params) -> StageContext:
    return StageContext.for_module(sys.modules[__name__], Path(root), params)


def load_documents(root: Path, params: Params) -> tuple[list[Document], list[BadRow], Path]:
    """The corpus's valid documents in file order, with the chunk stage's rules (duplicate ids, oversize)."""
    corpus_cfg, cfg = params.section("corpus"), params.section("chunk")
    path = root / corpus_cfg["path"]
    fmt = corpus_cfg.get("format", "auto")
    fmt = detect_format(path) if fmt == "auto" and path.exists() else fmt
    id_field = "_id" if fmt == "beir" else corpus_cfg.get("id_field", "_id")
    docs, bad, total = screen_documents(read_corpus(path, corpus_cfg), int(cfg.get("max_doc_chars", 1_000_000)), id_field)
    limit = float(cfg.get("max_bad_fraction", 0.01))
    if not total or len(bad) / total > limit:
        raise ValueError(f"{path}: {len(bad)} of {total} rows are bad (chunk.max_bad_fraction={limit}); "
                         "nothing was re-indexed")
    return docs, bad, corpus_file(path, fmt)


def build_key(params: Params, system: str) -> str:
    """What makes two versions' chunks and index comparable; when it changes, the next build is a full one."""
    return artifacts.stable_hash({"system": system, "chunk": params.section("chunk"), "index": params.section("index")})


def plan(root: str | Path, params: Params, system: str, full: bool = False) -> Plan:
    root = Path(root)
    docs, bad, corpus = load_documents(root, params)
    current = {d.doc_id: sha256_text(d.doc_id, d.title, d.text) for d in docs}
    previous = serving.served_version(root, system)
    mode, reason = "incremental", "corpus changed"
    if previous is None:
        mode, reason = "full", "first version"
    elif full:
        mode, reason = "full", "full rebuild requested"
    else:
        old = serving.manifest(root, system, previous)
        full_every = int(params.section("reindex").get("full_every") or 0)
        if old.get("build_key") != build_key(params, system):
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


def build(root: str | Path, params: Params, p: Plan, folder: Path) -> dict[str, Any]:
    """Write the new version (chunks, quarantine, index) into ``folder``; return build statistics."""
    from irforge.models import resolve_model

    root = Path(root)
    if p.system not in CONTENTS:
        raise ValueError(f"reindex: no contents function for system '{p.system}' (have: {', '.join(CONTENTS)}); "
                         "register one in pipelines.reindex.CONTENTS")
    ctx, cfg = _ctx(root, params), params.section("chunk")
    model = resolve_model(cfg["tokenizer"], root / layout.CACHE)
    ctx.use_model(model.record)
    ctx.use_input(p.corpus, "corpus")
    started = time.perf_counter()
    chunker = Chunker(model.path / "tokenizer.json", int(cfg["max_tokens"]), int(cfg.get("stride", 0)))
    todo = [d for d in p.documents if d.doc_id in p.changes.to_chunk]
    rows = [row for i in range(0, len(todo), 256) for row in chunker.split(todo[i : i + 256])]
    new_chunks = pa.Table.from_pylist(rows, schema=SCHEMAS["chunks"])
    chunk_s = time.perf_counter() - started

    started = time.perf_counter()
    threads = int(params.section("index").get("threads", 2))
    contents = CONTENTS[p.system](ctx, rows)
    if p.mode == "incremental":
        previous = serving.served_dir(root, p.system)
        old = ctx.read(previous / "chunks.parquet", "chunks")
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
    ctx.write(folder / "chunks.parquet", "chunks", chunks)
    ctx.write(folder / "quarantine.parquet", "quarantine",
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


def evaluate(root: str | Path, params: Params, folder: Path) -> dict[str, float] | None:
    """Score the version's index on the corpus's judgments (None when it has none)."""
    from irforge.retrieval import BM25Retriever, chunks_to_docs
    from irforge.judgments import load_qrels, load_queries
    from stages.evaluate import score

    root, corpus, cfg = Path(root), params.section("corpus"), params.section("reindex")
    if not corpus.get("queries") or not corpus.get("qrels"):
        return None
    qpath, rpath = root / corpus["queries"], root / corpus["qrels"]
    if not qpath.exists() or not rpath.exists():
        return None
    qrels = load_qrels(rpath)
    queries = {q: t for q, t in load_queries(qpath).items() if q in qrels}
    bm25, depth = params.section("bm25"), int(cfg.get("eval_depth", 100))
    retriever = BM25Retriever(folder / "index", k1=float(bm25["k1"]), b=float(bm25["b"]))
    try:
        hits = retriever.search(queries, k=depth * 2)
    finally:
        retriever.close()
    run = {qid: chunks_to_docs(h, depth) for qid, h in hits.items()}
    means, _ = score(run, qrels, list(cfg.get("measures", ["nDCG@10"])))
    return {m: round(v, 4) for m, v in means.items()}


def gate(params: Params, served: dict[str, Any] | None, metrics: dict[str, float] | None) -> str | None:
    """Why the new version must not be served (None: serve it)."""
    cfg = params.section("reindex")
    measure, limit = cfg.get("gate_measure"), cfg.get("max_metric_drop")
    if not (measure and limit is not None and metrics and served and served.get("metrics")):
        return None
    before, after = served["metrics"].get(measure), metrics.get(measure)
    if before is not None and after is not None and before - after > float(limit):
        return f"{measure} fell from {before} to {after} (more than reindex.max_metric_drop={limit})"
    return None


# ---------------------------------------------------------------- the Prefect flow


plan_task = task(plan, name="detect-changes", cache_policy=NO_CACHE)
build_task = task(build, name="chunk-and-index", cache_policy=NO_CACHE)
evaluate_task = task(evaluate, name="evaluate", cache_policy=NO_CACHE)


@task(name="switch-served", cache_policy=NO_CACHE)
def publish(root: str, params: Params, system: str, version: str, held: str | None) -> dict[str, Any]:
    if held:
        log.warning("reindex %s: %s built but NOT served: %s", system, version, held)
        return {"served": serving.served_version(root, system), "held": held}
    serving.switch(root, system, version)
    removed = serving.prune(root, system, int(params.section("reindex").get("keep", 3)))
    return {"served": version, "pruned": removed}


@flow(name="irforge-reindex")
def reindex(params_path: str = "params.yaml", root: str = ".", system: str | None = None, full: bool = False,
            overrides: list[str] | None = None) -> dict[str, Any]:
    from pipelines.experiment import parse_overrides

    params = Params.load(Path(root) / params_path, parse_overrides(overrides or []))
    system = system or params.section("reindex").get("system", "bm25")
    with serving.exclusive(root, system):
        return _reindex(root, params, system, full)


def _reindex(root: str, params: Params, system: str, full: bool) -> dict[str, Any]:
    run_log = get_run_logger()  # shows in the worker's log and the Prefect UI
    started = time.perf_counter()
    p = plan_task(root, params, system, full)
    result: dict[str, Any] = {"system": system, "mode": p.mode, "reason": p.reason, "changes": p.changes.summary()}
    run_log.info("%s: %s (%s) %s", system, p.mode, p.reason, p.changes.summary())
    if p.mode == "unchanged":
        return {**result, "served": p.previous}
    name, folder = serving.begin_version(root, system)
    try:
        stats = build_task(root, params, p, folder)
        metrics = evaluate_task(root, params, folder)
        served = serving.manifest(root, system, p.previous) if p.previous else None
        held = gate(params, served, metrics)
        manifest = {
            "version": name, "system": system, "mode": p.mode, "reason": p.reason, "changes": p.changes.summary(),
            "served_before": p.previous, "build_key": build_key(params, system),
            "incremental_since_full": 0 if p.mode == "full" else (served or {}).get("incremental_since_full", 0) + 1,
            "created_at": created_at(), "metrics": metrics, "held": held, **stats,
        }
        (folder / serving.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        serving.commit_version(root, system, name, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    outcome = publish(root, params, system, name, held)
    result.update(version=name, metrics=metrics, **stats, **outcome)
    result["seconds"]["total"] = round(time.perf_counter() - started, 3)
    run_log.info("%s: %s", system, {k: v for k, v in result.items() if k not in ("changes", "reason")})
    return result


def serve_schedule(root: str = ".", params_path: str = "params.yaml", cron: str | None = None) -> None:
    """Long-running process: the reindex deployment on ``cron`` (default ``reindex.cron``), via ``flow.serve``."""
    cron = cron or Params.load(Path(root) / params_path).section("reindex")["cron"]
    reindex.serve(name="reindex-served", cron=cron,
                  parameters={"params_path": params_path, "root": str(Path(root).absolute())})


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m pipelines.reindex serve [CRON]   (scheduled deployment; `irforge reindex` runs once)")
    serve_schedule(cron=sys.argv[2] if len(sys.argv) > 2 else None)
