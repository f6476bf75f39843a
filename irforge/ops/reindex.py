"""Re-indexing the served system as the corpus changes, at the cost of the change (the logic; the Prefect
flow in pipelines/reindex.py only wires these steps as tasks).

A served system (``serve/<name>/``, see :mod:`irforge.ops.serving` and :mod:`irforge.ops.search`) is a search plan
over one or more indexes: BM25 (Lucene), SPLADE (Lucene impact) and dense (faiss), fused or not. One run: read
the current corpus with the chunk stage's rules, compare each document's content hash with the served version
(added / changed / deleted), re-chunk only the added and changed documents, then refresh **every** index of the
plan in the new version folder:

- Lucene (BM25, impact): the served index is hard-linked into the new folder, the changed and deleted documents'
  chunks are deleted by id and the new chunks added (:func:`irforge.ops.refresh.update_lucene_index`); SPLADE
  encodes only the new chunks.
- faiss: the vectors of every current chunk come from the embedding row cache, so only new chunks are encoded;
  the index is rebuilt from them (exact, and it drops deleted chunks whatever the faiss type).

The version is scored as the whole served system (judgments, or the experiment's held-out generated queries),
gated (:func:`gate`), and served by one pointer switch: all of its indexes change together. A full build
happens for the first version, on ``--full``, when chunk/index params or the plan changed, or every
``reindex.full_every`` runs. Models are carried over from the served version (the first version takes them
from the experiment), so a refresh never changes which model answers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from irforge.config import Config
from irforge.contract import ARTIFACTS, SCHEMAS, Stage, artifacts
from irforge.corpus import BadRow, Chunker, CorpusError, Document, document_hash, load_documents, passage_text
from irforge.engine import Node, StageContext
from irforge.ops import serving
from irforge.ops.refresh import (
    ChangeSet,
    diff,
    doc_hashes,
    link_index,
    link_tree,
    merge_chunks,
    update_lucene_index,
)
from irforge.ops.search import CHUNKS, INDEXES, SYSTEM_SPEC, SearchService, system_spec
from irforge.retrieval import ProjectEncoders, build_faiss_folder, build_impact_index, build_lucene_index, write_system

log = logging.getLogger(__name__)

# Re-indexing is not a DAG stage, but its versions carry the same provenance record as a stage's outputs.
REINDEX = Stage(name="reindex", version="3",
                params=("seed", "corpus", "chunk", "index", "bm25", "evaluate", "serve", "reindex"))


@dataclass
class Plan:
    name: str  # the served system (serve/<name>/)
    spec: dict[str, Any]  # what it searches (irforge.ops.search.system_spec): the plan, BM25 settings, index specs
    mode: str  # full | incremental | unchanged
    reason: str
    previous: str | None  # the served version the diff is against
    changes: ChangeSet
    documents: list[Document] = field(repr=False)
    bad: list[BadRow] = field(repr=False)
    corpus: Path = Path()

    @property
    def system(self) -> str:
        return self.spec["plan"]["target"]


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


def build_key(config: Config, spec: dict[str, Any]) -> str:
    """What makes two versions' chunks and indexes comparable; when it changes, the next build is a full one."""
    index = {k: v for k, v in config.as_params("index").items() if k != "systems"}
    return artifacts.stable_hash({"plan": spec["plan"], "indexes": spec["indexes"], "chunk": config.as_params("chunk"),
                                  "index": index})


def served_spec(root: Path, name: str) -> dict[str, Any] | None:
    version = serving.served_version(root, name)
    if version is None:
        return None
    return json.loads((serving.served_dir(root, name) / SYSTEM_SPEC).read_text(encoding="utf-8"))


def plan(root: str | Path, config: Config, name: str | None = None, full: bool = False) -> Plan:
    root = Path(root)
    name = name or config.section("serve").name
    docs, bad, corpus = screened_documents(root, config)
    current = {d.doc_id: document_hash(d) for d in docs}
    previous = serving.served_version(root, name)
    spec = served_spec(root, name)  # what is served stays what is served; serve.system picks only the first
    if spec is None:
        spec = system_spec(config, config.section("serve").system, root)
        spec["name"] = name
    unsupported = [s for s, ix in spec["indexes"].items() if ix.get("expansions")]
    if unsupported:
        raise ValueError(f"serve/{name}: index '{unsupported[0]}' holds doc2query expansions, which re-indexing "
                         "cannot make for new documents yet; serve a system without it (e.g. bm25 instead of bm25-d2q)")
    mode, reason = "incremental", "corpus changed"
    if previous is None:
        mode, reason = "full", "first version"
    elif full:
        mode, reason = "full", "full rebuild requested"
    else:
        old = serving.manifest(root, name, previous)
        full_every = config.section("reindex").full_every
        if old.get("build_key") != build_key(config, spec):
            mode, reason = "full", "chunk/index params changed since the served version"
        elif full_every and old.get("incremental_since_full", 0) + 1 >= full_every:
            mode, reason = "full", f"reindex.full_every={full_every} reached"
    if mode == "full":
        changes = diff({}, current)
    else:
        chunks = artifacts.read_artifact(serving.served_dir(root, name) / CHUNKS, "chunks", ["doc_id", "doc_hash"])
        changes = diff(doc_hashes(chunks), current)
        if changes.empty:
            mode, reason = "unchanged", "no document added, changed or deleted"
    log.info("reindex %s (%s): %s (%s) %s", name, spec["plan"]["target"], mode, reason, changes.summary())
    return Plan(name, spec, mode, reason, previous, changes, docs, bad, corpus)


