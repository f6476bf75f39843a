"""End to end on the tiny corpus: chunk, judgments -> index bm25 -> evaluate, directly, as a Prefect flow, and
under DVC (dvc.yaml generated from the stage declarations); the generation stages concurrently in the flow."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

import paths
from conftest import REPO, Project, make_project, tiny_params, write_beir

# q3's judged documents are d3 (grade 2, found at rank 1) and d4 (grade 1, shares no word with the query).
NDCG_Q3 = 2 / (2 + 1 / math.log2(3))
# The BM25 slice of the DAG (node keys): no model stages.
FOUNDATION = ("chunk", "judgments", "index-bm25", "evaluate")


def test_direct_run_gives_the_predicted_metrics(evaluated_project: Project) -> None:
    root = evaluated_project.root
    chunks = pq.read_table(root / paths.CHUNKS).to_pylist()
    assert [c["doc_id"] for c in chunks][:5] == ["d1", "d2", "d3", "d4", "d5"]
    assert len([c for c in chunks if c["doc_id"] == "d6"]) > 1  # the long document is several passages
    assert pq.read_table(root / paths.QUARANTINE).num_rows == 0

    per_query = {(r["query_id"], r["measure"]): r["value"] for r in pq.read_table(root / paths.PER_QUERY).to_pylist()}
    # q1, q2, q4: the relevant document is the only one holding the query's words.
    for q in ("q1", "q2", "q4"):
        assert per_query[(q, "RR@10")] == 1.0 and per_query[(q, "nDCG@10")] == 1.0
    assert per_query[("q3", "RR@10")] == 1.0
    assert per_query[("q3", "nDCG@10")] == pytest.approx(NDCG_Q3)
    assert per_query[("q3", "R@100")] == 0.5
    assert per_query[("q5", "RR@10")] == 0.0  # its word is in no document
    assert {q for q, _ in per_query} == {"q1", "q2", "q3", "q4", "q5"}  # q6 has no judgments

    metrics = json.loads((root / paths.METRICS).read_text())
    measures = {s: {m: v for m, v in d.items() if not m.startswith("latency") and m not in ("dev", "test")}
                for s, d in metrics.items()}
    assert measures == {"bm25": {"nDCG@10": round((3 + NDCG_Q3) / 5, 4), "RR@10": 0.8, "R@100": 0.7}}
    # The same measures over each split's queries alone.
    splits = {r["query_id"]: r["split"] for r in pq.read_table(root / paths.QUERIES).to_pylist()}
    for split in ("dev", "test"):
        qids = [q for q in ("q1", "q2", "q3", "q4", "q5") if splits[q] == split]
        expected = {m: round(sum(per_query[(q, m)] for q in qids) / len(qids), 4) for m in ("nDCG@10", "RR@10", "R@100")}
        assert metrics["bm25"][split] == expected

    runs = pq.read_table(root / paths.RUNS).to_pylist()
    q4 = [r for r in runs if r["query_id"] == "q4"]
    assert [(r["doc_id"], r["rank"]) for r in q4] == [("d6", 1)]  # its passages collapse into one document hit
    trec = (root / paths.TREC_RUNS / "bm25.trec").read_text().splitlines()
    assert len(trec) == len(runs) and trec[0].startswith("q1 Q0 d1 1 ")


def test_rerunning_a_stage_gives_identical_bytes(evaluated_copy: Project) -> None:
    before = (evaluated_copy.root / paths.CHUNKS).read_bytes()
    evaluated_copy.run("chunk")
    assert (evaluated_copy.root / paths.CHUNKS).read_bytes() == before


def _measures(root: Path) -> dict:
    metrics = json.loads((root / paths.METRICS).read_text())
    return {s: {m: v for m, v in d.items() if not m.startswith("latency")} for s, d in metrics.items()}


def test_prefect_flow_runs_the_same_stages_with_identical_artifacts(evaluated_project: Project, tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.experiment import experiment

    project = make_project(tmp_path / "project")
    with prefect_test_harness(server_startup_timeout=120):
        result = experiment(params_path="params.yaml", root=str(project.root), only=list(FOUNDATION))
    assert set(result) == set(FOUNDATION)  # no model stage ran
    assert result["chunk"]["chunks"] == 11
    for path in (paths.CHUNKS, paths.QUARANTINE, paths.QUERIES, paths.QRELS):
        assert (project.root / path).read_bytes() == (evaluated_project.root / path).read_bytes(), path
    assert not (project.root / paths.DOC2QUERY).exists() and not (project.root / paths.SYNTHETIC).exists()
    assert _measures(project.root) == _measures(evaluated_project.root)  # latencies are timings, not data
    # Lucene stamps each index with random segment ids, so the evaluation's provenance (which holds the
    # index's hash) differs; the data does not.
    for path in (paths.PER_QUERY, paths.RUNS):
        assert pq.read_table(project.root / path).equals(pq.read_table(evaluated_project.root / path)), path


# ---------------------------------------------------------------- the two generation stages at once

# Runs the flow's doc2query and synthesize tasks (which nothing orders: both only wait for chunk and
# judgments, already run) in a fresh interpreter, where transformers has never been imported: their first
# imports of it happen in two task threads at once. That used to fail one of them with "ImportError: cannot
# import name 'AutoConfig' from 'transformers'". Records when each task ran, and on which thread.
CONCURRENT_FLOW = """
import json, sys, threading, time
root = sys.argv[1]
from prefect.testing.utilities import prefect_test_harness
import pipelines.experiment as experiment_module

