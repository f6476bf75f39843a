"""What a passage looks like to every model and index, and the content hashes of texts.

One definition, used everywhere a chunk becomes text: the BM25 index (plus its doc2query expansion), the dense
and SPLADE indexes, the shared encoder of filter and mine, the trainers, and the near-copy test of query
cleaning. (Before there were four, and filter and mine ranked dense hits on a different string than the dense
index and the trainers used.)
"""

from __future__ import annotations

import hashlib

# Changes whenever :func:`passage_text` does: cached vectors of an older definition must not be reused.
PASSAGE_TEXT_VERSION = 2


def passage_text(title: str, text: str, expansion: str = "") -> str:
    """The title, then the text (the title once: a text that already starts with it is not given it twice),
    then the expansion (doc2query queries), one per line."""
    head = text if not title or text.startswith(title) else f"{title}\n{text}"
    return f"{head}\n{expansion}" if expansion else head


def sha256_text(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
