"""Reading BEIR queries (JSONL) and qrels (TSV): shared by evaluate (test judgments) and by the stages that
must keep test queries out of prompts or use training judgments as few-shot examples."""

from __future__ import annotations

import csv
import json
from pathlib import Path


class JudgmentsError(ValueError):
    pass


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                qid, text = str(obj["_id"]), obj["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise JudgmentsError(f"{path}:{line_no}: expected a JSON object with '_id' and 'text' ({e})") from e
            if not isinstance(text, str) or not text.strip():
                raise JudgmentsError(f"{path}:{line_no}: field 'text' must be a non-empty string, found {text!r}")
            queries[qid] = text
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels: TSV ``query-id  corpus-id  score`` with a header line."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (line_no == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise JudgmentsError(f"{path}:{line_no}: expected 3 tab-separated fields, found {len(row)}")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError as e:
                raise JudgmentsError(f"{path}:{line_no}: field 'score' is not an integer: {row[2]!r}") from e
    return qrels
