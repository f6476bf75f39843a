"""chunk: validate the raw corpus and split documents into passages.

Reads a BEIR folder (``corpus.jsonl``), a JSONL file, a Parquet file or a folder of ``.txt``/``.md`` files.
Every row is validated; a bad row (invalid JSON or UTF-8, not an object, missing/duplicate id, missing or
empty text, oversize) goes to the quarantine artifact with its file, line, field and reason. The stage fails
only when more than ``chunk.max_bad_fraction`` of the rows are bad.

Documents are cut into passages of at most ``chunk.max_tokens`` tokenizer tokens. Windows end on a sentence
boundary when one lies in the second half of the window; consecutive windows overlap by ``chunk.stride``
tokens (snapped forward to a sentence start when possible). Very long sentences are cut mid-sentence, between
words (never inside a word split into sub-word tokens, unless the word alone is longer than a window). A
document whose text yields no token at all (only control or zero-width characters) is quarantined too.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from irforge import layout
from irforge.partition import map_partitions
from irforge.progress import progress
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="chunk", version="2", params=("corpus", "chunk"))

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_RAW_PREVIEW = 500


class CorpusError(ValueError):
    """The corpus cannot be read at all, or too much of it is bad."""


@dataclass
class Document:
    doc_id: str
    title: str
    text: str
    source: str = ""  # file it came from and its 1-based line (row for Parquet, 0 for a whole file)
    line: int = 0


@dataclass
class BadRow:
    source: str
    line: int
    reason: str
    doc_id: str | None = None
    field: str | None = None
    raw: str | None = None


# ---------------------------------------------------------------- reading


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "corpus.jsonl").exists():
            return "beir"
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise CorpusError(f"{path}: cannot tell the corpus format from the name; set corpus.format")


def corpus_file(path: Path, fmt: str) -> Path:
    """The file or folder whose content defines the corpus (what provenance hashes)."""
    return path / "corpus.jsonl" if fmt == "beir" else path


def read_corpus(path: Path, cfg: dict[str, Any]) -> Iterator[Document | BadRow]:
    """Yield documents and bad rows in file order."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus not found (corpus.path in params.yaml)")
    fmt = cfg.get("format", "auto")
    fmt = detect_format(path) if fmt == "auto" else fmt
    fields = (cfg.get("id_field", "_id"), cfg.get("title_field", "title"), cfg.get("text_field", "text"))
    if fmt == "beir":
        yield from _read_jsonl(path / "corpus.jsonl", ("_id", "title", "text"))
    elif fmt == "jsonl":
        yield from _read_jsonl(path, fields)
    elif fmt == "parquet":
        yield from _read_parquet(path, fields)
    elif fmt == "folder":
        yield from _read_folder(path)
    else:
        raise CorpusError(f"{path}: unknown corpus.format '{fmt}' (auto, beir, jsonl, parquet, folder)")


def _read_jsonl(path: Path, fields: tuple[str, str, str]) -> Iterator[Document | BadRow]:
    name = path.name
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            preview = raw[:_RAW_PREVIEW].decode("utf-8", errors="replace").rstrip("\n")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadRow(name, line_no, f"invalid UTF-8 at byte {e.start}", raw=preview)
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield BadRow(name, line_no, f"invalid JSON ({e.msg} at character {e.pos + 1})", raw=preview)
                continue
            if not isinstance(obj, dict):
                yield BadRow(name, line_no, f"not a JSON object (found {type(obj).__name__})", raw=preview)
                continue
            yield _document(obj, fields, name, line_no, preview)


