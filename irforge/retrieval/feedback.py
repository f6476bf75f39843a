"""Pseudo-relevance feedback: search again with a query moved towards the top documents of a first run.

- **Vector Rocchio** for dense (faiss) systems: ``q' = alpha * q + beta * mean(d_1..d_k)``, renormalised, where
  each ``d_i`` is the vector of the feedback document's passage closest to the query (the passage that put the
  document in the run, under max-aggregation). The feedback run may be the system's own or any other run, a
  fusion for example: the dense leg then learns from what BM25 found too (Li et al., TOIS 2023, on vector PRF
  for dense retrievers).
- **RM3 / Rocchio for BM25** are pyserini's own (``LuceneSearcher.set_rm3`` / ``set_rocchio``), on the
  system's own top documents: see :meth:`irforge.retrieval.lucene.BM25Retriever.use_feedback`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from irforge.retrieval.dense import FaissRetriever
from irforge.retrieval.runs import Run, doc_id_of


class VectorRocchio:
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
                moved = self.alpha * vectors[i] + self.beta * np.mean(passages, axis=0)
                vectors[i] = moved / max(float(np.linalg.norm(moved)), 1e-12)
        return vectors

    def closest_passage(self, query: np.ndarray, doc: str) -> np.ndarray:
        passages = np.stack([self.retriever.vector(row) for row in self.rows_of[doc]])
        return passages[int(np.argmax(passages @ query))]

    def search(self, queries: dict[str, str], feedback: Run, k: int) -> Run:
        """Chunk hits of ``queries`` moved towards their top documents in ``feedback`` (a document run)."""
        return self.retriever.search_vectors(self.query_vectors(queries, feedback), list(queries), k)

    def given(self, feedback: Run) -> _WithFeedback:
        """A retriever (``search(queries, k)``) that takes its feedback documents from ``feedback``."""
        return _WithFeedback(self, feedback)


class _WithFeedback:
    def __init__(self, rocchio: VectorRocchio, feedback: Run):
        self.rocchio, self.feedback = rocchio, feedback

    def search(self, queries: dict[str, str], k: int) -> Run:
        return self.rocchio.search(queries, self.feedback, k)

    def close(self) -> None:
        pass
