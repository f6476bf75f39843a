"""Cutting documents into passages of at most ``max_tokens`` tokenizer tokens.

Windows end on a sentence boundary when one lies in the second half of the window; consecutive windows
overlap by ``stride`` tokens (snapped forward to a sentence start when possible). Very long sentences are cut
mid-sentence, between words (never inside a word split into sub-word tokens, unless the word alone is longer
than a window). Chunk ids are ``<doc_id>#<passage_index>``, so chunk hits aggregate to documents.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from pathlib import Path
from typing import Any

from irforge.corpus.markdown import SEPARATOR
from irforge.corpus.readers import Document
from irforge.corpus.text import sha256_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_NO_TOKEN = ("Mn", "Me", "Cf")  # combining marks, variation selectors, joiners: part of the character before


def end_of_character(text: str, end: int) -> int:
    """Move a passage end past the marks that belong to its last character (a window ending at the token for
    "\u2764" keeps its "\ufe0f"; the tokenizer gives such marks no token, hence no offset of their own)."""
    while end < len(text) and unicodedata.category(text[end]) in _NO_TOKEN:
        end += 1
    return end


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



def document_hash(doc: Document) -> str:
    """A document's content hash (every chunk's ``doc_hash``): id, title, text and, for a structured document, the
    heading path of each block. Re-indexing compares it to tell changed documents from unchanged ones, so both
    must compute it here."""
    return sha256_text(doc.doc_id, doc.title, doc.text, *(b.section for b in doc.blocks or []))


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
            if doc.blocks is not None:
                rows += self._split_blocks(doc, enc)
                continue
            offsets = enc.offsets
            token_starts = [o[0] for o in offsets]
            boundaries = sorted({bisect.bisect_left(token_starts, c) for c in sentence_starts(doc.text)})
            word_ids = enc.word_ids
            words = [t for t in range(len(word_ids)) if t == 0 or word_ids[t] != word_ids[t - 1]]
            doc_hash = document_hash(doc)
            windows = split_windows(len(offsets), boundaries, self.max_tokens, self.stride, words)
            for index, (start, end) in enumerate(windows):
                char_start, char_end = offsets[start][0], end_of_character(doc.text, offsets[end - 1][1])
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
                    "section": None,
                })
        return rows

    def _split_blocks(self, doc: Document, enc) -> list[dict[str, Any]]:
        """A structured document's passages: whole blocks packed in order up to ``max_tokens`` (a code block is
        never cut: a longer one is a passage of its own); a prose block longer than a window is cut like plain
        text. No overlap: block edges are natural cuts. Each passage records the heading path of its first block
        and shows it after the title, so indexes and query generators read where the passage sits."""
        token_starts = [o[0] for o in enc.offsets]
        spans, at = [], 0  # each block's token range in the joined text
        for block in doc.blocks or []:
            begin, end = at, at + len(block.text)
            spans.append((bisect.bisect_left(token_starts, begin), bisect.bisect_left(token_starts, end)))
            at = end + 2  # the "\n\n" the reader joined blocks with
        pieces: list[tuple[int, int, str]] = []  # (first token, end token, section)
        current: list[int] | None = None
        for block, (t0, t1) in zip(doc.blocks or [], spans, strict=True):
            if t1 <= t0:
                continue
            if current is not None and t1 - current[0] <= self.max_tokens:
                current[1] = t1
                continue
            if current is not None:
                pieces.append((current[0], current[1], current[2]))
                current = None
            if t1 - t0 <= self.max_tokens or block.code:
                current = [t0, t1, block.section]
                continue
            sentences = sorted({bisect.bisect_left(token_starts, c + enc.offsets[t0][0])
                                for c in sentence_starts(doc.text[enc.offsets[t0][0]:enc.offsets[t1 - 1][1]])})
            for start, end in split_windows(t1 - t0, [b - t0 for b in sentences], self.max_tokens, self.stride):
                pieces.append((t0 + start, t0 + end, block.section))
        if current is not None:
            pieces.append((current[0], current[1], current[2]))
        doc_hash = document_hash(doc)
        rows = []
        for index, (start, end, section) in enumerate(pieces):
            char_start, char_end = enc.offsets[start][0], end_of_character(doc.text, enc.offsets[end - 1][1])
            text = doc.text[char_start:char_end]
            title = shown_title(doc.title, section)
            rows.append({"chunk_id": f"{doc.doc_id}#{index}", "doc_id": doc.doc_id, "passage_index": index,
                         "title": title, "text": text, "char_start": char_start, "char_end": char_end,
                         "n_tokens": end - start, "content_hash": sha256_text(title, text), "doc_hash": doc_hash,
                         "section": section or None})
        return rows


def shown_title(title: str, section: str) -> str:
    """The title a passage is read with: the document's, then the heading path below it (a path that starts with
    the title, the usual first heading, does not repeat it)."""
    parts = [p for p in section.split(SEPARATOR) if p] if section else []
    if parts and parts[0] == title:
        parts = parts[1:]
    return SEPARATOR.join([title, *parts]) if parts else title

