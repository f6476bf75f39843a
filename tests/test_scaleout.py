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
