"""Reading a corpus: a BEIR folder (``corpus.jsonl``), a JSONL file, a CSV or TSV file, a Parquet file or a
folder of ``.txt``/``.md`` (and other) files, as documents and bad rows in file order.

Every row is validated; a bad row (invalid JSON or UTF-8, not an object, a CSV record with the wrong number of
fields or broken quoting, missing/duplicate id, missing text, neither title nor text, oversize) becomes a
:class:`BadRow` with its file, line, field and reason, for the quarantine. A document with a title and no text
is a document: its title is its text. Every text file may start with a UTF-8 byte-order mark and end its lines
with CRLF.
:func:`load_documents` applies every rule (reader, duplicate ids, oversize) and is what both the chunk stage
and re-indexing call, so the two can never disagree on what a valid document is.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from irforge.config import CorpusConfig
from irforge.corpus.formats import UnreadableDocument, parse_docx, parse_html, parse_pdf
from irforge.corpus.markdown import Block, parse_markdown
from irforge.corpus.text import NotUtf8, decode_utf8, without_bom

FOLDER_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")

_RAW_PREVIEW = 500
_SPACE = re.compile(r"\s")
_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"
# csv's default field cap (131,072 characters) would stop a long document; chunk.max_doc_chars is the real cap
_CSV_FIELD_LIMIT = 2**31 - 1
DELIMITED = {"csv": ",", "tsv": "\t"}  # corpus.format -> delimiter


def folder_doc_id(relative: str) -> str:
    """A file's document id: its path in the folder, whitespace percent-encoded ("My Notes.md" -> "My%20Notes.md")
    so run files can hold it; the same file always gets the same id."""
    return _SPACE.sub(lambda m: "%" + "".join(f"{b:02X}" for b in m.group().encode()), relative)


class CorpusError(ValueError):
    """The corpus cannot be read at all, or too much of it is bad."""


@dataclass
class Document:
    doc_id: str
    title: str  # "" for a title-only document, whose title is then its text
    text: str
    source: str = ""  # file it came from
    line: int = 0  # its 1-based line (where a CSV record starts; row for Parquet; 0 for a whole file)
    blocks: list[Block] | None = None  # a structured document's blocks (Markdown); text is then their join


@dataclass
class BadRow:
    source: str
    line: int
    reason: str
    doc_id: str | None = None
    field: str | None = None
    raw: str | None = None
    skipped: bool = False  # a file left out on purpose (corpus.include / exclude): listed, not counted as bad


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
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    raise CorpusError(f"{path}: cannot tell the corpus format from the name; set corpus.format")


def corpus_file(path: Path, fmt: str) -> Path:
    """The file or folder whose content defines the corpus (what provenance hashes)."""
    return path / "corpus.jsonl" if fmt == "beir" else path


def read_corpus(path: Path, cfg: CorpusConfig) -> Iterator[Document | BadRow]:
    """Yield documents and bad rows in file order."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus not found (corpus.path in params.yaml)")
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    fields = (cfg.id_field, cfg.title_field, cfg.text_field)
    if fmt == "beir":
        yield from _read_jsonl(path / "corpus.jsonl", ("_id", "title", "text"))
    elif fmt == "jsonl":
        yield from _read_jsonl(path, fields)
    elif fmt in DELIMITED:
        yield from _read_delimited(path, fields, DELIMITED[fmt], cfg.quoting)
    elif fmt == "parquet":
        yield from _read_parquet(path, fields)
    elif fmt == "folder":
        yield from _read_folder(path, cfg)
    else:
        raise CorpusError(f"{path}: unknown corpus.format '{fmt}' (auto, beir, jsonl, csv, tsv, parquet, folder)")


def _read_jsonl(path: Path, fields: tuple[str, str, str]) -> Iterator[Document | BadRow]:
    name = path.name
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = without_bom(raw)  # a byte-order mark some editors write
            if not raw.strip():
                continue
            preview = raw[:_RAW_PREVIEW].decode("utf-8", errors="replace").rstrip("\r\n")
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