def model_folders(spec: dict[str, Any]) -> list[str]:
    """The project folders (trained models under artifacts/) the served system's indexes and rerankers read."""
    names = [ix.get("model") for ix in spec["indexes"].values()]
    names += [step.get("model") for step in spec["plan"]["steps"].values() if step["kind"] == "rerank"]
    return sorted({n for n in names if n and n.startswith(ARTIFACTS + "/")})


def build(root: str | Path, config: Config, p: Plan, folder: Path) -> dict[str, Any]:
    """Write the new version (chunks, quarantine, every index, models, system.json) into ``folder``."""
    root = Path(root)
    ctx, cfg = _ctx(root, config), config.section("chunk")
    previous = serving.served_dir(root, p.name) if p.previous else None
    ctx.use_input(p.corpus, "corpus")
    for model in model_folders(p.spec):  # the served version's models, or the experiment's for a first version
        source = (previous or root) / model
        if not source.exists():
            raise FileNotFoundError(f"{source}: the model of serve/{p.name} is missing (run `dvc repro` first)")
        link_tree(source, folder / model)
    started = time.perf_counter()
    chunker = Chunker(ctx.model(cfg.tokenizer).path / "tokenizer.json", cfg.max_tokens, cfg.stride)
    todo = [d for d in p.documents if d.doc_id in p.changes.to_chunk]
    rows = [row for i in range(0, len(todo), 256) for row in chunker.split(todo[i : i + 256])]
    new_chunks = pa.Table.from_pylist(rows, schema=SCHEMAS["chunks"])
    removed: list[str] = []
    if p.mode == "incremental":
        old = ctx.read_file(previous / CHUNKS, "chunks")
        chunks = merge_chunks(old, new_chunks, p.changes.to_remove, [d.doc_id for d in p.documents])
        removed = chunk_ids_of(old, p.changes.to_remove)
    else:
        chunks = new_chunks
    seconds = {"chunk": round(time.perf_counter() - started, 3)}
    encoders = ProjectEncoders(folder, root / config.runtime.cache_dir, ctx.threads,
                               batch_size=config.runtime.encode_batch_size, use_cache=config.runtime.reuse_vectors)
    stats: dict[str, Any] = {}
    for system in p.spec["plan"]["systems"]:
        started = time.perf_counter()
        out = folder / INDEXES / system
        old_index = previous / INDEXES / system if previous and p.mode == "incremental" else None
        stats[system] = build_index(ctx, config, p.spec["indexes"][system], out, chunks, rows, removed, old_index,
                                    encoders)
        if stats[system]["documents"] != chunks.num_rows:
            raise RuntimeError(f"reindex {system}: index holds {stats[system]['documents']} chunks, the chunks table "
                               f"{chunks.num_rows}")
        (out / artifacts.DIR_PROVENANCE).write_text(
            json.dumps({**ctx.provenance(), "variant": system, "artifact": "folder"}, indent=2, sort_keys=True))
        seconds[system] = round(time.perf_counter() - started, 3)
    ctx.write_file(folder / CHUNKS, "chunks", chunks)
    ctx.write_file(folder / "artifacts/chunk/quarantine.parquet", "quarantine",
                   pa.Table.from_pylist([vars(b) for b in p.bad], schema=SCHEMAS["quarantine"]))
    spec = {**p.spec, "models": models_of(folder, p.spec)}
    (folder / SYSTEM_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"chunks": chunks.num_rows, "rechunked_documents": len(todo), "new_chunks": new_chunks.num_rows,
            "indexes": stats, "seconds": seconds}


