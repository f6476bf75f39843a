"""Pseudo-relevance feedback: search again with a query moved towards the top documents of a first run.

- **Vector Rocchio** for dense (faiss) systems: ``q' = alpha * q + beta * mean(d_1..d_k)``, renormalised, where
  each ``d_i`` is the vector of the feedback document's passage closest to the query (the passage that put the
  document in the run, under max-aggregation). The feedback run may be the system's own or any other run, a
  fusion for example: the dense leg then learns from what BM25 found too (Li et al., TOIS 2023, on vector PRF
  for dense retrievers).
- **Sparse Rocchio** for SPLADE (impact) systems: the same on ``{token: impact}`` vectors, the feedback passages'
  vectors read through the encoder's row cache (the index stage filled it), the moved query rounded to integer
  impacts and cut to its heaviest ``MAX_QUERY_TERMS`` terms (Lucene's clause limit).
- **RM3 / Rocchio for BM25** are pyserini's own (``LuceneSearcher.set_rm3`` / ``set_rocchio``), on the
  system's own top documents: see :meth:`irforge.retrieval.lucene.BM25Retriever.use_feedback`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from irforge.retrieval.dense import FaissRetriever
from irforge.retrieval.lucene import MAX_QUERY_TERMS, ImpactRetriever
from irforge.retrieval.runs import Run, doc_id_of


def rocchio(query: np.ndarray, passages: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """A unit query vector moved towards its feedback passages (rows): ``alpha q + beta mean(passages)``, renormalised."""
    moved = alpha * query + beta * passages.mean(axis=0)
    return moved / max(float(np.linalg.norm(moved)), 1e-12)


class Rocchio:
    """What both Rocchio kinds share: search with moved query vectors, feedback from any document run."""

    retriever: Any

    def query_vectors(self, queries: dict[str, str], feedback: Run) -> Any:
        raise NotImplementedError

    def search(self, queries: dict[str, str], feedback: Run, k: int) -> Run:
        """Chunk hits of ``queries`` moved towards their top documents in ``feedback`` (a document run)."""
        return self.retriever.search_vectors(self.query_vectors(queries, feedback), list(queries), k)

    def given(self, feedback: Run) -> _WithFeedback:
        """A retriever (``search(queries, k)``) that takes its feedback documents from ``feedback``."""
        return _WithFeedback(self, feedback)


class VectorRocchio(Rocchio):
    """Rocchio feedback on a faiss system's vectors, from the top ``docs`` documents of any run."""

    def __init__(self, retriever: FaissRetriever, docs: int = 5, alpha: float = 1.0, beta: float = 0.5):
        self.retriever, self.docs, self.alpha, self.beta = retriever, docs, alpha, beta
        self.rows_of: dict[str, list[int]] = defaultdict(list)
        for row, chunk_id in enumerate(retriever.ids):
            self.rows_of[doc_id_of(chunk_id)].append(row)

    def query_vectors(self, queries: dict[str, str], feedback: Run) -> np.ndarray:
        vectors = self.retriever.query_vectors(list(queries.values()))  # encoded once with the system's own search
        for i, qid in enumerate(queries):
            passages = [self.closest_passage(vectors[i], doc) for doc, _ in feedback.get(qid, [])[:self.docs]
                        if doc in self.rows_of]
            if passages:
                vectors[i] = rocchio(vectors[i], np.stack(passages), self.alpha, self.beta)
        return vectors

    def closest_passage(self, query: np.ndarray, doc: str) -> np.ndarray:
        passages = np.stack([self.retriever.vector(row) for row in self.rows_of[doc]])
        return passages[int(np.argmax(passages @ query))]


SparseVector = dict[str, int]


def sparse_dot(a: SparseVector, b: SparseVector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return float(sum(w * b.get(t, 0) for t, w in a.items()))


class SparseRocchio(Rocchio):
    """Rocchio feedback on a SPLADE (impact) system, from the top ``docs`` documents of any run. ``passages``:
    each document's chunk rows (chunk_id, title, text, content_hash), whose vectors are read once, through the
    encoder's row cache."""

    def __init__(self, retriever: ImpactRetriever, passages: dict[str, list[dict]], docs: int = 5,
                 alpha: float = 1.0, beta: float = 0.5):
        if not passages:
            raise ValueError("SPLADE feedback needs the chunks (the passages of the feedback documents)")
        self.retriever, self.docs, self.alpha, self.beta = retriever, docs, alpha, beta
        rows = [row for doc_rows in passages.values() for row in doc_rows]
        vectors = retriever.encoder.encode_chunks(rows, retriever.scale, desc="feedback passages")
        self.vectors_of: dict[str, list[SparseVector]] = defaultdict(list)
        for row, vector in zip(rows, vectors, strict=True):
            self.vectors_of[row["doc_id"]].append(vector)

    def query_vectors(self, queries: dict[str, str], feedback: Run) -> list[SparseVector]:
        vectors = self.retriever.encode_queries(list(queries.values()))
        for i, qid in enumerate(queries):
            passages = [max(self.vectors_of[doc], key=lambda v: sparse_dot(vectors[i], v))
                        for doc, _ in feedback.get(qid, [])[:self.docs] if doc in self.vectors_of]
            if passages:
                moved: dict[str, float] = defaultdict(float)
                for t, w in vectors[i].items():
                    moved[t] += self.alpha * w
                for p in passages:
                    for t, w in p.items():
                        moved[t] += self.beta * w / len(passages)
                # integer impacts like the index's; the heaviest terms first (ties by token, for determinism)
                kept = sorted(((t, round(w)) for t, w in moved.items() if round(w) > 0), key=lambda tw: (-tw[1], tw[0]))
                vectors[i] = dict(kept[:MAX_QUERY_TERMS])
        return vectors


class _WithFeedback:
    def __init__(self, rocchio: Rocchio, feedback: Run):
        self.rocchio, self.feedback = rocchio, feedback

    def search(self, queries: dict[str, str], k: int) -> Run:
        return self.rocchio.search(queries, self.feedback, k)

    def close(self) -> None:
        pass
