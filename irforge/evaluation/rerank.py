"""Reranking: the top documents of a first-stage run scored again by a slower, stronger scorer.

A reranker scores (query, passage) pairs: a cross-encoder (a folder or hub id), query likelihood under a causal LM
(:class:`irforge.generation.QueryLikelihood`, the embedded LLMs work) or a bi-encoder (a second opinion from a
larger embedding model on a few candidates, without indexing the corpus with it). Judgments and runs are per
document, so a document is scored by its best passage; a long document's passages are first narrowed to the
``max_passages`` that share most words with the query (a cheap stand-in for "the passage that matched").

The reranked run holds the ``depth`` documents in the reranker's order (``fusion: rrf`` fuses that order with
the first stage's instead, which guards against a reranker weaker than the first stage) followed by the rest of
the first-stage run unchanged. Scores are rank-based (``n - rank``), one scale for both parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from irforge.corpus.leakage import words
from irforge.evaluation.measures import quiet_bars
from irforge.retrieval import Run
from irforge.runtime import progress

PassageScorer = Callable[[str, Sequence[dict]], np.ndarray]  # (query, chunk rows) -> one score per chunk
def choose_passages(query: str, passages: Sequence[dict], limit: int) -> list[dict]:
    """The ``limit`` passages sharing most words with the query (earlier passages first on ties), in order."""
    if len(passages) <= limit:
        return list(passages)
    terms = words(query)
    best = sorted(range(len(passages)), key=lambda i: (-len(terms & words(passages[i]["text"])), i))[:limit]
    return [passages[i] for i in sorted(best)]


def rerank_query(query: str, hits: list[tuple[str, float]], passages_of: dict[str, list[dict]], scorer: PassageScorer,
                 depth: int, max_passages: int, fusion: str = "none", rrf_k: int = 60) -> list[tuple[str, float]]:
    """One query's document hits with the top ``depth`` reordered by ``scorer`` (see the module docstring)."""
    top = [doc for doc, _ in hits[:depth]]
    candidates = [(doc, p) for doc in top for p in choose_passages(query, passages_of.get(doc, []), max_passages)]
    scores = scorer(query, [p for _, p in candidates]) if candidates else np.zeros(0)
    best: dict[str, float] = {}
    for (doc, _), value in zip(candidates, scores, strict=True):
        best[doc] = max(best.get(doc, -np.inf), float(value))
    first_rank = {doc: rank for rank, doc in enumerate(top)}
    # A document without passages (not in the chunks) keeps the bottom of the reranked part; ties keep first-stage order.
    order = sorted(top, key=lambda d: (-best.get(d, -np.inf), first_rank[d]))
    if fusion == "rrf":
        fused = {d: 1 / (rrf_k + 1 + r) + 1 / (rrf_k + 1 + first_rank[d]) for r, d in enumerate(order)}
        order = sorted(top, key=lambda d: (-fused[d], first_rank[d]))
    elif fusion != "none":
        raise ValueError(f"rerank fusion must be none or rrf, got '{fusion}'")
    ranked = order + [doc for doc, _ in hits[depth:]]
    return [(doc, float(len(ranked) - rank)) for rank, doc in enumerate(ranked)]


def rerank_run(first: Run, queries: dict[str, str], passages_of: dict[str, list[dict]], scorer: PassageScorer,
               depth: int, max_passages: int, fusion: str = "none", rrf_k: int = 60,
               desc: str = "rerank") -> tuple[Run, list[float]]:
    """The reranked document run and the reranking seconds per query (in ``queries`` order)."""
    run: Run = {}
    seconds: list[float] = []
    bar = progress(queries.items(), desc=desc, total=len(queries), unit="query")  # one bar, none inside it
    with quiet_bars():
        for qid, text in bar:
            started = time.perf_counter()
            run[qid] = rerank_query(text, first.get(qid, []), passages_of, scorer, depth, max_passages, fusion, rrf_k)
            seconds.append(time.perf_counter() - started)
    return run, seconds
