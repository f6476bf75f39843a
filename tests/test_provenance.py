"""Provenance: what every artifact records about itself, and `irforge audit` walking it back to the corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import paths
from conftest import REPO, Project
from irforge.contract.artifacts import read_provenance, sha256_file, sha256_path, stable_hash
from irforge.engine import nodes
from irforge.engine.code import code_paths, code_sha256
from irforge.ops.audit import lineage

# conftest pins SOURCE_DATE_EPOCH=1700000000
PINNED_CLOCK = "2023-11-14T22:13:20+00:00"


def test_chunks_footer_tells_the_whole_story(evaluated_project: Project) -> None:
    root = evaluated_project.root
    prov = read_provenance(root / paths.CHUNKS)
    assert prov["artifact"] == "chunks" and prov["rows"] == 11
    assert (prov["stage"], prov["stage_version"]) == ("chunk", "2")
    params, config = evaluated_project.params, evaluated_project.config
    # The validated sections with every default filled in (the same as params.yaml here: it sets every key).
    assert prov["params"] == {"corpus": config.as_params("corpus"), "chunk": config.as_params("chunk")}
    assert prov["params"] == {"corpus": params.section("corpus"), "chunk": params.section("chunk")}
    assert prov["params_hash"] == stable_hash(prov["params"])
    assert prov["inputs"] == [{"path": "data/tiny/corpus.jsonl", "kind": "corpus", "stage": None,
                               "sha256": sha256_file(root / "data/tiny/corpus.jsonl")}]
    # The code hash covers the stage module and the irforge packages it uses (its code deps in dvc.yaml).
    [chunk_node] = [n for n in nodes(config) if n.key == "chunk"]
    assert chunk_node.code == code_paths(REPO / "stages" / "chunk.py")
    assert chunk_node.code[0] == "stages/chunk.py" and "irforge/corpus" in chunk_node.code
    assert prov["code_sha256"] == code_sha256(chunk_node.code)
    assert "variant" not in prov
    [model] = prov["models"]
    assert (model["name"], model["source"]) == ("pkg:all-minilm-l6-v2", "pkg") and len(model["sha256"]) == 64
    assert {"python", "irforge", "pyarrow", "tokenizers", "pyserini"} <= set(prov["versions"])
    assert prov["created_at"] == PINNED_CLOCK


def test_each_artifact_records_the_artifacts_it_read(evaluated_project: Project) -> None:
    root = evaluated_project.root
    config = evaluated_project.config
    index = read_provenance(root / paths.index_dir("bm25"))
    assert (index["artifact"], index["stage"], index["variant"]) == ("folder", "index", "bm25")
    assert index["params"] == {"index": config.as_params("index"), "seed": 13}
    assert index["params"]["index"]["systems"] == {
        "bm25": {"kind": "bm25", "model": None, "expansions": None, "faiss": None, "precision": "float32"}}
    assert index["inputs"] == [{"path": paths.CHUNKS, "kind": "chunks", "stage": "chunk",
                                "sha256": sha256_file(root / paths.CHUNKS)}]
    # The judgments stage read the raw judgment files; evaluate reads its artifacts.
    judgments = read_provenance(root / paths.QRELS)
    assert (judgments["stage"], set(judgments["params"])) == ("judgments", {"seed", "corpus", "judgments"})
    assert {i["path"]: i["stage"] for i in judgments["inputs"]} == {
        paths.CHUNKS: "chunk", "data/tiny/queries.jsonl": None, "data/tiny/qrels/test.tsv": None}
    per_query = read_provenance(root / paths.PER_QUERY)
    assert per_query["stage"] == "evaluate" and set(per_query["params"]) == {"bm25", "evaluate", "seed"}
    inputs = {i["path"]: i for i in per_query["inputs"]}
    assert set(inputs) == {paths.index_dir("bm25"), paths.QUERIES, paths.QRELS}
    # The index was hashed as it was when evaluate read it: before evaluate, nothing else touched it.
    assert inputs[paths.index_dir("bm25")]["sha256"] == sha256_path(root / paths.index_dir("bm25"))
    assert inputs[paths.index_dir("bm25")]["stage"] == "index"
    assert {(inputs[p]["kind"], inputs[p]["stage"]) for p in (paths.QUERIES, paths.QRELS)} == {
        ("queries", "judgments"), ("qrels", "judgments")}
    assert inputs[paths.QRELS]["sha256"] == sha256_file(root / paths.QRELS)
    assert read_provenance(root / paths.TREC_RUNS)["stage"] == "evaluate"


def _audit(project: Project, artifact: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "irforge", "audit", artifact, "--root", str(project.root)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_audit_walks_back_to_the_corpus_and_flags_a_changed_input(evaluated_copy: Project) -> None:
    result = _audit(evaluated_copy, paths.PER_QUERY)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{paths.PER_QUERY}  [per_query_metrics, 15 rows]  stage evaluate v")
    chain = [line for line in lines if "sha256" in line and "code sha256" not in line]
    for path in (paths.index_dir("bm25"), paths.CHUNKS, paths.QUERIES, paths.QRELS, "data/tiny/corpus.jsonl",
                 "data/tiny/queries.jsonl", "data/tiny/qrels/test.tsv"):
        found = [line for line in chain if f" {path}  " in line]
        # the judgment files appear under both judgments artifacts (one stage run wrote both), and the chunks (with
        # the corpus below them) under the index and under both judgments artifacts (checked against the corpus)
        expected = 2 if path.startswith("data/tiny/q") else 3 if path in (paths.CHUNKS, "data/tiny/corpus.jsonl") else 1
        assert len(found) == expected, found
        assert all(line.endswith(" ok") for line in found), found
    for raw in ("data/tiny/corpus.jsonl", "data/tiny/queries.jsonl", "data/tiny/qrels/test.tsv"):
        assert all("[raw input]" in line for line in chain if raw in line)
    index_params = {"index": evaluated_copy.config.as_params("index"), "seed": 13}
    assert "   params: " + json.dumps(index_params, sort_keys=True) in result.stdout
    assert "model: pkg:all-minilm-l6-v2 (pkg) sha256 " in result.stdout

    with open(evaluated_copy.corpus / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "d7", "text": "A late addition."}) + "\n")
    result = _audit(evaluated_copy, paths.PER_QUERY)
    corpus_lines = [line for line in result.stdout.splitlines() if "data/tiny/corpus.jsonl" in line]
    assert len(corpus_lines) == 3 and all(line.endswith("CHANGED since recorded") for line in corpus_lines)
    chunks_lines = [line for line in result.stdout.splitlines() if f" {paths.CHUNKS}  " in line]
    assert chunks_lines and all(line.endswith(" ok") for line in chunks_lines)  # as the index recorded them


def test_audit_sees_an_edit_made_after_an_earlier_audit_in_the_same_process(evaluated_copy: Project) -> None:
    def corpus_status() -> str:
        node = lineage(paths.CHUNKS, evaluated_copy.root)
        return node.inputs[0].status

    assert corpus_status() == "ok"
    (evaluated_copy.corpus / "corpus.jsonl").write_text("")
    assert corpus_status() == "CHANGED since recorded"
    (evaluated_copy.corpus / "corpus.jsonl").unlink()
    assert corpus_status() == "MISSING"


def test_audit_of_a_missing_artifact_fails_clearly(evaluated_copy: Project) -> None:
    result = _audit(evaluated_copy, "artifacts/nothing.parquet")
    assert result.returncode == 1
    assert "error:" in result.stderr and "artifacts/nothing.parquet: no such artifact" in result.stderr
