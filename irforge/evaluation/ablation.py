"""The ablation results table (``benchmarks/results/ablation.json``): one row per run of the DAG under params
overrides. Written by the ablation driver (:mod:`irforge.ops.ablation`), shown by the report; one reader
checks it for both, naming the row and field of a malformed file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from irforge.contract.artifacts import read_provenance, write_text_atomic


def corpus_identity(chunks_path: Path) -> dict[str, Any] | None:
    """Which corpus a run's numbers come from: its path and the hash of its raw files, from the provenance of the
    chunks artifact (None when there is no such artifact yet)."""
    prov = read_provenance(Path(chunks_path)) if Path(chunks_path).exists() else None
    if not prov:
        return None
    files = sorted((i["path"], i["sha256"]) for i in prov.get("inputs", []) if i.get("kind") == "corpus")
    path = prov.get("params", {}).get("corpus", {}).get("path")
    return {"path": path, "sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest()}


def same_corpus(recorded: Any, current: dict[str, Any] | None) -> bool:
    return isinstance(recorded, dict) and current is not None and recorded.get("sha256") == current["sha256"]


def ablation_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an ablation results file; a malformed one names the row and field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected an object with a list 'rows'")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ValueError(f"{path}: row {i}: field 'name' must be a string")
        metrics = row.get("metrics")
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise ValueError(f"{path}: row {i} ({row['name']}): field 'metrics' must map systems to their measures")
    return rows


def ablation_corpus(path: Path) -> Any:
    """The corpus identity an ablation file records (``corpus_identity``), or None for a file without one."""
    ablation_rows(path)  # a malformed file is an error naming its row and field, whoever reads it first
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("corpus") if isinstance(data, dict) else None


def write_ablation(path: Path, rows: list[dict[str, Any]], measure: str, extra: dict[str, Any] | None = None) -> None:
    write_text_atomic(Path(path), json.dumps({"measure": measure, **(extra or {}), "rows": rows}, indent=2))
