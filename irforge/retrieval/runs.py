"""Runs: a retriever maps ``{query_id: text}`` to ``{query_id: [(chunk_id, score), ...]}`` best first.

Chunk hits become document hits by :func:`chunks_to_docs` (max score per document), since judgments are per
document and ``chunk_id`` is ``<doc_id>#<passage_index>``; :func:`reciprocal_rank_fusion` fuses runs.
"""

from __future__ import annotations

Hits = list[tuple[str, float]]
Run = dict[str, Hits]


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