def _read_delimited(path: Path, fields: tuple[str, str, str], delimiter: str,
                    quoting: str) -> Iterator[Document | BadRow]:
    """A CSV or TSV file with a header row naming its columns; ``quoting`` "double": RFC 4180 (a field in double
    quotes may hold the delimiter, line breaks and doubled quotes), "none": a quote is an ordinary character.

    Each record's line is the physical line it starts on. A record with the wrong number of fields, quoting a
    strict reading rejects (a stray or unclosed quote, which joins lines or eats characters), or bytes that are
    not UTF-8 is a bad row; a header without the id or text column stops the read.
    """
    name = path.name
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    options: dict = ({"quoting": csv.QUOTE_NONE} if quoting == "none" else {"quotechar": '"', "doublequote": True})
    lines: list[str] = []  # the physical lines of the record being read

    def physical(f):
        for line in f:
            lines.append(line)
            yield line

    def preview(raw: str) -> str:
        return _UNDECODED.sub("\ufffd", raw[:_RAW_PREVIEW]).rstrip("\r\n")

    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(physical(f), delimiter=delimiter, **options)
        header: list[str] | None = None
        line_no = 1  # where the next record starts
        while True:
            start, lines[:] = line_no, []
            try:
                row = next(reader)
                error = None
            except StopIteration:
                break
            except csv.Error as e:  # the lenient reader's only failure left: a field over the size limit
                row, error = None, str(e)
            line_no += len(lines)
            record, raw = list(lines), "".join(lines)
            end = start + len(lines) - 1
            if row is not None and (not row or (len(row) == 1 and not row[0].strip())):
                continue  # a blank line
            if header is None:
                if row is None or _UNDECODED.search(raw):
                    raise CorpusError(f"{path}:{start}: the header row is "
                                      + (f"not readable ({error})" if error else "not UTF-8; save the file as UTF-8"))
                header = [h.strip() for h in row]
                for column in (fields[0], fields[2]):
                    if column not in header:
                        setting = "id_field" if column == fields[0] else "text_field"
                        raise CorpusError(f"{path}: no column '{column}' in the header row (header: "
                                          f"{', '.join(header)}); set corpus.{setting}")
                twice = [c for c in fields if header.count(c) > 1]
                if twice:
                    raise CorpusError(f"{path}: column '{twice[0]}' appears twice in the header row "
                                      f"(header: {', '.join(header)})")
                continue
            if row is None:
                yield BadRow(name, start, f"unreadable record ({error})", raw=preview(raw))
                continue
            undecoded = _UNDECODED.search(raw)
            if undecoded:
                column = next((header[i] for i, v in enumerate(row) if _UNDECODED.search(v) and i < len(header)), None)
                at = len(raw[:undecoded.start()].encode("utf-8", errors="surrogateescape"))
                yield BadRow(name, start, f"invalid UTF-8 at byte {at}", field=column, raw=preview(raw))
                continue
            lines_note = f" (the record runs over lines {start}-{end})" if end > start else ""
            if quoting != "none" and '"' in raw:
                try:
                    list(csv.reader(record, delimiter=delimiter, strict=True, **options))
                except csv.Error as e:
                    what = ("unclosed quote: a quoted field runs to the end of the file" if "end of data" in str(e)
                            else f"malformed quoting ({e})")
                    yield BadRow(name, start, f"{what}{lines_note}; a quote inside a quoted field is doubled "
                                 "(\"\"), and corpus.quoting: none reads a file that does not quote fields",
                                 raw=preview(raw))
                    continue
            if len(row) != len(header):
                missing = header[len(row)] if len(row) < len(header) else None
                yield BadRow(name, start, f"expected {len(header)} fields (as in the header row), found "
                             f"{len(row)}{lines_note}", field=missing, raw=preview(raw))
                continue
            obj = {column: value.replace("\r\n", "\n") for column, value in zip(header, row, strict=True)}
            yield _document(obj, fields, name, start, preview(raw))


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


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over relative POSIX paths: ``**/`` any folders (or none), ``*`` within one name, ``?`` one character."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _read_folder(path: Path, cfg: CorpusConfig) -> Iterator[Document | BadRow]:
    include = [glob_regex(p) for p in cfg.include]
    exclude = [glob_regex(p) for p in cfg.exclude]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    read = 0
    for file in files:
        rel = file.relative_to(path).as_posix()
        if not any(g.match(rel) for g in include):
            yield BadRow(rel, 0, f"skipped: not matched by corpus.include ({', '.join(cfg.include)})", skipped=True)
            continue
        if any(g.match(rel) for g in exclude):
            yield BadRow(rel, 0, "skipped: matched by corpus.exclude", skipped=True)
            continue
        suffix = file.suffix.lower()
        if suffix not in FOLDER_SUFFIXES:
            yield BadRow(rel, 0, f"skipped: no reader for {file.suffix or 'files without a suffix'} "
                              f"(a folder corpus reads {', '.join(FOLDER_SUFFIXES)})", skipped=True)
            continue
        read += 1
        # The parsers get no fallback title: a file whose only "title" would be its name and which holds no text
        # is empty, not a title-only document.
        if suffix in (".pdf", ".docx"):
            try:
                doc = (parse_pdf if suffix == ".pdf" else parse_docx)(file, "")
            except UnreadableDocument as e:
                yield BadRow(rel, 0, str(e), doc_id=folder_doc_id(rel), field="text")
                continue
        else:
            try:
                text = decode_utf8(file.read_bytes())
            except NotUtf8 as e:
                yield BadRow(rel, 0, f"invalid UTF-8 at byte {e.offset}", doc_id=folder_doc_id(rel), field="text")
                continue
            if suffix == ".txt":
                row = _document({"id": folder_doc_id(rel), "title": "", "text": text}, ("id", "title", "text"), rel, 0,
                                text[:_RAW_PREVIEW])
                if isinstance(row, Document):
                    row.title = file.stem
                yield row
                continue
            parse = parse_html if suffix in (".html", ".htm") else parse_markdown
            doc = parse(text, "", cfg.code)
        joined = "\n\n".join(b.text for b in doc.blocks)
        row = _document({"id": folder_doc_id(rel), "title": doc.title, "text": joined}, ("id", "title", "text"), rel,
                        0, joined[:_RAW_PREVIEW])
        if isinstance(row, Document):
            if doc.blocks:  # a title-only document has none: its text is its title
                row.blocks = doc.blocks
            if not doc.title:
                row.title = file.stem
        yield row
    if not read:
        raise CorpusError(f"{path}: no readable file ({', '.join(FOLDER_SUFFIXES)}) matches corpus.include "
                          f"({', '.join(cfg.include)}) and escapes corpus.exclude")


