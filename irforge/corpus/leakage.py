"""The leakage rule: a generated text that (nearly) repeats an evaluation query must reach neither training nor an
evaluated index, or every figure measured on those queries is inflated.

A text leaks when its word set equals an evaluation query's, or their Jaccard similarity reaches
``leakage.jaccard``, or (where the caller has the shared encoder's vectors) their cosine reaches
``leakage.cosine``. The filter, doc2query and the audit use this one function.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"\w+")


def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def leak_reasons(texts: list[str], eval_queries: dict[str, str], jaccard_at: float | None,
                 cosines: np.ndarray | None = None, cosine_at: float | None = None) -> list[str | None]:
    """Per text: None, or 'leakage: ...' naming the evaluation query it duplicates (``cosines``: texts x
    evaluation queries, in ``eval_queries`` order)."""
    eval_ids = list(eval_queries)
    eval_words = [words(eval_queries[q]) for q in eval_ids]
    out: list[str | None] = []
    for i, text in enumerate(texts):
        mine = words(text)
        reason = None
        for j, theirs in enumerate(eval_words):
            sim = jaccard(mine, theirs)
            if sim == 1.0 or (jaccard_at is not None and sim >= float(jaccard_at)):
                reason = f"leakage: eval query {eval_ids[j]} (word jaccard {sim:.2f})"
                break
        if reason is None and cosines is not None and cosine_at is not None and len(eval_ids):
            j = int(np.argmax(cosines[i]))
            if cosines[i, j] >= cosine_at:
                reason = f"leakage: eval query {eval_ids[j]} (dense cosine {cosines[i, j]:.3f})"
        out.append(reason)
    return out
