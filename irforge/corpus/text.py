"""What a passage looks like to every model and index, and the content hashes of texts.

One definition, used everywhere a chunk becomes text: the BM25 index (plus its doc2query expansion), the dense
and SPLADE indexes, the shared encoder of filter and mine, the trainers, and the near-copy test of query
cleaning. (Before there were four, and filter and mine ranked dense hits on a different string than the dense
index and the trainers used.)
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass

# Changes whenever :func:`passage_text` does: cached vectors of an older definition must not be reused.
PASSAGE_TEXT_VERSION = 2


def passage_text(title: str, text: str, expansion: str = "") -> str:
    """The title, the text and the expansion (doc2query queries), one per line, as BEIR's and pyserini's
    reference runs concatenate them (so numbers compare with published ones). A text that already starts with
    its title keeps both: that is how the collection gave them."""
    return "\n".join(part for part in (title, text, expansion) if part)


def sha256_text(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- bytes of a text file

BOM = codecs.BOM_UTF8  # what Windows editors and spreadsheets put before UTF-8 text


def without_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark (the first line of a file read line by line)."""
    return data[len(BOM):] if data.startswith(BOM) else data


@dataclass
class NotUtf8(ValueError):
    """Bytes that are not UTF-8: where, in the file as it is on disk."""

    offset: int  # 0-based byte offset of the first bad byte (the byte-order mark counted)
    line: int  # 1-based line it is on


def decode_utf8(data: bytes) -> str:
    """A whole file's bytes as text: a byte-order mark dropped, CRLF line ends read as ``\n``; bytes that are not
    UTF-8 raise :class:`NotUtf8` naming where they are."""
    skip = len(data) - len(without_bom(data))
    try:
        return data[skip:].decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        at = skip + e.start
        raise NotUtf8(at, data[:at].count(b"\n") + 1) from e
