"""Judging a few queries by hand: a pooled sheet to grade, and BEIR judgments from the graded sheet.

``export``: for queries a person writes (a .txt file, one per line, or BEIR queries.jsonl), the top ``depth``
documents of each chosen system are pooled (TREC-style pooling: the union, so no system's blind spots go
unjudged), shown in a seeded random order per query (the order must not hint which system liked a document)
with the passage that ranked best, and written as a CSV (or JSONL) with an empty ``grade`` column.

``import``: the graded sheet becomes ``queries.jsonl`` and ``qrels/test.tsv`` in BEIR layout, which
``corpus.queries`` / ``corpus.qrels`` point to. Grades are 0 (not relevant) to 3 (perfectly relevant); a row
left blank is not judged (counted, not guessed); any other value is an error naming the file, row and field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from pathlib import Path
from typing import Any

from irforge.contract.artifacts import read_artifact, write_text_atomic
from irforge.corpus.text import NotUtf8, decode_utf8
from irforge.retrieval import ProjectEncoders, doc_id_of, open_system

log = logging.getLogger(__name__)

COLUMNS = ("query_id", "query", "doc_id", "title", "passage", "grade", "note")
GRADES = range(0, 4)
CHUNKS = "artifacts/chunk/chunks.parquet"


class JudgeError(ValueError):
    """A sheet or queries file that cannot be used as given."""


def read_queries(path: Path) -> dict[str, str]:
    """Queries a person wrote: .jsonl (BEIR: ``_id``, ``text``) or any text file, one query per line (ids q1, q2...)."""
    path = Path(path)
    if not path.exists():
        raise JudgeError(f"{path}: no such queries file")
    queries: dict[str, str] = {}
    try:  # a byte-order mark (Windows editors) is not part of the first query
        lines = decode_utf8(path.read_bytes()).split("\n")
    except NotUtf8 as e:
        raise JudgeError(f"{path}: line {e.line}: not UTF-8 (byte {e.offset + 1} of the file); save it as UTF-8") from e
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                qid, text = str(obj["_id"]), str(obj["text"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise JudgeError(f"{path}: line {line_no}: expected a JSON object with _id and text ({e})") from e
        else:
            qid, text = f"q{len(queries) + 1}", line.strip()
        if qid in queries:
            raise JudgeError(f"{path}: line {line_no}: query id '{qid}' appears twice")
        if text:
            queries[qid] = text
    if not queries:
        raise JudgeError(f"{path}: no queries in it")
    return queries


def pool(root: Path, queries: dict[str, str], systems: list[str], depth: int, k1: float, b: float,
         cache_dir: Path, seed: int) -> list[dict[str, Any]]:
    """The sheet's rows: every document in the top ``depth`` of any system, once per query, seeded order."""
    chunks = {c["chunk_id"]: c for c in read_artifact(root / CHUNKS, "chunks").to_pylist()}
    encoders = ProjectEncoders(root, cache_dir)
    best: dict[str, dict[str, tuple[int, str]]] = {q: {} for q in queries}  # query -> doc -> (best rank, its chunk)
    for system in systems:
        index = root / "artifacts" / "index" / system
        if not index.exists():
            raise JudgeError(f"{index}: no index for system '{system}' (run `irforge run index {system}` or dvc repro)")
        retriever = open_system(index, encoders, k1, b)
        try:
            hits = retriever.search(queries, depth * 4)  # chunk hits: enough for `depth` distinct documents
        finally:
            retriever.close()
        for qid, ranked in hits.items():
            docs: list[str] = []
            for chunk_id, _ in ranked:
                doc = doc_id_of(chunk_id)
                if doc in docs:
                    continue
                docs.append(doc)
                if doc not in best[qid] or len(docs) < best[qid][doc][0]:
                    best[qid][doc] = (len(docs), chunk_id)
                if len(docs) == depth:
                    break
    rows = []
    for qid, text in queries.items():
        docs = sorted(best[qid])
        random.Random(int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:16], 16)).shuffle(docs)
        for doc in docs:
            chunk = chunks[best[qid][doc][1]]
            rows.append({"query_id": qid, "query": text, "doc_id": doc, "title": chunk["title"],
                         "passage": chunk["text"], "grade": "", "note": ""})
    return rows


