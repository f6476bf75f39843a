"""Retrievers shared by the stages that search (index, filter, mine, evaluate), and run utilities.

A retriever maps ``{query_id: text}`` to ``{query_id: [(chunk_id, score), ...]}`` best first. Chunk hits are
turned into document hits by :func:`chunks_to_docs` (max score per document), since judgments are per
document and ``chunk_id`` is ``<doc_id>#<passage_index>``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from irforge.java import ensure_java

if TYPE_CHECKING:
    from irforge.encoding import DenseEncoder

log = logging.getLogger(__name__)

Hits = list[tuple[str, float]]
Run = dict[str, Hits]


class Retriever(Protocol):
    def search(self, queries: dict[str, str], k: int) -> Run: ...


def doc_id_of(chunk_id: str) -> str:
    return chunk_id.rsplit("#", 1)[0]


def rank_of(hits: Hits, chunk_id: str) -> int | None:
    """1-based rank of ``chunk_id`` in ``hits``; None when it is not there."""
    for rank, (hit, _) in enumerate(hits, start=1):
        if hit == chunk_id:
            return rank
    return None


def chunks_to_docs(hits: Hits, k: int | None = None) -> Hits:
    """Max-score aggregation of chunk hits into document hits, best first (ties by id for stability)."""
    best: dict[str, float] = {}
    for chunk_id, score in hits:
        doc = doc_id_of(chunk_id)
        if doc not in best or score > best[doc]:
            best[doc] = score
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:k] if k else ranked


def reciprocal_rank_fusion(runs: list[Run], k: int = 60, depth: int = 1000) -> Run:
    """RRF (Cormack et al. 2009): score(d) = sum over runs of 1 / (k + rank of d in that run)."""
    fused: Run = {}
    for qid in sorted(set().union(*runs)):
        scores: dict[str, float] = {}
        for run in runs:
            for rank, (doc, _) in enumerate(run.get(qid, []), start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        fused[qid] = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
    return fused


# ---------------------------------------------------------------- Lucene (BM25) through pyserini


def index_json_collection(records: Iterable[dict], index_dir: Path, collection: str, options: list[str],
                          threads: int = 2) -> int:
    """Index JSON records with Anserini's IndexCollection (what ``pyserini.index.lucene`` runs).

    The records are written as ``collection`` (JsonCollection, JsonVectorCollection, ...) in ``threads``
    shards so Anserini indexes them in parallel; ``options`` are the collection-specific flags. Returns the
    number of records indexed.
    """
    ensure_java()
    from pyserini.pyclass import autoclass  # importing pyserini puts Anserini's jar on the classpath

    with tempfile.TemporaryDirectory(prefix="irforge-jsoncoll-") as tmp:
        shards = [open(Path(tmp) / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(max(1, threads))]
        n = 0
        try:
            for n, record in enumerate(records, start=1):
                shards[n % len(shards)].write(json.dumps(record) + "\n")
        finally:
            for f in shards:
                f.close()
        args = [
            "-collection", collection,
            "-generator", "DefaultLuceneDocumentGenerator",
            "-input", tmp,
            "-index", str(index_dir),
            "-threads", str(max(1, threads)),
            *options,
            "-optimize",  # one segment: deterministic scoring order and faster search
            "-quiet",
        ]
        autoclass("io.anserini.index.IndexCollection").main(args)
    return n


def build_lucene_index(docs: Iterable[tuple[str, str]], index_dir: Path, threads: int = 2) -> int:
    """Index ``(id, contents)`` pairs for BM25 (positions and doc vectors stored). Returns the count."""
    records = ({"id": doc_id, "contents": contents} for doc_id, contents in docs)
    return index_json_collection(records, index_dir, "JsonCollection", ["-storePositions", "-storeDocvectors"],
                                 threads)


class BM25Retriever:
    def __init__(self, index_dir: Path, k1: float = 0.9, b: float = 0.4, threads: int | None = None):
        if not any(Path(index_dir).glob("segments_*")):
            raise FileNotFoundError(f"{index_dir}: not a Lucene index (run the index stage first)")
        ensure_java()
        from pyserini.search.lucene import LuceneSearcher

        self.searcher = LuceneSearcher(str(index_dir))
        self.searcher.set_bm25(k1, b)
        self.threads = threads or max(1, os.cpu_count() or 1)

    def search(self, queries: dict[str, str], k: int) -> Run:
        qids = list(queries)
        results = self.searcher.batch_search([queries[q] for q in qids], qids, k=k, threads=self.threads)
        return {qid: [(hit.docid, float(hit.score)) for hit in results.get(qid, [])] for qid in qids}

    def close(self) -> None:
        self.searcher.close()


def bm25_search(index_dir: Path, queries: dict[str, str], k: int, bm25: dict, threads: int | None = None) -> Run:
    """One batch of queries against a Lucene index with the ``bm25`` params section; the searcher is closed after."""
    retriever = BM25Retriever(index_dir, k1=float(bm25["k1"]), b=float(bm25["b"]), threads=threads)
    try:
        return retriever.search(queries, k)
    finally:
        retriever.close()


# ---------------------------------------------------------------- dense (faiss)


class DenseRetriever:
    """Exact inner-product search (faiss ``IndexFlatIP``) over L2-normalised chunk vectors: cosine ranking.

    Built from a :class:`irforge.encoding.DenseEncoder` and the chunk rows, whose vectors come from the
    encoder's cache when present. ``search`` returns chunk ids and scores best first, as BM25Retriever does.
    """

    def __init__(self, encoder: DenseEncoder, ids: list[str], vectors: np.ndarray, threads: int | None = None):
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        self.encoder = encoder
        self.ids = list(ids)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)
        self.position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}

    @classmethod
    def from_chunks(cls, encoder: DenseEncoder, chunks: list[dict], threads: int | None = None) -> DenseRetriever:
        return cls(encoder, [c["chunk_id"] for c in chunks], encoder.encode_chunks(chunks), threads)

    def search_vectors(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss scores and row positions (-1 where fewer than k chunks exist), shape (n_queries, k)."""
        k = min(k, len(self.ids))
        return self.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)

    def search(self, queries: dict[str, str], k: int) -> Run:
        if not queries:
            return {}
        scores, rows = self.search_vectors(self.encoder.encode_queries(queries), k)
        return {
            qid: [(self.ids[r], float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0]
            for i, qid in enumerate(queries)
        }
