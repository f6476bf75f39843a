"""Incremental refresh vs full rebuild of the hybrid served system, both measured in this run on one generated corpus.

The served system is the one `irforge publish` / `irforge reindex` serve: BM25 (Lucene) + dense (faiss,
``pkg:all-minilm-l6-v2``) + SPLADE (Lucene impact, ``pkg:splade-tiny``), fused by RRF
(``rrf(bm25+dense-zs+splade-zs)``). A synthetic corpus (Zipf-distributed words, seeded) gets a first full version,
built with the embedding row cache on (so the cache holds the old corpus's vectors) and served; then ``--change``
of it changes (half edited, a quarter deleted, a quarter new) and the new corpus is indexed twice:

- full rebuild: chunk everything, build a fresh Lucene index, encode every chunk with MiniLM (faiss) and SPLADE
  (impact index); built with ``runtime.reuse_vectors: false``, so the faiss encoder neither reads nor writes the
  vector cache: what a rebuild costs without irforge's cache;
- incremental refresh (the default ``reuse_vectors: true``, against the served first version): diff by content
  hash, re-chunk the changed documents, update hard-linked copies of the two Lucene indexes (SPLADE encodes only the
  new chunks), rebuild faiss from cached vectors (only new chunks are encoded).

Both run the same code as `irforge reindex` (irforge/ops/reindex.py: plan, build, commit), with the JVM and the models
already loaded by the first version; the evaluation step is left out of both (the generated corpus has no judgments:
metrics None). The two versions are then searched through `SearchService` (the served path, RRF included) with
~200 generated queries (4 words of a document each) and compared: identical top-10 doc lists, identical chunks.
The machine's load is printed with the timings: a busy machine makes every number slower, the full side most.

Cost: the two full builds encode every chunk twice (MiniLM and SPLADE, 256-token chunks, ~2 per document) and are
nearly all of the run: the default 1000 documents took 6.6 min on 2 idle cores (load average 0.10 at start;
incremental 2.66 s vs full rebuild 177.93 s, 1.5%), ``--docs 300`` 2.5 min on 2 cores under a load average of ~2.5.

    HF_HUB_OFFLINE=1 IRFORGE_PROGRESS=0 .venv/bin/python benchmarks/bench_refresh.py              # 1000 docs
    HF_HUB_OFFLINE=1 IRFORGE_PROGRESS=0 .venv/bin/python benchmarks/bench_refresh.py --docs 300   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import conditions  # puts the project on sys.path
import yaml

from irforge.config import Config, load_yaml
from irforge.contract import artifacts, owned
from irforge.engine import load_config
from irforge.ops import reindex as steps
from irforge.ops import serving
from irforge.ops.search import CHUNKS, SearchService
from irforge.runtime import thread_share

PROJECT = Path(__file__).resolve().parents[1]
NAME = "main"  # serve.name
SYSTEM = "rrf(bm25+dense-zs+splade-zs)"
INDEXES = ("bm25", "dense-zs", "splade-zs")
OVERRIDES: dict[str, Any] = {
    "reindex.keep": 10,
    "serve.name": NAME,
    "serve.system": SYSTEM,
    "index.systems": {"bm25": {"kind": "bm25"},
                      "dense-zs": {"kind": "faiss", "model": "pkg:all-minilm-l6-v2"},
                      "splade-zs": {"kind": "impact", "model": "pkg:splade-tiny"}},
    "evaluate.systems": list(INDEXES),
    "evaluate.fusions": [list(INDEXES)],
    "evaluate.feedback": {},
    "evaluate.compare": [],
    "evaluate.rerank": {},
}


def make_corpus(n: int, rng: random.Random, words: int = 120) -> dict[str, dict[str, str]]:
    vocab = [f"w{i}" for i in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    docs = {}
    for i in range(n):
        body = rng.choices(vocab, weights, k=words)
        sentences = [" ".join(body[j : j + 15]) + "." for j in range(0, words, 15)]
        docs[f"d{i}"] = {"title": " ".join(rng.choices(vocab, weights, k=5)), "text": " ".join(sentences)}
    return docs


def write_corpus(docs: dict[str, dict[str, str]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, d in docs.items():
            f.write(json.dumps({"_id": doc_id, **d}) + "\n")


def timed_build(root: Path, config: Config, full: bool, serve: bool) -> tuple[float, dict[str, Any], Path]:
    """One version of the served system, as `irforge reindex` builds it (evaluation left out: no judgments)."""
    started = time.perf_counter()
    p = steps.plan(root, config, full=full)
    version, folder = serving.begin_version(root, NAME)
    stats = steps.build(root, config, p, folder)
    steps.commit(root, config, p, version, folder, stats, None)
    seconds = time.perf_counter() - started
    if serve:
        steps.serve_version(root, config, NAME, version, None)
    return seconds, {"mode": p.mode, **p.changes.summary(), **stats}, serving.system_dir(root, NAME) / "versions" / version


def steps_line(stats: dict[str, Any]) -> str:
    seconds = stats["seconds"]
    return "  ".join(f"{step} {seconds[step]:.2f}s" for step in ("chunk", *INDEXES))


def top10(folder: Path, cache: Path, queries: dict[str, str], threads: int) -> dict[str, list[str]]:
    service = SearchService.open_version(folder, cache, threads=threads)
    try:
        return {q: [h["doc_id"] for h in hits] for q, hits in service.search(queries, k=10).items()}
    finally:
        service.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--change", type=float, default=0.01, help="fraction of documents touched")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    os.environ.setdefault("IRFORGE_PROGRESS", "0")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars, once per model load
    rng = random.Random(args.seed)

    conditions.header(f"re-indexing after a {args.change:.0%} change of {args.docs} documents vs a full rebuild")

    root = owned.make_temp_dir(prefix="irforge-bench-refresh-")
    try:
        (root / "corpus").mkdir()
        raw = load_yaml((PROJECT / "params.yaml").read_text())
        raw["corpus"].update(path="corpus/corpus.jsonl", queries=None, qrels=None)
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        cached = load_config(root, "params.yaml", OVERRIDES)  # reuse_vectors: true (the default)
        uncached = load_config(root, "params.yaml", {**OVERRIDES, "runtime.reuse_vectors": False})
        threads = thread_share(cached.runtime.pinned_threads)
        cache = root / cached.runtime.cache_dir

        docs = make_corpus(args.docs, rng)
        write_corpus(docs, root / "corpus" / "corpus.jsonl")
        # The first version: also loads the JVM, the tokenizer and both models; fills the vector cache.
        t0, s0, _ = timed_build(root, cached, full=True, serve=True)
        print(f"corpus: {args.docs} docs, {s0['chunks']} chunks (chunk.max_tokens {cached.section('chunk').max_tokens}); "
              f"first full version {t0:.2f}s (JVM start and model loading included), threads {threads}")

        ids = list(docs)
        k = max(4, round(args.docs * args.change))
        touched = rng.sample(ids, k)
        edited, deleted = touched[: k // 2], touched[k // 2 : 3 * k // 4]
        for doc_id in edited:
            docs[doc_id]["text"] += " " + " ".join(rng.choices([f"new{i}" for i in range(100)], k=20)) + "."
        for doc_id in deleted:
            del docs[doc_id]
        fresh = make_corpus(k - len(edited) - len(deleted), rng)
        docs.update({f"n{i}": d for i, d in enumerate(fresh.values())})
        write_corpus(docs, root / "corpus" / "corpus.jsonl")

        # Full rebuild without the vector cache (not served: the incremental side diffs against the first version).
        t_full, s_full, full_dir = timed_build(root, uncached, full=True, serve=False)
        t_inc, s_inc, inc_dir = timed_build(root, cached, full=False, serve=True)
        assert s_full["mode"] == "full" and s_inc["mode"] == "incremental", (s_full["mode"], s_inc["mode"])

        same_chunks = artifacts.read_artifact(full_dir / CHUNKS, "chunks").equals(
            artifacts.read_artifact(inc_dir / CHUNKS, "chunks"))
        texts = list(docs.values())
        queries = {f"q{i}": " ".join(rng.sample(texts[i * 7 % len(texts)]["text"].split(), 4)) for i in range(200)}
        full_hits = top10(full_dir, cache, queries, threads)
        inc_hits = top10(inc_dir, cache, queries, threads)
        same = sum(full_hits[q] == inc_hits[q] for q in queries) / len(queries)
        overlap = sum(len(set(full_hits[q]) & set(inc_hits[q])) for q in queries) / sum(
            max(len(full_hits[q]), 1) for q in queries)

        ix_full, ix_inc = s_full["indexes"], s_inc["indexes"]
        print(f"after the change: {len(docs)} docs, {s_inc['chunks']} chunks")
        print(f"changed: {len(edited)} edited, {len(deleted)} deleted, {k - len(edited) - len(deleted)} added "
              f"({k / args.docs:.1%} of the corpus)")
        # With the cache off the encoder counts neither hits nor misses (0 / 0): it encodes every chunk.
        print(f"full rebuild : {t_full:7.2f}s  {steps_line(s_full)}")
        print(f"  vector cache off: dense encoded all {ix_full['dense-zs']['documents']} chunks, "
              f"splade encoded {ix_full['splade-zs']['added']}, bm25 indexed {ix_full['bm25']['added']}")
        print(f"incremental  : {t_inc:7.2f}s  {steps_line(s_inc)}")
        print(f"  re-chunked {s_inc['rechunked_documents']} docs -> {s_inc['new_chunks']} new chunks; "
              f"bm25 +{ix_inc['bm25']['added']} -{ix_inc['bm25']['deleted']} ({ix_inc['bm25']['documents']} chunks); "
              f"splade +{ix_inc['splade-zs']['added']} -{ix_inc['splade-zs']['deleted']} "
              f"({ix_inc['splade-zs']['documents']} chunks); dense encoded {ix_inc['dense-zs']['encoded']}, "
              f"from cache {ix_inc['dense-zs']['from_cache']}")
        print(f"ratio incremental / full: {t_inc / t_full:.1%}   (aim <= 10%)")
        print("  per step: " + "  ".join(
            f"{step} {s_inc['seconds'][step] / max(s_full['seconds'][step], 1e-9):.1%}" for step in ("chunk", *INDEXES)))
        print(f"chunks artifact identical to the full rebuild's: {same_chunks}")
        print(f"identical top-10 doc list ({SYSTEM}, served search) on {len(queries)} queries: {same:.1%}   "
              f"(aim >= 99%; top-10 overlap {overlap:.1%})")
        conditions.footer()
    finally:
        owned.remove(root)


if __name__ == "__main__":
    main()
