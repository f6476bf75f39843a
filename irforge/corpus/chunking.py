"""Cutting documents into passages of at most ``max_tokens`` tokenizer tokens.

Windows end on a sentence boundary when one lies in the second half of the window; consecutive windows
overlap by ``stride`` tokens (snapped forward to a sentence start when possible). Very long sentences are cut
mid-sentence, between words (never inside a word split into sub-word tokens, unless the word alone is longer
than a window). Chunk ids are ``<doc_id>#<passage_index>``, so chunk hits aggregate to documents.
"""

from __future__ import annotations

import bisect
import re
from pathlib import Path
from typing import Any

from irforge.corpus.readers import Document
from irforge.corpus.text import sha256_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences start (always includes 0)."""
    return [0] + [m.end() for m in _SENTENCE_END.finditer(text)]


def split_windows(n_tokens: int, boundaries: list[int], max_tokens: int, stride: int,
                  words: list[int] | None = None) -> list[tuple[int, int]]:
    """Token windows ``[start, end)`` covering ``n_tokens`` tokens.

    ``boundaries`` are sorted token indices where sentences start. A window ends on the last boundary in its
    second half if there is one; the next window starts ``stride`` tokens earlier, moved forward to the first
    sentence start inside that overlap when there is one. ``words`` (sorted token indices where words start;
    None: every token) keeps the other cuts off sub-word pieces: an end moves back, a start moves back
    (a slightly larger overlap), to a word start, when that start lies inside the window.
    """
    if max_tokens <= 0:
        raise ValueError("chunk.max_tokens must be positive")
    if not 0 <= stride < max_tokens:
        raise ValueError(f"chunk.stride must be in [0, max_tokens), got {stride} with max_tokens={max_tokens}")
    windows: list[tuple[int, int]] = []
    start = prev_end = 0
    while start < n_tokens:
        end = min(start + max_tokens, n_tokens)
        if end < n_tokens:
            # An end never moves back to the previous window's end: that window would hold this one.
            i = bisect.bisect_right(boundaries, end) - 1  # last boundary <= end
            if i >= 0 and boundaries[i] > max(start + max_tokens // 2, prev_end):
                end = boundaries[i]
            else:
                end = _word_start_at_or_before(words, end, max(start, prev_end))
        windows.append((start, end))
        if end == n_tokens:
            break
        next_start = end - stride
        i = bisect.bisect_left(boundaries, next_start)  # first sentence start inside the overlap
        if i < len(boundaries) and boundaries[i] < end:
            next_start = boundaries[i]
        else:
            next_start = _word_start_at_or_before(words, next_start, start)
        start, prev_end = max(next_start, start + 1), end
    return windows


def _word_start_at_or_before(words: list[int] | None, token: int, floor: int) -> int:
    """The last word start <= ``token`` that is > ``floor``; ``token`` itself when there is none."""
    if words is None:
        return token
    i = bisect.bisect_right(words, token) - 1
    return words[i] if i >= 0 and words[i] > floor else token



class Chunker:
    def __init__(self, tokenizer_path: Path, max_tokens: int, stride: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_tokens = max_tokens
        self.stride = stride
        split_windows(0, [], max_tokens, stride)  # validate the two numbers early

    def split(self, docs: list[Document]) -> list[dict[str, Any]]:
        encodings = self.tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False)
        rows: list[dict[str, Any]] = []
        for doc, enc in zip(docs, encodings, strict=True):
            offsets = enc.offsets
            token_starts = [o[0] for o in offsets]
            boundaries = sorted({bisect.bisect_left(token_starts, c) for c in sentence_starts(doc.text)})
            word_ids = enc.word_ids
            words = [t for t in range(len(word_ids)) if t == 0 or word_ids[t] != word_ids[t - 1]]
            doc_hash = sha256_text(doc.doc_id, doc.title, doc.text)
            windows = split_windows(len(offsets), boundaries, self.max_tokens, self.stride, words)
            for index, (start, end) in enumerate(windows):
                char_start, char_end = offsets[start][0], offsets[end - 1][1]
                text = doc.text[char_start:char_end]
                rows.append({
                    "chunk_id": f"{doc.doc_id}#{index}",
                    "doc_id": doc.doc_id,
                    "passage_index": index,
                    "title": doc.title,
                    "text": text,
                    "char_start": char_start,
                    "char_end": char_end,
                    "n_tokens": end - start,
                    "content_hash": sha256_text(doc.title, text),
                    "doc_hash": doc_hash,
                })
        return rows

