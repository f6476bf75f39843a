"""Cleaning of generated queries, shared by doc2query and synthesize.

Small LLMs echo the prompt ("Query: ...", "1. ...", quotes), ramble, or copy the passage. Each raw sample is
normalised (:func:`strip_echo`), then judged by the rules below, in order; the first rule that fails names
the reason. Dropped rows stay in the artifact with ``kept = false`` and that reason: nothing is lost silently.

- ``empty``: nothing left after stripping;
- ``too_short`` / ``too_long``: fewer than ``min_words`` or more than ``max_words`` words (or ``max_chars``);
- ``chatter``: the model talks about the task instead of writing a query (a phrase of ``chatter``, e.g.
  "this passage", "here is", "I'm happy", appears as whole words);
- ``copies_passage``: more than ``max_overlap`` of the query's word n-grams occur in the passage (a query
  that is a sentence or the title of its passage teaches nothing and is trivially easy for BM25);
- ``duplicate``: the same query (case and punctuation aside) was already kept for this chunk.
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import Field

from irforge.config import Section

REASONS = ("empty", "too_short", "too_long", "chatter", "copies_passage", "duplicate")

_PREFIX = re.compile(
    r"^\s*(?:(?:example\s*\d+\s*[:.)-]\s*)|(?:(?:relevant|good|bad|search|generated|short|keyword)?\s*"
    r"(?:search\s+)?(?:query|queries|question|keywords?)\s*\d*\s*[:=-]\s*)|(?:q\s*\d*\s*[:.)]\s+)|"
    r"(?:\(?\d{1,2}[.)]\s+)|(?:[-*\u2022\u2013]\s+)|(?:#+\s*))",
    re.IGNORECASE,
)
# Phrases in which a model talks about the task instead of writing a query: multi-word on purpose, since single
# words ("query", "help", "answer", "passage") are a domain's own vocabulary too. Checked against human queries
# (docs/generation.md, "Cleaning"): none of Cranfield's 225 or MEDLINE's 30 matches, and 0 of CISI's 76.
CHATTER = ("this passage", "the passage", "the above passage", "the given passage", "this text", "the given text",
           "the query is", "this query", "a search query", "the search query", "search query for", "here is",
           "here are", "here's", "i'm happy", "i am happy", "i'm glad", "i am glad", "i'd be happy", "happy to help",
           "glad to help", "i can help", "i will help", "let me know", "as an ai", "the answer is", "the answer to",
           "what is the answer", "this answer", "the original sentence", "this sentence", "the sentence",
           "this question")
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb*"
_WORD = re.compile(r"\w+")


class CleaningRules(Section):
    """The ``cleaning`` block of a query-generation section."""

    min_words: int = Field(2, ge=1)
    max_words: int = Field(20, ge=1)
    max_chars: int = Field(200, ge=1)
    ngram: int = Field(3, ge=1)  # n-gram length for the near-copy test (shorter queries use their own length)
    max_overlap: float = Field(0.75, ge=0, le=1)  # drop when more than this share of its n-grams is in the passage
    chatter: list[str] = Field(default_factory=lambda: list(CHATTER))


def strip_echo(text: str) -> str:
    """Remove echoed labels, numbering, bullets and surrounding quotes; keep the first line."""
    text = text.strip().split("\n", 1)[0].strip()
    while True:
        before = text
        text = _PREFIX.sub("", text, count=1).strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        text = text.strip(_QUOTES + " ").strip()
        if text == before:
            return text


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_overlap(query: str, passage: str, n: int) -> float:
    """Share of the query's word n-grams found in the passage (n shrinks to the query length)."""
    q = words(query)
    if not q:
        return 0.0
    n = max(1, min(n, len(q)))
    grams = Counter(tuple(q[i : i + n]) for i in range(len(q) - n + 1))
    p = words(passage)
    have = {tuple(p[i : i + n]) for i in range(len(p) - n + 1)}
    return sum(c for g, c in grams.items() if g in have) / sum(grams.values())


def judge(query: str, passage: str, rules: CleaningRules, seen: set[str]) -> str | None:
    """The reason to drop ``query`` (already stripped), or None to keep it. Adds kept queries to ``seen``."""
    if not query:
        return "empty"
    n_words = len(words(query))
    if n_words < rules.min_words:
        return "too_short"
    if n_words > rules.max_words or len(query) > rules.max_chars:
        return "too_long"
    padded = f" {' '.join(words(query))} "  # phrases match on whole words ("i'm" = "i m", as is "I’m")
    if any(f" {' '.join(words(p))} " in padded for p in rules.chatter):
        return "chatter"
    if ngram_overlap(query, passage, rules.ngram) > rules.max_overlap:
        return "copies_passage"
    key = " ".join(words(query))
    if key in seen:
        return "duplicate"
    seen.add(key)
    return None


def clean_chunk(raw: list[str], passage: str, rules: CleaningRules) -> list[tuple[str, str | None]]:
    """(cleaned text, reason or None) for each raw sample of one chunk, in order."""
    seen: set[str] = set()
    out = []
    for text in raw:
        cleaned = strip_echo(text)
        out.append((cleaned, judge(cleaned, passage, rules, seen)))
    return out
