"""What a passage looks like to a model or an index, and the content hashes of texts."""

from __future__ import annotations

import hashlib


def passage_text(title: str, text: str) -> str:
    """What a neural model reads for a chunk (training and indexing alike): the title, then the text."""
    if not title or text.startswith(title):
        return text
    return f"{title}\n{text}"


def lucene_contents(title: str, text: str, expansion: str = "") -> str:
    """What a Lucene (BM25) index holds for a chunk: title, text and doc2query expansion, one per line."""
    return "\n".join(part for part in (title, text, expansion) if part)


def encoder_text(title: str, text: str) -> str:
    """What the shared dense encoder of filter and mine reads for a chunk (title on its own line)."""
    return f"{title}\n{text}" if title else text


def sha256_text(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
