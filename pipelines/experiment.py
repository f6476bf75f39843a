"""The experiment DAG as a Prefect flow: one task per node of :func:`irforge.engine.nodes` (the DAG dvc.yaml
is generated from), each waiting for the nodes whose outputs it reads. Each task calls
:func:`irforge.engine.run_stage`, the function behind `irforge run`, so a flow run and `dvc repro` execute
exactly the same code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from irforge.config import Params
from irforge.engine import load_config, nodes, run_stage, validate
from irforge.runtime import partitions_hint, preload_libraries

log = logging.getLogger(__name__)


@task(cache_policy=NO_CACHE, retries=0)
def stage_task(stage: str, variant: str | None, root: str, params: Params, own_process: bool = False) -> dict[str, Any]:
    if own_process:
        return in_own_process(stage, variant, root, params)
    preload_libraries()  # before any stage imports transformers from a second thread at the same time
    config = validate(params)  # the raw params travel (picklable to Dask workers); each task validates them
    with partitions_hint(config.runtime.partitions):
        return run_stage(stage, root, config, variant)


def in_own_process(stage: str, variant: str | None, root: str, params: Params) -> dict[str, Any]:
    """The stage in a fresh process that ends with it, as `dvc repro` runs each stage: what the stage loaded
    (models, the JVM's heap, imported libraries) is gone before the next one starts, so the flow's peak memory is
    the largest single stage's, not that plus everything the earlier stages left in one long-lived process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_child_stage, stage, variant, root, params, logging.getLogger().level).result()


def _child_stage(stage: str, variant: str | None, root: str, params: Params, level: int) -> dict[str, Any]:
    from irforge.runtime import setup_logging

    setup_logging(logging.getLevelName(level))
    config = validate(params)
    with partitions_hint(config.runtime.partitions):
        return run_stage(stage, root, config, variant)


@flow(name="irforge-experiment")
def experiment(params_path: str = "params.yaml", root: str = ".", overrides: list[str] | None = None,
               only: list[str] | None = None, own_process: bool = False) -> dict[str, Any]:
    """Run every node of the DAG (or those in ``only``, by key such as ``index-bm25``) in dependency order;
    ``own_process``: each in a fresh process (:func:`in_own_process`), else in this one's task threads."""
    config = load_config(root, params_path, overrides)
    selected = [n for n in nodes(config) if only is None or n.key in only]
    futures: dict[str, Any] = {}
    for n in selected:
        futures[n.key] = stage_task.with_options(name=n.key).submit(
            n.stage.name, n.variant, root, config.params, own_process,
            wait_for=[futures[k] for k in n.after if k in futures]
        )
    return {key: future.result() for key, future in futures.items()}


def run_experiment(params_path: str = "params.yaml", root: str = ".", overrides: list[str] | None = None,
                   dask_address: str | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Run :func:`experiment` locally, or on the Dask cluster at ``dask_address`` (else ``runtime.dask_address``).

    On Dask every node runs on a worker and stages that map over rows shard them across the workers
    (irforge.runtime.partition). Workers need the project importable, the same files at ``root`` (a shared file
    system) and ``PREFECT_API_URL`` pointing at a Prefect server (otherwise each starts its own).
    """
    config = load_config(root, params_path, overrides)
    address = dask_address or config.runtime.dask_address
    if not address:
        from prefect.task_runners import ThreadPoolTaskRunner

        local = experiment.with_options(task_runner=ThreadPoolTaskRunner(max_workers=config.runtime.flow_parallel))
        return local(params_path=params_path, root=root, overrides=overrides, only=only,
                     own_process=config.runtime.flow_processes)
    from prefect_dask import DaskTaskRunner

    if not os.environ.get("PREFECT_API_URL"):
        log.warning("PREFECT_API_URL is not set: every Dask worker will start its own temporary Prefect server; "
                    "start `prefect server start` and export PREFECT_API_URL (here and on the workers)")
    log.info("running the experiment on the Dask cluster at %s", address)
    on_dask = experiment.with_options(task_runner=DaskTaskRunner(address=address))
    return on_dask(params_path=params_path, root=str(Path(root).absolute()), overrides=overrides, only=only)
