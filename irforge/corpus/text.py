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
    """The title, the text and the expansion (doc2query queries), one per line, as BEIR's and pyserini's
    reference runs concatenate them (so numbers compare with published ones). A text that already starts with
    its title keeps both: that is how the collection gave them."""
    return "\n".join(part for part in (title, text, expansion) if part)


def sha256_text(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