def write_sheet(rows: list[dict[str, Any]], out: Path) -> Path:
    """CSV (a spreadsheet opens it) or, for a .jsonl path, one JSON object per row."""
    out = Path(out)
    if out.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, text)
    return out


def read_sheet(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number as a person sees it: the header is row 1 of a CSV, line 1 of a JSONL, row) of a graded sheet."""
    path = Path(path)
    if not path.exists():
        raise JudgeError(f"{path}: no such sheet")
    try:  # a spreadsheet may save a byte-order mark, and CRLF line ends
        text = decode_utf8(path.read_bytes())
    except NotUtf8 as e:
        raise JudgeError(f"{path}: line {e.line}: not UTF-8 (byte {e.offset + 1} of the file); save the sheet "
                         "as UTF-8 (a spreadsheet's \"CSV UTF-8\")") from e
    if path.suffix == ".jsonl":
        rows = []
        # Lines end at "\n" only: a passage may hold U+2028 or U+0085, which json.dumps leaves as they are and
        # str.splitlines would take for line ends.
        for line_no, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    rows.append((line_no, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise JudgeError(f"{path}: line {line_no}: not valid JSON ({e.msg})") from e
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in ("query_id", "query", "doc_id", "grade") if c not in (reader.fieldnames or [])]
    if missing:
        raise JudgeError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    return [(row_no, row) for row_no, row in enumerate(reader, start=2)]


def import_sheet(path: Path, out: Path) -> dict[str, Any]:
    """Write BEIR ``queries.jsonl`` and ``qrels/test.tsv`` under ``out`` from a graded sheet; counts."""
    queries: dict[str, str] = {}
    qrels: dict[tuple[str, str], int] = {}
    blank = 0
    for row_no, row in read_sheet(path):
        where = f"{path}: row {row_no}"
        for field in ("query_id", "query", "doc_id"):
            if not str(row.get(field) or "").strip():
                raise JudgeError(f"{where}: field '{field}' is empty")
        qid, doc = str(row["query_id"]).strip(), str(row["doc_id"]).strip()
        text = str(row["query"]).strip()
        if queries.setdefault(qid, text) != text:
            raise JudgeError(f"{where}: query '{qid}' has another text than in an earlier row")
        raw = str(row.get("grade") if row.get("grade") is not None else "").strip()
        if not raw:
            blank += 1
            continue
        try:
            grade = int(float(raw)) if float(raw).is_integer() else None
        except ValueError:
            grade = None
        if grade not in GRADES:
            raise JudgeError(f"{where}: field 'grade' is '{raw}'; expected 0, 1, 2 or 3 (or blank: not judged)")
        if (qid, doc) in qrels and qrels[(qid, doc)] != grade:
            raise JudgeError(f"{where}: query '{qid}', document '{doc}' was graded {qrels[(qid, doc)]} in an "
                             f"earlier row and {grade} here")
        qrels[(qid, doc)] = grade
    judged = {q for q, _ in qrels}
    if not judged:
        raise JudgeError(f"{path}: no row has a grade yet (0-3 in the 'grade' column)")
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "queries.jsonl", "".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n"
                                                     for q, t in queries.items() if q in judged))
    write_text_atomic(out / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{g}\n" for (q, d), g in sorted(qrels.items())))
    relevant = sum(g > 0 for g in qrels.values())
    unjudged_queries = sorted(set(queries) - judged)
    if unjudged_queries:
        log.warning("%s: %d queries have no grade at all and are left out: %s", path, len(unjudged_queries),
                    ", ".join(unjudged_queries[:5]))
    return {"queries": len(judged), "judgments": len(qrels), "relevant": relevant, "blank": blank,
            "queries_without_grades": len(unjudged_queries), "queries_file": str(out / "queries.jsonl"),
            "qrels_file": str(out / "qrels" / "test.tsv")}