def _document(obj: dict, fields: tuple[str, str, str], source: str, line: int, preview: str) -> Document | BadRow:
    id_field, title_field, text_field = fields
    doc_id = obj.get(id_field)
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        return BadRow(source, line, "missing id", field=id_field, raw=preview)
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return BadRow(source, line, f"id must be a string or integer, found {type(doc_id).__name__}",
                      field=id_field, raw=preview)
    doc_id = str(doc_id)
    if _SPACE.search(doc_id):
        return BadRow(source, line, "id contains whitespace, which run files (TREC format) cannot hold",
                      doc_id=doc_id, field=id_field, raw=preview)
    text = obj.get(text_field)
    if text is None:  # absent or null: a misspelt corpus.text_field must not pass for title-only documents
        return BadRow(source, line, "missing text", doc_id=doc_id, field=text_field, raw=preview)
    if not isinstance(text, str):
        return BadRow(source, line, f"text must be a string, found {type(text).__name__}",
                      doc_id=doc_id, field=text_field, raw=preview)
    title = obj.get(title_field) or ""
    if not isinstance(title, str):
        return BadRow(source, line, f"title must be a string, found {type(title).__name__}",
                      doc_id=doc_id, field=title_field, raw=preview)
    title = title.strip()
    if not text.strip():
        if not title:
            return BadRow(source, line, f"empty document: no title ('{title_field}') and no text ('{text_field}')",
                          doc_id=doc_id, field=text_field, raw=preview)
        # A title-only document: the title is its text, and its passage shows it once (passage_text joins the
        # title and the text, so keeping both would say it twice).
        return Document(doc_id, "", title, source, line)
    return Document(doc_id, title, text, source, line)


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



@dataclass
class LoadedCorpus:
    documents: list[Document]
    bad: list[BadRow]
    total: int  # rows read, good and bad
    path: Path  # corpus.path
    file: Path  # the file or folder whose content defines the corpus (what provenance hashes)

    def bad_fraction(self) -> float:
        """Share of the rows read that are bad (files skipped on purpose are neither)."""
        skipped = sum(b.skipped for b in self.bad)
        return (len(self.bad) - skipped) / (self.total - skipped) if self.total > skipped else 0.0


def load_documents(root: Path, cfg: CorpusConfig, max_chars: int,
                   wrap: Callable[[Iterable[Document | BadRow]], Iterable[Document | BadRow]] | None = None,
                   ) -> LoadedCorpus:
    """Every row of the corpus at ``root / cfg.path`` screened by every rule; ``wrap`` adds a progress bar."""
    path = Path(root) / cfg.path
    fmt = detect_format(path) if cfg.format == "auto" and path.exists() else cfg.format
    id_field = "_id" if fmt == "beir" else cfg.id_field
    rows = read_corpus(path, cfg)
    docs, bad, total = screen_documents(wrap(rows) if wrap else rows, max_chars, id_field)
    if total == 0:
        raise CorpusError(f"{path}: the corpus has no rows")
    return LoadedCorpus(docs, bad, total, path, corpus_file(path, fmt))