assert "transformers" not in sys.modules, "imported before the tasks: the race would not be exercised"
events = []
real_preload, real_run_stage = experiment_module.preload_libraries, experiment_module.run_stage

def preload():
    events.append(("start", threading.get_ident(), time.monotonic()))
    real_preload()

def run_stage(stage, *args, **kwargs):
    try:
        return real_run_stage(stage, *args, **kwargs)
    finally:
        events.append((stage, threading.get_ident(), time.monotonic()))

experiment_module.preload_libraries, experiment_module.run_stage = preload, run_stage
with prefect_test_harness(server_startup_timeout=120):
    result = experiment_module.experiment(params_path="params.yaml", root=root, only=["doc2query", "synthesize"])
print("RESULT " + json.dumps({"result": {k: v["queries"] for k, v in result.items()}, "events": events}))
"""


def _events(stdout: str) -> dict[str, Any]:
    [line] = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_flow_runs_both_generation_stages_concurrently_in_a_fresh_process(tmp_path: Path) -> None:
    from tiny_llm import build_tiny_llama, query_stage_params

    model = build_tiny_llama(tmp_path / "tiny-llama")
    project = make_project(tmp_path / "project")
    project.set_params(**query_stage_params(model))
    project.run("chunk")
    project.run("judgments")

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "IRFORGE_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", CONCURRENT_FLOW, str(project.root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "cannot import name" not in done.stderr
    out = _events(done.stdout)
    assert out["result"] == {"doc2query": 6, "synthesize": 6}  # 3 chunks x 2 samples each, both tasks succeeded
    starts = [(thread, t) for what, thread, t in out["events"] if what == "start"]
    ends = {what: (thread, t) for what, thread, t in out["events"] if what != "start"}
    assert len(starts) == 2 and set(ends) == {"doc2query", "synthesize"}
    assert starts[0][0] != starts[1][0]  # two task threads ...
    assert max(t for _, t in starts) < min(t for _, t in ends.values())  # ... both started before either ended
    for path in (paths.DOC2QUERY, paths.EXPANDED, paths.SYNTHETIC):
        assert pq.read_table(project.root / path).num_rows > 0, path


# ---------------------------------------------------------------- DVC, for real (slow: one process per stage)


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _dvc_env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),  # the code under test, also for the `irforge` that dvc calls
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def _dvc_repo(repo: Path, params: dict[str, Any]) -> dict[str, Any]:
    """A git + DVC repository holding the tiny corpus, ``params`` and the dvc.yaml generated from them (with the
    code folders its stages list as deps); returns the generated dvc.yaml."""
    from irforge.config import Params
    from irforge.engine import validate
    from irforge.engine.dvc import write

    repo.mkdir()
    write_beir(repo / "data" / "tiny")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for package in ("irforge", "stages", "pipelines"):  # dvc.yaml deps name code in these
        shutil.copytree(REPO / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    write(repo, validate(Params(params)))
    (repo / ".gitignore").write_text("/artifacts/\n/.irforge-cache/\n")
    env = _dvc_env()
    _sh(["git", "init", "-q"], repo, env)
    _sh(["dvc", "init", "-q"], repo, env)
    _sh(["git", "add", "-A"], repo, env)
    _sh(["git", "commit", "-qm", "tiny project"], repo, env)
    assert "dvc.yaml is up to date" in _sh(["irforge", "dag", "--check"], repo, env)
    return yaml.safe_load((repo / "dvc.yaml").read_text())


@pytest.mark.slow
def test_dvc_repro_and_experiments_on_a_copy_of_the_project(tmp_path: Path) -> None:
    repo, env = tmp_path / "repo", _dvc_env()
    dvc = _dvc_repo(repo, tiny_params())
    assert set(FOUNDATION) <= set(dvc["stages"])
    assert dvc["stages"]["index-bm25"]["cmd"] == "irforge run index bm25"
    assert "artifacts/chunk/chunks.parquet" in dvc["stages"]["index-bm25"]["deps"]

    # The BM25 slice of the generated DAG: evaluate and what it depends on (no model stage runs).
    out = _sh(["dvc", "repro", "evaluate"], repo, env)
    assert all(f"Running stage '{key}'" in out for key in FOUNDATION), out
    assert "Running stage 'doc2query'" not in out and not (repo / paths.DOC2QUERY).exists()
    metrics = json.loads((repo / paths.METRICS).read_text())
    measures = {s: {m: v for m, v in d.items() if not m.startswith("latency") and m not in ("dev", "test")}
                for s, d in metrics.items()}
    assert measures == {"bm25": {"nDCG@10": round((3 + NDCG_Q3) / 5, 4), "RR@10": 0.8, "R@100": 0.7}}
    assert "Data and pipelines are up to date." in _sh(["dvc", "repro", "evaluate"], repo, env)

    _sh(["git", "add", "dvc.lock"], repo, env)
    _sh(["git", "commit", "-qm", "baseline"], repo, env)
    out = _sh(["dvc", "exp", "run", "--set-param", "chunk.max_tokens=128", "evaluate"], repo, env)
    assert "Ran experiment" in out
    chunks = pq.read_table(repo / paths.CHUNKS)
    assert chunks.num_rows < 11  # longer passages: the long document is cut into fewer of them
    prov = json.loads(chunks.schema.metadata[b"irforge.provenance"])
    assert prov["params"]["chunk"]["max_tokens"] == 128


@pytest.mark.slow
def test_dvc_repro_of_a_project_without_judgments(tmp_path: Path) -> None:
    """corpus.queries and corpus.qrels null: the whole DAG runs under `dvc repro` (a dep that resolved to null
    used to stop DVC with an AssertionError before any stage ran); evaluation is empty, not an error."""
    from tiny_llm import build_tiny_llama, query_stage_params

    model = build_tiny_llama(tmp_path / "tiny-llama")
    params = {**tiny_params(judged=False), **query_stage_params(model)}
    params["train"] = {**params["train"], "models": []}  # no trainer: the DAG stays small
    params["report"] = {**params["report"], "ablation": None}  # report.scale kept: the committed curve is copied
    repo, env = tmp_path / "repo", _dvc_env()
    dvc = _dvc_repo(repo, params)
    (repo / "benchmarks/results").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks/results/scale.json", repo / "benchmarks/results/scale.json")
    text = (repo / "dvc.yaml").read_text()
    assert "${corpus.queries}" not in text and "${corpus.qrels}" not in text and "None" not in text
    assert [d for d in dvc["stages"]["judgments"]["deps"] if not d.startswith(("stages/", "irforge/"))] == [
        "${corpus.path}", "artifacts/chunk/chunks.parquet"]

    out = _sh(["dvc", "repro"], repo, env)
    assert "AssertionError" not in out
    for key in ("chunk", "judgments", "doc2query", "index-bm25", "synthesize", "evaluate", "filter", "mine",
                "report"):
        assert f"Running stage '{key}'" in out, key
    assert pq.read_table(repo / paths.QUERIES).num_rows == 0 and pq.read_table(repo / paths.QRELS).num_rows == 0
    assert json.loads((repo / paths.METRICS).read_text()) == {}
    assert pq.read_table(repo / paths.PER_QUERY).num_rows == 0 and pq.read_table(repo / paths.RUNS).num_rows == 0
    assert pq.read_table(repo / paths.SYNTHETIC).num_rows == 6  # generation needs no judgments
    # Nothing to choose by: the verdict serves the default and points to the judging page, as the report does.
    verdict = json.loads((repo / "artifacts/evaluate/verdict.json").read_text())
    assert verdict["queries"] == 0 and verdict["choice"] and "irforge judge serve" in verdict["choice_reason"]
    page = (repo / paths.REPORT / "index.html").read_text()
    assert "Which system to serve" in page and "irforge judge serve" in page
    # this corpus's cost read off the measured curve, its passage count marked on the plot
    assert "<h2>Cost at scale</h2><p>This corpus has 11 passages" in page and (repo / paths.REPORT / "scale.png").exists()
    assert "Data and pipelines are up to date." in _sh(["dvc", "repro"], repo, env)


def test_the_local_flow_runs_one_stage_at_a_time_unless_told_otherwise(evaluated_copy: Project, monkeypatch) -> None:
    """runtime.flow_parallel: 1 (the default) keeps the flow's peak memory at the largest stage's, as dvc repro's
    is; a higher value lets independent branches overlap."""
    import threading
    import time

    from prefect.testing.utilities import prefect_test_harness

    import pipelines.experiment as experiment_module

    running, peak, lock = [0], [0], threading.Lock()

    def fake_stage(stage, root, config, variant=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1
        return {}

    monkeypatch.setattr(experiment_module, "run_stage", fake_stage)
    seen = {}
    with prefect_test_harness(server_startup_timeout=120):
        for parallel in (1, 2):
            peak[0] = 0
            experiment_module.run_experiment(root=str(evaluated_copy.root), only=["judgments", "index-bm25"],
                                             overrides=[f"runtime.flow_parallel={parallel}",
                                                        "runtime.flow_processes=false"])
            seen[parallel] = peak[0]
    assert seen == {1: 1, 2: 2}


def test_each_stage_of_the_local_flow_runs_in_a_process_of_its_own(evaluated_copy: Project) -> None:
    """runtime.flow_processes (the default): a fresh process per stage, as dvc repro, so nothing an earlier stage
    loaded stays in memory; the stage lock records the pid that ran it."""
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.experiment import run_experiment

    lock = evaluated_copy.root / "artifacts/.locks/judgments.lock"
    before = (evaluated_copy.root / paths.QRELS).read_bytes()
    pids = {}
    with prefect_test_harness(server_startup_timeout=120):
        for processes in ("true", "false"):
            result = run_experiment(root=str(evaluated_copy.root), only=["judgments"],
                                    overrides=[f"runtime.flow_processes={processes}"])
            assert result["judgments"]["judged_queries"] == 5
            pids[processes] = int(lock.read_text())
    assert pids["false"] == os.getpid() and pids["true"] != os.getpid()
    assert (evaluated_copy.root / paths.QRELS).read_bytes() == before  # the same artifact either way
