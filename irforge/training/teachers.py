"""Teachers: relevance scores for (query, passage) pairs, the pseudo-labels a student is distilled from (GPL,
Wang et al. 2022: a teacher's score margins, not the binary "this query came from this passage", carry the
gain; a generated query's own passage is not always its best match, and a mined "negative" may be relevant).

Every teacher scores the candidates of a query (its positive and its mined negatives). Raw scores of different
teachers live on different scales (cosine, BM25, logits), so each is z-normalised within the query's candidates
before a weighted mixture combines them: the combined score is what students learn from.

Kinds:
- ``bi-encoder``: cosine of a sentence-transformers model (a stronger one than the student, all-mpnet-base-v2).
  With ``feedback`` the query vector is first moved (Rocchio) towards the top passages of the fusion of BM25 and
  this model over the whole corpus, as the evaluate stage's ``dense-zs-prf`` system does: the teacher is then the
  zero-shot ensemble with feedback, the strongest untrained system, not a plain bi-encoder.
- ``splade``: dot product of SPLADE vectors.
- ``bm25``: Lucene BM25 of the query against the passage, with the index's collection statistics.
- ``cross-encoder``: a sentence-transformers CrossEncoder named by folder or hub id (none is embedded).
- ``qlm``: query likelihood under a causal LM (:mod:`irforge.generation.likelihood`): mean log P(query | passage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from irforge.config import Section
from irforge.retrieval import Run, bm25_pair_scores, reciprocal_rank_fusion, rocchio
from irforge.runtime import map_calls

log = logging.getLogger(__name__)

KINDS = ("bi-encoder", "splade", "bm25", "cross-encoder", "qlm")
Pairs = list[tuple[str, str]]  # (query text, passage id)


class TeacherFeedback(Section):
    """Rocchio feedback for a bi-encoder teacher, at passage level: ``q' = alpha q + beta mean(top passages)``."""
    docs: int = Field(3, ge=1)        # top passages of the feedback ranking the query moves towards
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(1.0, ge=0)
    bm25: bool = True                 # feedback ranking: rrf(bm25 + this model) over all chunks; false = its own
    depth: int = Field(100, ge=1)     # passages each leg ranks before the fusion
    rrf_k: int = Field(60, ge=1)


class TeacherConfig(Section):
    kind: Literal["bi-encoder", "splade", "bm25", "cross-encoder", "qlm"]
    model: str | None = None  # bi-encoder, splade, cross-encoder, qlm: pkg: name, folder or hub id
    weight: float = Field(1.0, ge=0)  # share in the combined score (after per-query z-normalisation)
    max_length: int = Field(256, gt=0)  # passage tokens read
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # qlm: auto = bfloat16 where the CPU has native bf16
    # bi-encoder: float32, or bfloat16 weights (auto: where the CPU has native bf16; EmbeddingGemma 3x faster)
    precision: Literal["auto", "float32", "bfloat16"] = "float32"
    feedback: TeacherFeedback | None = None  # bi-encoder: Rocchio feedback before scoring (null = none)

    @model_validator(mode="after")
    def _model_when_needed(self) -> TeacherConfig:
        if self.kind != "bm25" and not self.model:
            raise ValueError(f"a {self.kind} teacher needs a model (pkg: name, folder or hub id)")
        if self.feedback is not None and self.kind != "bi-encoder":
            raise ValueError(f"feedback is for bi-encoder teachers; a {self.kind} teacher takes none")
        return self


def zscore(scores: np.ndarray) -> np.ndarray:
    """Scores standardised within one query's candidates (all equal: all 0)."""
    std = float(scores.std())
    return (scores - scores.mean()) / std if std > 1e-12 else np.zeros_like(scores)


def combine(raw: dict[str, dict[str, np.ndarray]], weights: dict[str, float]) -> dict[str, np.ndarray]:
    """``{teacher: {query_id: raw scores}}`` -> ``{query_id: weighted sum of z-scores}`` (weights sum to 1)."""
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("teach.teachers: at least one teacher needs a weight above 0")
    queries = next(iter(raw.values()))
    return {q: sum(weights[t] / total * zscore(raw[t][q]) for t in raw) for q in queries}


def agreement(scores: dict[str, np.ndarray]) -> float:
    """Share of queries whose positive (candidate 0) the scores rank first (ties count against it)."""
    if not scores:
        return 0.0
    return float(np.mean([bool(s[0] > s[1:].max()) if len(s) > 1 else True for s in scores.values()]))


