"""The experiment DAG as a Prefect flow.

``STEPS`` is the DAG; dvc.yaml declares the same stages (tests/test_dag.py keeps the two in step). Each
step is a Prefect task that calls :func:`irforge.runner.run_stage`, the function behind `irforge run`, so
a flow run and `dvc repro` execute exactly the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from irforge.params import Params
from irforge.partition import partitions_hint
from irforge.preload import preload_libraries
from irforge.runner import run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    stage: str
    system: str | None = None
    after: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The dvc.yaml stage name."""
        return f"{self.stage}-{self.system}" if self.system else self.stage


NEURAL_SYSTEMS = ("dense-zs", "dense", "splade-zs", "splade")

STEPS: tuple[Step, ...] = (
    Step("chunk"),
    Step("index", "bm25", after=("chunk",)),
    Step("doc2query", after=("chunk",)),
    Step("synthesize", after=("chunk",)),
    Step("index", "bm25-d2q", after=("doc2query",)),
    Step("filter", after=("chunk", "index-bm25", "synthesize")),
    Step("mine", after=("chunk", "index-bm25", "filter")),
    Step("train", after=("chunk", "mine")),
    Step("index", "dense-zs", after=("chunk",)),
    Step("index", "dense", after=("chunk", "train")),
    Step("index", "splade-zs", after=("chunk",)),
    Step("index", "splade", after=("chunk", "train")),
    Step("evaluate", after=("index-bm25", "index-bm25-d2q", *(f"index-{s}" for s in NEURAL_SYSTEMS), "train")),
    Step("report", after=("evaluate", "train")),
)


@task(cache_policy=NO_CACHE, retries=0)
def stage_task(stage: str, system: str | None, root: str, params: Params) -> dict[str, Any]:
    preload_libraries()  # before any stage imports transformers from a second thread at the same time
    kwargs = {"system": system} if system else {}
    with partitions_hint((params.get("flow") or {}).get("partitions")):
        return run_stage(stage, root, params, **kwargs)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    return {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in items)}


@flow(name="irforge-experiment")
def experiment(params_path: str = "params.yaml", root: str = ".", overrides: list[str] | None = None,
               steps: tuple[Step, ...] = STEPS) -> dict[str, Any]:
    params = Params.load(Path(root) / params_path, parse_overrides(overrides or []))
    futures: dict[str, Any] = {}
    for step in steps:
        futures[step.key] = stage_task.with_options(name=step.key).submit(
            step.stage, step.system, root, params, wait_for=[futures[k] for k in step.after if k in futures]
        )
    return {key: future.result() for key, future in futures.items()}


def run_experiment(params_path: str = "params.yaml", root: str = ".", overrides: list[str] | None = None,
                   dask_address: str | None = None) -> dict[str, Any]:
    """Run :func:`experiment` locally, or on the Dask cluster at ``dask_address`` (else ``flow.dask_address``).

    On Dask every step runs on a worker and stages that map over rows shard them across the workers
    (irforge.partition). Workers need the project importable, the same files at ``root`` (a shared file
    system) and ``PREFECT_API_URL`` pointing at a Prefect server (otherwise each starts its own).
    """
    params = Params.load(Path(root) / params_path, parse_overrides(overrides or []))
    address = dask_address or (params.get("flow") or {}).get("dask_address")
    if not address:
        return experiment(params_path=params_path, root=root, overrides=overrides)
    import os

    from prefect_dask import DaskTaskRunner

    if not os.environ.get("PREFECT_API_URL"):
        log.warning("PREFECT_API_URL is not set: every Dask worker will start its own temporary Prefect server; "
                    "start `prefect server start` and export PREFECT_API_URL (here and on the workers)")
    log.info("running the experiment on the Dask cluster at %s", address)
    on_dask = experiment.with_options(task_runner=DaskTaskRunner(address=address))
    return on_dask(params_path=params_path, root=str(Path(root).absolute()), overrides=overrides)
