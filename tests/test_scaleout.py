"""Scale-out: the experiment flow on a 2-worker Dask LocalCluster gives the same artifacts as a local run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from irforge.contract.artifacts import read_provenance
from irforge.runtime.partition import bounds, map_partitions
from tests._ops_project import make_project

BYTE_IDENTICAL = ("chunk/chunks.parquet", "chunk/quarantine.parquet", "judgments/queries.parquet",
                  "judgments/qrels.parquet")
SAME_DATA = ("evaluate/runs.parquet", "evaluate/per_query.parquet")


def test_bounds_cover_items_in_order():
    assert bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert bounds(2, 8) == [(0, 1), (1, 2)]
    assert bounds(0, 4) == []


def test_map_partitions_locally_keeps_order():
    assert map_partitions(lambda xs: [x * 2 for x in xs], range(1000), batch=7) == [x * 2 for x in range(1000)]


def _workers_of(items: list[int]) -> list[str]:
    from distributed import get_worker

    return [get_worker().address] * len(items)


def _map_on_worker(n: int) -> list[str]:
    return map_partitions(_workers_of, list(range(n)), desc="probe")


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow  # a Prefect server + a 2-process Dask cluster: ~40 s on 2 shared cores
def test_dask_flow_artifacts_identical_to_local(tmp_path, monkeypatch, prefect_server):
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    from pipelines.experiment import experiment

    # The BM25 slice of the DAG: enough to exercise sharding and the task runner without loading the LLMs twice.
    only = ["chunk", "judgments", "index-bm25", "evaluate"]

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv("IRFORGE_PROGRESS", "0")
    # Workers are separate processes: they inherit the environment, and need the test server's URL.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    local = make_project(tmp_path / "local")
    dask = make_project(tmp_path / "dask")

    local_result = experiment(params_path="params.yaml", root=str(local), only=only)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = experiment.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        result = on_dask(params_path="params.yaml", root=str(dask), only=only)
        with Client(cluster) as client:  # mapped work really spreads over both workers
            used = set(client.submit(_map_on_worker, 40, pure=False).result())
            assert used == set(cluster.workers[i].worker_address for i in cluster.workers)

    assert set(result) == set(local_result) == set(only)
    assert result["chunk"]["chunks"] > 60 and result["chunk"] == local_result["chunk"]
    for rel in BYTE_IDENTICAL:
        assert (local / "artifacts" / rel).read_bytes() == (dask / "artifacts" / rel).read_bytes(), rel
    # Downstream of the Lucene index only the index's recorded sha256 may differ: Lucene stamps random
    # segment ids into its files, so two local builds differ in bytes too. Data and the rest are equal.
    for rel in SAME_DATA:
        a, b = local / "artifacts" / rel, dask / "artifacts" / rel
        assert pq.read_table(a).equals(pq.read_table(b)), f"{rel}: rows differ between the local and the Dask run"
        assert _provenance_sans_index(a) == _provenance_sans_index(b), rel
    metrics = [{s: {m: v for m, v in d.items() if not m.startswith("latency")}  # timings are not data
                for s, d in json.loads((p / "artifacts/evaluate/metrics.json").read_text()).items()}
               for p in (local, dask)]
    assert metrics[0] == metrics[1] and metrics[0]["bm25"]["nDCG@10"] > 0
    assert (local / "artifacts/evaluate/trec/bm25.trec").read_text() == (dask / "artifacts/evaluate/trec/bm25.trec").read_text()


def _provenance_sans_index(path: Path) -> dict:
    record = read_provenance(path)
    for item in record["inputs"]:
        if item["path"].startswith("artifacts/index/"):
            item.pop("sha256")
    return record


def _models_built_here() -> int:
    from irforge.runtime.partition import _built

    return _built.cache_info().currsize


@pytest.mark.slow  # a 2-process Dask cluster, tiny models loaded in each: ~40 s on 2 shared cores
def test_generation_encoding_and_teacher_scoring_on_dask_equal_a_local_run(tmp_path, tiny_models):
    """synthesize (LM sampling in batches), and teach with a bi-encoder, a SPLADE and a query-likelihood teacher
    (encoding, per-query scoring), each run as a task on a Dask worker that spreads its batches and queries over
    both workers: the artifacts hold the same rows as a local run, and every worker built the models."""
    from distributed import Client, LocalCluster

    import paths as P
    from irforge.contract.artifacts import read_artifact
    from irforge.engine import run_stage, validate
    from tests.conftest import make_project as make_corpus_project
    from tests.tiny_llm import build_tiny_llama
    from tests.trainkit import make_project as make_teach_project

    llama = build_tiny_llama(tmp_path / "llama")
    teachers = {"dense": {"kind": "bi-encoder", "model": str(tiny_models["dense"]), "max_length": 32},
                "splade": {"kind": "splade", "model": str(tiny_models["splade"]), "max_length": 32},
                "qlm": {"kind": "qlm", "model": str(llama), "max_length": 32, "dtype": "float32"}}
    generation = {"synthesize.model": str(llama), "synthesize.max_chunks": None, "synthesize.n": 2,
                  "synthesize.batch_size": 3, "synthesize.dtype": "float32", "synthesize.max_new_tokens": 5,
                  "synthesize.cleaning": {"min_words": 1}, "runtime.encode_batch_size": 4}
    roots, configs = {}, {}
    for where in ("local", "dask"):
        roots[where] = {"gen": tmp_path / where / "gen", "teach": tmp_path / where / "teach"}
        project = make_corpus_project(roots[where]["gen"])
        configs[("gen", where)] = validate(project.params.with_overrides(generation))
        run_stage("chunk", project.root, configs[("gen", where)])
        run_stage("judgments", project.root, configs[("gen", where)])
        roots[where]["teach"].mkdir(parents=True)
        configs[("teach", where)] = validate(make_teach_project(roots[where]["teach"], tiny_models,
                                                               **{"teach.teachers": teachers,
                                                                  "runtime.encode_batch_size": 4}))

    for part, stage in (("gen", "synthesize"), ("teach", "teach")):
        run_stage(stage, roots["local"][part], configs[(part, "local")])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for part, stage in (("gen", "synthesize"), ("teach", "teach")):
            client.submit(run_stage, stage, roots["dask"][part], configs[(part, "dask")], pure=False).result()
        built = client.run(_models_built_here)
    assert len(built) == 2 and all(n >= 1 for n in built.values()), built  # both workers did model work

    for part, rel, kind in (("gen", P.SYNTHETIC, "generated_queries"), ("teach", P.TEACHER_SCORES, "teacher_scores")):
        local = read_artifact(roots["local"][part] / rel, kind)
        dask = read_artifact(roots["dask"][part] / rel, kind)
        assert local.num_rows > 10 and local.equals(dask), rel
    teachers_scored = set(read_artifact(roots["dask"]["teach"] / P.TEACHER_SCORES, "teacher_scores").column("teacher").to_pylist())
    assert teachers_scored == {"dense", "splade", "qlm", "combined"}
