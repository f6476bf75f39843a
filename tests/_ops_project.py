"""A tiny irforge project (a slice of the bundled Cranfield) for the operations tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CRANFIELD = REPO / "data" / "cranfield"


def make_project(root: Path, n_docs: int = 60, **overrides: object) -> Path:
    """``root`` with params.yaml and a BEIR corpus of the first ``n_docs`` Cranfield documents + their judgments."""
    corpus = root / "corpus"
    (corpus / "qrels").mkdir(parents=True)
    lines = CRANFIELD.joinpath("corpus.jsonl").read_text().splitlines()[:n_docs]
    (corpus / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    ids = {json.loads(line)["_id"] for line in lines}
    qrels = [row for row in CRANFIELD.joinpath("qrels", "test.tsv").read_text().splitlines()[1:]
             if row.split("\t")[1] in ids]
    (corpus / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    judged = {row.split("\t")[0] for row in qrels}
    queries = [q for q in CRANFIELD.joinpath("queries.jsonl").read_text().splitlines() if json.loads(q)["_id"] in judged]
    (corpus / "queries.jsonl").write_text("\n".join(queries) + "\n")

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"].update(path="corpus", queries="corpus/queries.jsonl", qrels="corpus/qrels/test.tsv")
    params["chunk"].update(max_tokens=48, stride=8)  # several chunks per document
    params["evaluate"].update(depth=20, systems=["bm25"], feedback={}, fusions=[], compare=[])  # BM25 only: no model stages here
    params["runtime"]["threads"] = 1
    params["serve"].update(system="bm25", threads=1)  # the served (and re-indexed) system: no model needed
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def copy_project(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
