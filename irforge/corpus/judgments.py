"""Reading BEIR queries (JSONL) and qrels (TSV): shared by evaluate (test judgments) and by the stages that
must keep test queries out of prompts or use training judgments as few-shot examples. Both may start with a
UTF-8 byte-order mark and end their lines with CRLF (as Windows editors and spreadsheets save them)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

from irforge.corpus.text import NotUtf8, decode_utf8, without_bom

SPLITS = ("dev", "test")


class JudgmentsError(ValueError):
    pass


def read_json_lines(path: Path, required: tuple[str, ...], error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is not a JSON object with the
    ``required`` keys is an ``error`` naming the file and line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = without_bom(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{line_no}: not UTF-8 (byte {e.start + 1} of the line); save the file as UTF-8") from e
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{line_no}: expected a JSON object with {_keys(required)} "
                            f"(invalid JSON: {e.msg} at character {e.pos + 1})") from e
            if not isinstance(obj, dict):
                raise error(f"{path}:{line_no}: expected a JSON object with {_keys(required)}, "
                            f"found {type(obj).__name__}")
            missing = [key for key in required if key not in obj]
            if missing:
                raise error(f"{path}:{line_no}: expected a JSON object with {_keys(required)} "
                            f"(missing {_keys(tuple(missing))})")
            yield line_no, obj


def _keys(names: tuple[str, ...]) -> str:
    return " and ".join(f"'{n}'" for n in names)


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for line_no, obj in read_json_lines(path, ("_id", "text"), JudgmentsError):
        text = obj["text"]
        if not isinstance(text, str) or not text.strip():
            raise JudgmentsError(f"{path}:{line_no}: field 'text' must be a non-empty string, found {text!r}")
        queries[str(obj["_id"])] = text
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels: TSV ``query-id  corpus-id  score`` with a header line."""
    qrels: dict[str, dict[str, int]] = {}
    try:
        text = decode_utf8(Path(path).read_bytes())
    except NotUtf8 as e:
        raise JudgmentsError(f"{path}:{e.line}: not UTF-8 (byte {e.offset + 1} of the file); save it as UTF-8") from e
    for line_no, row in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter="\t"), start=1):
        if not row or (line_no == 1 and row[0] == "query-id"):
            continue
        if len(row) != 3:
            raise JudgmentsError(f"{path}:{line_no}: expected 3 tab-separated fields, found {len(row)}")
        try:
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
        except ValueError as e:
            raise JudgmentsError(f"{path}:{line_no}: field 'score' is not an integer: {row[2]!r}") from e
    return qrels


def queries_of(table) -> dict[str, str]:
    """A ``queries`` artifact (pyarrow table) as ``{query_id: text}``."""
    return dict(zip(table.column("query_id").to_pylist(), table.column("text").to_pylist(), strict=True))


def qrels_of(table) -> dict[str, dict[str, int]]:
    """A ``qrels`` artifact as ``{query_id: {doc_id: grade}}``."""
    qrels: dict[str, dict[str, int]] = {}
    for q, d, g in zip(*(table.column(c).to_pylist() for c in ("query_id", "doc_id", "grade")), strict=True):
        qrels.setdefault(q, {})[d] = g
    return qrels


def split_queries(judged: list[str], dev_queries: int, seed: int) -> dict[str, str]:
    """``{query_id: "dev" | "test"}``: the ``dev_queries`` judged queries first by ``sha256(seed:id)``.

    Hash order, not a shuffle of the list, so the split of a query does not move when others are added or
    reordered. Dev queries are for tuning and few-shot examples; results are reported on test.
    """
    ranked = sorted(judged, key=lambda q: (hashlib.sha256(f"{seed}:{q}".encode()).hexdigest(), q))
    dev = set(ranked[:dev_queries])
    return {q: "dev" if q in dev else "test" for q in judged}


def splits_of(table) -> dict[str, str]:
    """A ``queries`` artifact as ``{query_id: split}`` (``dev``, ``test``, or ``unjudged``)."""
    return dict(zip(table.column("query_id").to_pylist(), table.column("split").to_pylist(), strict=True))
