"""End to end on the tiny corpus: chunk -> index bm25 -> evaluate, directly, as a Prefect flow, and under DVC."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, Project, make_project, tiny_params, write_beir
from irforge import layout

# q3's judged documents are d3 (grade 2, found at rank 1) and d4 (grade 1, shares no word with the query).
NDCG_Q3 = 2 / (2 + 1 / math.log2(3))


def test_direct_run_gives_the_predicted_metrics(evaluated_project: Project) -> None:
    root = evaluated_project.root
    chunks = pq.read_table(root / layout.CHUNKS).to_pylist()
    assert [c["doc_id"] for c in chunks][:5] == ["d1", "d2", "d3", "d4", "d5"]
    assert len([c for c in chunks if c["doc_id"] == "d6"]) > 1  # the long document is several passages
    assert pq.read_table(root / layout.QUARANTINE).num_rows == 0

    per_query = {(r["query_id"], r["measure"]): r["value"] for r in pq.read_table(root / layout.PER_QUERY).to_pylist()}
    # q1, q2, q4: the relevant document is the only one holding the query's words.
    for q in ("q1", "q2", "q4"):
        assert per_query[(q, "RR@10")] == 1.0 and per_query[(q, "nDCG@10")] == 1.0
    assert per_query[("q3", "RR@10")] == 1.0
    assert per_query[("q3", "nDCG@10")] == pytest.approx(NDCG_Q3)
    assert per_query[("q3", "R@100")] == 0.5
    assert per_query[("q5", "RR@10")] == 0.0  # its word is in no document
    assert {q for q, _ in per_query} == {"q1", "q2", "q3", "q4", "q5"}  # q6 has no judgments

    metrics = json.loads((root / layout.METRICS).read_text())
    measures = {s: {m: v for m, v in d.items() if not m.startswith("latency")} for s, d in metrics.items()}
    assert measures == {"bm25": {"nDCG@10": round((3 + NDCG_Q3) / 5, 4), "RR@10": 0.8, "R@100": 0.7}}

    runs = pq.read_table(root / layout.RUNS).to_pylist()
    q4 = [r for r in runs if r["query_id"] == "q4"]
    assert [(r["doc_id"], r["rank"]) for r in q4] == [("d6", 1)]  # its passages collapse into one document hit
    trec = (root / layout.TREC_RUNS / "bm25.trec").read_text().splitlines()
    assert len(trec) == len(runs) and trec[0].startswith("q1 Q0 d1 1 ")


def test_rerunning_a_stage_gives_identical_bytes(evaluated_copy: Project) -> None:
    before = (evaluated_copy.root / layout.CHUNKS).read_bytes()
    evaluated_copy.run("chunk")
    assert (evaluated_copy.root / layout.CHUNKS).read_bytes() == before


def _measures(root: Path) -> dict:
    metrics = json.loads((root / layout.METRICS).read_text())
    return {s: {m: v for m, v in d.items() if not m.startswith("latency")} for s, d in metrics.items()}


def test_prefect_flow_runs_the_same_stages_with_identical_artifacts(evaluated_project: Project, tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.experiment import STEPS, experiment

    FOUNDATION = tuple(s for s in STEPS if s.key in ("chunk", "index-bm25", "evaluate"))  # no model stages here
    project = make_project(tmp_path / "project")
    with prefect_test_harness(server_startup_timeout=120):
        result = experiment(params_path="params.yaml", root=str(project.root), steps=FOUNDATION)
    assert set(result) == {step.key for step in FOUNDATION}
    assert result["chunk"]["chunks"] == 11
    for path in (layout.CHUNKS, layout.QUARANTINE):
        assert (project.root / path).read_bytes() == (evaluated_project.root / path).read_bytes(), path
    assert _measures(project.root) == _measures(evaluated_project.root)  # latencies are timings, not data
    # Lucene stamps each index with random segment ids, so the evaluation's provenance (which holds the
    # index's hash) differs; the data does not.
    for path in (layout.PER_QUERY, layout.RUNS):
        assert pq.read_table(project.root / path).equals(pq.read_table(evaluated_project.root / path)), path


# ---------------------------------------------------------------- DVC, for real (slow: one process per stage)


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


FOUNDATION = ("chunk", "index-bm25", "evaluate")


def foundation_dvc_yaml() -> dict:
    """The repository's dvc.yaml cut down to the foundation stages (and their deps on each other's outputs)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {name: stage for name, stage in dvc["stages"].items() if name in FOUNDATION}
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])}
    for stage in stages.values():
        stage["deps"] = [d for d in stage["deps"] if not d.startswith(layout.ARTIFACTS + "/") or d in outs]
    return {"stages": stages}


@pytest.mark.slow
def test_dvc_repro_and_experiments_on_a_copy_of_the_project(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(yaml.safe_dump(foundation_dvc_yaml(), sort_keys=False))
    for package in ("stages", "irforge"):  # dvc.yaml deps name code files in both
        shutil.copytree(REPO / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    write_beir(repo / "data" / "tiny")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (repo / ".gitignore").write_text("/artifacts/\n/.irforge-cache/\n")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),  # the code under test, also for the `irforge` that dvc calls
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    _sh(["git", "init", "-q"], repo, env)
    _sh(["dvc", "init", "-q"], repo, env)
    _sh(["git", "add", "-A"], repo, env)
    _sh(["git", "commit", "-qm", "tiny project"], repo, env)

    _sh(["dvc", "repro"], repo, env)
    metrics = json.loads((repo / layout.METRICS).read_text())
    measures = {s: {m: v for m, v in d.items() if not m.startswith("latency")} for s, d in metrics.items()}
    assert measures == {"bm25": {"nDCG@10": round((3 + NDCG_Q3) / 5, 4), "RR@10": 0.8, "R@100": 0.7}}
    assert "Data and pipelines are up to date." in _sh(["dvc", "repro"], repo, env)

    _sh(["git", "add", "dvc.lock"], repo, env)
    _sh(["git", "commit", "-qm", "baseline"], repo, env)
    out = _sh(["dvc", "exp", "run", "--set-param", "chunk.max_tokens=128"], repo, env)
    assert "Ran experiment" in out
    chunks = pq.read_table(repo / layout.CHUNKS)
    assert chunks.num_rows < 11  # longer passages: the long document is cut into fewer of them
    prov = json.loads(chunks.schema.metadata[b"irforge.provenance"])
    assert prov["params"]["chunk"]["max_tokens"] == 128
