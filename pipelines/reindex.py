"""Scheduled re-indexing as a Prefect flow: keep every index of the served system fresh as the corpus changes, at
the cost of the change. The steps live in :mod:`irforge.ops.reindex`; this module only wires them as tasks.

Run it once with ``irforge reindex``; deploy it on a schedule with ``prefect deploy`` (prefect.yaml) and a
process worker, or with ``python -m pipelines.reindex serve`` (``flow.serve`` with ``reindex.cron``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from irforge.config import Params
from irforge.contract import owned
from irforge.engine import load_config, validate
from irforge.ops import reindex as steps
from irforge.ops import serving


def _config(params: Params):
    return validate(params)  # tasks take the raw params (picklable) and validate them where they run


@task(name="detect-changes", cache_policy=NO_CACHE)
def plan_task(root: str, params: Params, name: str, full: bool) -> steps.Plan:
    return steps.plan(root, _config(params), name, full)


@task(name="chunk-and-index-all", cache_policy=NO_CACHE)
def build_task(root: str, params: Params, p: steps.Plan, folder: Path) -> dict[str, Any]:
    return steps.build(root, _config(params), p, folder)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(root: str, params: Params, folder: Path) -> dict[str, float] | None:
    return steps.evaluate(root, _config(params), folder)


@task(name="commit-version", cache_policy=NO_CACHE)
def commit_task(root: str, params: Params, p: steps.Plan, name: str, folder: Path, stats: dict[str, Any],
                metrics: dict[str, float] | None) -> str | None:
    return steps.commit(root, _config(params), p, name, folder, stats, metrics)


@task(name="switch-served", cache_policy=NO_CACHE)
def switch_task(root: str, params: Params, name: str, version: str, held: str | None) -> dict[str, Any]:
    return steps.serve_version(root, _config(params), name, version, held)


@flow(name="irforge-reindex")
def reindex(params_path: str = "params.yaml", root: str = ".", name: str | None = None, full: bool = False,
            overrides: list[str] | None = None) -> dict[str, Any]:
    config = load_config(root, params_path, overrides)
    name = name or config.section("serve").name
    with serving.exclusive(root, name):
        return _reindex(root, config.params, name, full)


def _reindex(root: str, params: Params, name: str, full: bool) -> dict[str, Any]:
    run_log = get_run_logger()  # shows in the worker's log and the Prefect UI
    started = time.perf_counter()
    p = plan_task(root, params, name, full)
    result: dict[str, Any] = {"name": name, "system": p.system, "mode": p.mode, "reason": p.reason,
                              "changes": p.changes.summary()}
    run_log.info("%s (%s): %s (%s) %s", name, p.system, p.mode, p.reason, p.changes.summary())
    if p.mode == "unchanged":
        return {**result, "served": p.previous}
    version, folder = serving.begin_version(root, name)
    try:
        stats = build_task(root, params, p, folder)
        metrics = evaluate_task(root, params, folder)
        held = commit_task(root, params, p, version, folder, stats, metrics)
    finally:
        owned.remove(folder)
    outcome = switch_task(root, params, name, version, held)
    result.update(version=version, metrics=metrics, **stats, **outcome)
    result["seconds"]["total"] = round(time.perf_counter() - started, 3)
    run_log.info("%s: %s", name, {k: v for k, v in result.items() if k not in ("changes", "reason")})
    return result


def serve_schedule(root: str = ".", params_path: str = "params.yaml", cron: str | None = None) -> None:
    """Long-running process: the reindex deployment on ``cron`` (default ``reindex.cron``), via ``flow.serve``."""
    cron = cron or load_config(root, params_path).section("reindex").cron
    reindex.serve(name="reindex-served", cron=cron,
                  parameters={"params_path": params_path, "root": str(Path(root).absolute())})


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m pipelines.reindex serve [CRON]   (scheduled deployment; `irforge reindex` runs once)")
    serve_schedule(cron=sys.argv[2] if len(sys.argv) > 2 else None)