def off_topic(scores: dict[str, dict[str, float]], positives: dict[str, str], max_rank: int) -> set[str]:
    """Queries whose own passage (``positives[query_id]``) the scores (query id -> chunk id -> score) rank below
    ``max_rank`` among the candidates (ties count against it): the topicality cut."""
    dropped = set()
    for qid, own in positives.items():
        candidates = scores.get(qid, {})
        if own in candidates and sum(s >= candidates[own] for c, s in candidates.items() if c != own) >= max_rank:
            dropped.add(qid)
    return dropped


def bi_encoder_scorer(encoder, feedback: TeacherFeedback | None = None,
                      lexical: Callable[[dict[str, str], int], Run] | None = None):
    """Cosine teacher; with ``feedback``, the query vectors are moved first (``lexical``: the BM25 leg's search)."""
    def score(queries: dict[str, str], candidates: dict[str, list[str]], chunks: dict[str, dict]) -> dict[str, np.ndarray]:
        ids = sorted(chunks) if feedback else sorted({c for cs in candidates.values() for c in cs})
        matrix = encoder.encode_chunks([chunks[c] for c in ids], desc="teacher: passages")
        qvectors = encoder.encode_queries(queries, desc="teacher: queries")
        if feedback:
            qvectors = rocchio_moved(qvectors, list(queries), matrix, ids, feedback,
                                     lexical(queries, feedback.depth) if feedback.bm25 and lexical else None)
        vectors = dict(zip(ids, matrix, strict=True))
        return {q: np.array([float(qvectors[i] @ vectors[c]) for c in candidates[q]])
                for i, q in enumerate(queries)}
    return score


def rocchio_moved(qvectors: np.ndarray, query_ids: list[str], passages: np.ndarray, passage_ids: list[str],
                  feedback: TeacherFeedback, lexical: Run | None) -> np.ndarray:
    """Each query vector moved towards the mean of the top ``feedback.docs`` passages of its feedback ranking:
    the model's own exact top ``depth`` over ``passages``, fused by RRF with ``lexical`` (a chunk run) if given."""
    import faiss

    index = faiss.IndexFlatIP(passages.shape[1])
    index.add(np.ascontiguousarray(passages, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(qvectors, dtype=np.float32), min(feedback.depth, len(passage_ids)))
    own: Run = {q: [(passage_ids[r], float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0]
                for i, q in enumerate(query_ids)}
    ranking = reciprocal_rank_fusion([own, lexical], feedback.rrf_k, feedback.depth) if lexical is not None else own
    row_of = {c: i for i, c in enumerate(passage_ids)}
    moved = np.array(qvectors, dtype=np.float32, copy=True)
    for i, q in enumerate(query_ids):
        top = [row_of[c] for c, _ in ranking.get(q, []) if c in row_of][:feedback.docs]
        if top:
            moved[i] = rocchio(moved[i], passages[top], feedback.alpha, feedback.beta)
    return moved


def splade_scorer(encoder, passage_text: Callable[[dict], str]):
    def score(queries: dict[str, str], candidates: dict[str, list[str]], chunks: dict[str, dict]) -> dict[str, np.ndarray]:
        ids = sorted({c for cs in candidates.values() for c in cs})
        vectors = dict(zip(ids, encoder.encode([passage_text(chunks[c]) for c in ids], 1.0, desc="teacher: passages"),
                           strict=True))
        qvectors = encoder.encode(list(queries.values()), 1.0, desc="teacher: queries")
        return {q: np.array([sum(w * vectors[c].get(t, 0.0) for t, w in qvectors[i].items()) for c in candidates[q]])
                for i, q in enumerate(queries)}
    return score


def bm25_scorer(index_dir, k1: float, b: float):
    def score(queries: dict[str, str], candidates: dict[str, list[str]], chunks: dict[str, dict]) -> dict[str, np.ndarray]:
        return bm25_pair_scores(index_dir, queries, candidates, k1, b)
    return score


def per_query_scorer(model: Any, passage_text: Callable[[dict], str], desc: str):
    """A teacher from a pair scorer (cross-encoder, query likelihood: ``model.score(query, passages)``) that reads
    one query's passages at a time (on a Dask worker, queries spread over the cluster)."""
    def scorer(queries: dict[str, str], candidates: dict[str, list[str]], chunks: dict[str, dict]) -> dict[str, np.ndarray]:
        calls = [(queries[q], [passage_text(chunks[c]) for c in candidates[q]]) for q in queries]
        return dict(zip(queries, map_calls(model, "score", calls, desc=desc, unit="query"), strict=True))
    return scorer


def describe(name: str, cfg: TeacherConfig) -> dict[str, Any]:
    return {"teacher": name, "kind": cfg.kind, "model": cfg.model, "weight": cfg.weight,
            "feedback": cfg.feedback.as_params() if cfg.feedback else None}