def build_index(ctx: StageContext, config: Config, spec: dict[str, Any], out: Path, chunks: pa.Table,
                new_rows: list[dict[str, Any]], removed: list[str], old_index: Path | None,
                encoders: ProjectEncoders) -> dict[str, Any]:
    """One index of the served system: updated from ``old_index`` by the change, or built from all ``chunks``."""
    icfg, kind, threads = config.section("index"), spec["kind"], ctx.threads
    rows = new_rows if old_index else chunks.to_pylist()
    if kind == "faiss":  # every current chunk's vector from the row cache: only new chunks are encoded
        encoder = encoders.dense_encoder(spec["model"], icfg.max_length, spec.get("precision", "float32"))
        vectors = encoder.encode_chunks(chunks.select(["chunk_id", "title", "text", "content_hash"]).to_pylist(),
                                        desc=f"encode {out.name}")
        meta = build_faiss_folder(vectors, chunks.column("chunk_id").to_pylist(), out,
                                  spec.get("faiss") or icfg.faiss.as_params(),  # the system's own, else index.faiss
                                  spec["model"], icfg.query_max_length, ctx.seed, threads, encoder.precision)
        recall = {"recall_at_10_vs_flat": meta["recall_at_10_vs_flat"]} if "recall_at_10_vs_flat" in meta else {}
        return {"documents": chunks.num_rows, "encoded": encoder.cache_misses, "from_cache": encoder.cache_hits,
                "faiss": meta["faiss_type"], **recall}
    if kind == "impact":
        encoder = encoders.splade_encoder(spec["model"], icfg.max_length)
        vectors = encoder.encode_chunks(rows, icfg.impact_scale, desc=f"encode {out.name}")
        docs, build_delta = zip([r["chunk_id"] for r in rows], vectors, strict=True), build_impact_index
        meta = {"kind": "impact", "model": spec["model"], "scale": icfg.impact_scale,
                "query_max_length": icfg.query_max_length}
    else:
        docs, build_delta = ((r["chunk_id"], passage_text(r["title"], r["text"])) for r in rows), build_lucene_index
        meta = {"kind": "bm25", "expansions": None}
    if old_index is None:
        n = build_delta(docs, out, threads=threads)
        write_system(out, meta)
        return {"deleted": 0, "added": n, "documents": n}
    ctx.use_input(old_index, "index")
    link_index(old_index, out)  # its system.json too: same params (else the build key changed: a full build)
    return update_lucene_index(out, removed, docs, threads=threads, build=build_delta)


def models_of(folder: Path, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The models the served indexes were built with (name, sha256), from their provenance."""
    seen: dict[str, dict[str, Any]] = {}
    for system in spec["plan"]["systems"]:
        path = folder / INDEXES / system / artifacts.DIR_PROVENANCE
        if path.exists():
            for model in json.loads(path.read_text(encoding="utf-8")).get("models", []):
                seen.setdefault(model["name"], {k: model.get(k) for k in ("name", "sha256", "source")})
    return list(seen.values())


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
    """Score the new version as the whole served system (its plan, fusion included) on the corpus's judgments, or,
    for a corpus without them, on the experiment's synthetic test set (the gate then keeps a version from losing
    its own queries' documents); None: neither."""
    from irforge.corpus import load_qrels, load_queries
    from irforge.evaluation import score

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
    spec = json.loads((folder / SYSTEM_SPEC).read_text(encoding="utf-8"))
    spec["plan"]["depth"] = cfg.eval_depth
    service = SearchService(folder, spec, root / config.runtime.cache_dir, threads=_ctx(root, config).threads)
    try:
        searched = service.searcher.search(queries)
    finally:
        service.close()
    means, _ = score(searched.runs[spec["plan"]["target"]], qrels, cfg.measures)
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

    served = serving.manifest(root, p.name, p.previous) if p.previous else None
    held = gate(config, served, metrics)
    manifest = {
        "version": name, "name": p.name, "system": p.system, "mode": p.mode, "reason": p.reason,
        "changes": p.changes.summary(), "served_before": p.previous, "build_key": build_key(config, p.spec),
        "incremental_since_full": 0 if p.mode == "full" else (served or {}).get("incremental_since_full", 0) + 1,
        "created_at": created_at(), "metrics": metrics, "held": held, **stats,
    }
    (folder / serving.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    serving.commit_version(root, p.name, name, folder)
    return held


def serve_version(root: str | Path, config: Config, name: str, version: str, held: str | None) -> dict[str, Any]:
    """Serve ``version`` (atomic switch) and prune old versions, unless the gate held it back."""
    if held:
        log.warning("reindex %s: %s built but NOT served: %s", name, version, held)
        return {"served": serving.served_version(root, name), "held": held}
    serving.switch(root, name, version)
    removed = serving.prune(root, name, config.section("reindex").keep)
    return {"served": version, "pruned": removed}
