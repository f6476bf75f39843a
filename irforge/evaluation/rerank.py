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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from irforge.corpus.leakage import words
from irforge.evaluation.measures import quiet_bars
from irforge.generation import Generator, QueryLikelihood  # at the top: a stage that reranks depends on this code
from irforge.retrieval import Run
from irforge.runtime import progress

PassageScorer = Callable[[str, Sequence[dict]], np.ndarray]  # (query, chunk rows) -> one score per chunk


def group_passages(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Each document's chunk rows in passage order (what a reranker reads and a search result shows)."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["doc_id"], []).append(row)
    for passages in grouped.values():
        passages.sort(key=lambda r: r["passage_index"])
    return grouped


def open_scorer(kind: str, model: str, max_length: int, dtype: str, resolve: Callable[[str], Any],
                dense_encoder: Callable[[str, int], Any], threads: int | None) -> PassageScorer:
    """A reranker's (query, chunks) -> scores function: ``qlm`` (query likelihood under a causal LM),
    ``cross-encoder`` or ``bi-encoder``. ``resolve`` and ``dense_encoder`` come from whoever records the models
    (a stage context, or a served version's encoders)."""
    from irforge.corpus import passage_text
    from irforge.models import CrossEncoderScorer, resolve_precision

    text = lambda chunks: [passage_text(c["title"], c["text"]) for c in chunks]  # noqa: E731
    if kind == "qlm":
        generator = Generator(resolve(model), threads=threads, chat_template="never", dtype=resolve_precision(dtype))
        likelihood = QueryLikelihood(generator, max_length)
        return lambda query, chunks: likelihood.score(query, text(chunks))
    if kind == "cross-encoder":
        scorer = CrossEncoderScorer(resolve(model), max_length)
        return lambda query, chunks: scorer.score(query, text(chunks))
    encoder = dense_encoder(model, max_length)
    return lambda query, chunks: encoder.encode_chunks(list(chunks)) @ encoder.encode_queries({"q": query})[0]
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