def _read_parquet(path: Path, fields: tuple[str, str, str]) -> Iterator[Document | BadRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorpusError(f"{path}: not a readable Parquet file ({e})") from e
    missing = [f for f in (fields[0], fields[2]) if f not in pf.schema_arrow.names]
    if missing:
        raise CorpusError(f"{path}: no column '{missing[0]}' (columns: {', '.join(pf.schema_arrow.names)})")
    row_no = 0
    for batch in pf.iter_batches(columns=[f for f in fields if f in pf.schema_arrow.names]):
        for obj in batch.to_pylist():
            row_no += 1
            yield _document(obj, fields, path.name, row_no, json.dumps(obj, default=str)[:_RAW_PREVIEW])


def _read_folder(path: Path) -> Iterator[Document | BadRow]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
    if not files:
        raise CorpusError(f"{path}: folder holds no .txt or .md files")
    for file in files:
        rel = file.relative_to(path).as_posix()
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            yield BadRow(rel, 0, f"invalid UTF-8 at byte {e.start}", doc_id=rel, field="text")
            continue
        title = file.stem
        heading = re.match(r"\s*#\s+(.+)", text)  # a Markdown file's first heading is its title
        if heading:
            title = heading.group(1).strip()
        yield _document({"id": rel, "title": title, "text": text}, ("id", "title", "text"), rel, 0, text[:_RAW_PREVIEW])


def _document(obj: dict, fields: tuple[str, str, str], source: str, line: int, preview: str) -> Document | BadRow:
    id_field, title_field, text_field = fields
    doc_id = obj.get(id_field)
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return BadRow(source, line, "missing id", field=id_field, raw=preview)
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return BadRow(source, line, f"id must be a string or integer, found {type(doc_id).__name__}",
                      field=id_field, raw=preview)
    doc_id = str(doc_id)
    text = obj.get(text_field)
    if text is None:
        return BadRow(source, line, "missing text", doc_id=doc_id, field=text_field, raw=preview)
    if not isinstance(text, str):
        return BadRow(source, line, f"text must be a string, found {type(text).__name__}",
                      doc_id=doc_id, field=text_field, raw=preview)
    if not text.strip():
        return BadRow(source, line, "empty text", doc_id=doc_id, field=text_field, raw=preview)
    title = obj.get(title_field) or ""
    if not isinstance(title, str):
        return BadRow(source, line, f"title must be a string, found {type(title).__name__}",
                      doc_id=doc_id, field=title_field, raw=preview)
    return Document(doc_id, title.strip(), text, source, line)


# ---------------------------------------------------------------- splitting


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


def sha256_text(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


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


# ---------------------------------------------------------------- stage


def run(ctx: StageContext) -> dict[str, Any]:
    from irforge.models import resolve_model

    corpus_cfg, cfg = ctx.section("corpus"), ctx.section("chunk")
    corpus_path = ctx.path(corpus_cfg["path"])
    fmt = corpus_cfg.get("format", "auto")
    fmt = detect_format(corpus_path) if fmt == "auto" and corpus_path.exists() else fmt
    id_field = "_id" if fmt == "beir" else corpus_cfg.get("id_field", "_id")
    model = resolve_model(cfg["tokenizer"], ctx.path(layout.CACHE))
    ctx.use_model(model.record)
    chunker = Chunker(model.path / "tokenizer.json", int(cfg["max_tokens"]), int(cfg.get("stride", 0)))
    max_chars = int(cfg.get("max_doc_chars", 1_000_000))

    docs, bad, total = screen_documents(progress(read_corpus(corpus_path, corpus_cfg), desc="validate", unit="doc"),
                                        max_chars, id_field)
    ctx.use_input(corpus_file(corpus_path, fmt), "corpus")
    if total == 0:
        raise CorpusError(f"{corpus_path}: the corpus has no rows")
    limit = float(cfg.get("max_bad_fraction", 0.01))
    _check_bad(ctx, bad, total, limit, corpus_path)  # fail before chunking when validation already says no

    # Sharded over the Dask cluster when the flow runs on one (irforge flow --dask); same rows either way.
    parts = map_partitions(functools.partial(_split_batch, chunker), docs, batch=256, desc="chunk")
    batches = [SCHEMAS["chunks"].empty_table()] + [table for table, _ in parts]  # Arrow: less memory than dicts
    tokenless = [row for _, rows in parts for row in rows]
    if tokenless:
        bad = sorted(bad + tokenless, key=lambda b: (b.source, b.line))
        _check_bad(ctx, bad, total, limit, corpus_path)
    chunks = pa.concat_tables(batches).combine_chunks()
    ctx.write(ctx.path(layout.CHUNKS), "chunks", chunks)
    return {"documents": len(docs) - len(tokenless), "quarantined": len(bad), "chunks": chunks.num_rows}


def screen_documents(items: Iterable[Document | BadRow], max_chars: int,
                     id_field: str = "_id") -> tuple[list[Document], list[BadRow], int]:
    """The corpus reader's rows split into valid documents and bad rows (the reader's own, plus duplicate ids
    and oversize texts), and the row count. Shared with re-indexing, which must apply the same rules."""
    first_line: dict[str, int] = {}
    bad: list[BadRow] = []
    docs: list[Document] = []
    total = 0
    for item in items:
        total += 1
        if isinstance(item, BadRow):
            bad.append(item)
        elif item.doc_id in first_line:
            bad.append(BadRow(item.source, item.line, f"duplicate id (first seen at line {first_line[item.doc_id]})",
                              doc_id=item.doc_id, field=id_field, raw=item.text[:_RAW_PREVIEW]))
        elif len(item.text) > max_chars:
            bad.append(BadRow(item.source, item.line, f"oversize document ({len(item.text)} chars > "
                              f"chunk.max_doc_chars={max_chars})", doc_id=item.doc_id, field="text",
                              raw=item.text[:_RAW_PREVIEW]))
        else:
            first_line[item.doc_id] = item.line
            docs.append(item)
    return docs, bad, total


def _split_batch(chunker: Chunker, docs: list[Document]) -> list[tuple[pa.Table, list[BadRow]]]:
    """Chunk one batch: its passages as Arrow, and the documents that produced no token (to quarantine)."""
    split = chunker.split(docs)
    produced = {r["doc_id"] for r in split}
    tokenless = [BadRow(d.source, d.line, "no tokens: the text holds only control or zero-width characters",
                        doc_id=d.doc_id, field="text", raw=d.text[:_RAW_PREVIEW])
                 for d in docs if d.doc_id not in produced]
    return [(pa.Table.from_pylist(split, schema=SCHEMAS["chunks"]), tokenless)]


def _check_bad(ctx: StageContext, bad: list[BadRow], total: int, limit: float, corpus_path: Path) -> None:
    """Write the quarantine artifact, log a sample, and fail when more than ``limit`` of the rows are bad."""
    quarantine = pa.Table.from_pylist([vars(b) for b in bad], schema=SCHEMAS["quarantine"])
    ctx.write(ctx.path(layout.QUARANTINE), "quarantine", quarantine)
    for b in bad[:5]:
        log.warning("quarantined %s:%d %s%s", b.source, b.line, b.reason, f" (id {b.doc_id})" if b.doc_id else "")
    if len(bad) > 5:
        log.warning("... and %d more quarantined rows, see %s", len(bad) - 5, layout.QUARANTINE)
    if len(bad) / total > limit:
        raise CorpusError(
            f"{corpus_path}: {len(bad)} of {total} rows ({len(bad) / total:.1%}) are bad, above "
            f"chunk.max_bad_fraction={limit}; the reasons are in {layout.QUARANTINE} (nothing else was written)"
        )
