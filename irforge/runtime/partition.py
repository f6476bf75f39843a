"""Sharding of per-row work: run locally in batches, or across a Dask cluster in partitions.

A stage that maps a function over rows calls :func:`map_partitions` instead of looping itself (the chunk
stage does). Model work calls :func:`map_calls`: a list of calls of one model method (a batch to encode, a
batch of prompts to sample, a query's candidates to score), each shipped whole, so every batch is computed
exactly as a local run computes it (float results depend on a batch's make-up, not only on its rows). Outside
Dask both run in this process with a progress bar. When the stage runs as a Prefect task on a Dask worker
(``irforge flow --dask``), the rows (or calls) are cut into contiguous partitions that the cluster's workers
process in parallel (``worker_client`` lets the task hand work back to the cluster without blocking a worker
slot). Results are concatenated in partition order, so the output is identical however the work was split.

``fn`` must be picklable and take a list of rows, returning a list. A function that needs a heavy model
should load it inside (cached per process), not capture a loaded one: :func:`map_calls` rebuilds its model on
each worker from the model's ``worker_spec()`` (a factory and its arguments), once per worker process.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from irforge.runtime.progress import progress

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Partitions per mapped stage on Dask; 0 = two per worker. Set by the flow (params `runtime.partitions`).
_PARTITIONS: contextvars.ContextVar[int] = contextvars.ContextVar("irforge_partitions", default=0)


@contextlib.contextmanager
def partitions_hint(n: int | None) -> Iterator[None]:
    token = _PARTITIONS.set(int(n or 0))
    try:
        yield
    finally:
        _PARTITIONS.reset(token)


def bounds(n_items: int, n_parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges covering ``n_items`` in ``n_parts`` near-equal, non-empty parts."""
    n_parts = max(1, min(n_parts, n_items))
    size, extra = divmod(n_items, n_parts)
    out, start = [], 0
    for i in range(n_parts):
        end = start + size + (i < extra)
        out.append((start, end))
        start = end
    return out if n_items else []


def on_dask_worker() -> bool:
    if "distributed" not in sys.modules:  # never imported: certainly not inside a Dask worker
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def dask_workers(client: Any) -> int:
    """How many workers ``client``'s cluster has now (at least 1)."""
    return len(client.scheduler_info(n_workers=-1)["workers"]) or 1


def partition_count(workers: int) -> int:
    """Partitions to cut a stage's work into on Dask: the flow's ``runtime.partitions``, else
    ``IRFORGE_PARTITIONS``, else two per worker."""
    return _PARTITIONS.get() or int(os.environ.get("IRFORGE_PARTITIONS", 0)) or 2 * workers


def map_partitions(fn: Callable[[list[T]], list[R]], items: Sequence[T], batch: int = 256, desc: str = "map") -> list[R]:
    items = list(items)
    if not items:
        return []
    if not on_dask_worker():
        out: list[R] = []
        for start in progress(range(0, len(items), batch), desc=desc, unit="batch"):
            out.extend(fn(items[start : start + batch]))
        return out
    from distributed import worker_client

    with worker_client() as client:
        workers = dask_workers(client)
        shards = [items[a:b] for a, b in bounds(len(items), partition_count(workers))]
        log.info("%s: %d rows in %d partitions over %d Dask workers", desc, len(items), len(shards), workers)
        futures = client.map(fn, shards, pure=False)
        results = client.gather(futures)
    return [row for part in results for row in part]


def length_batches(texts: Sequence[str], size: int) -> list[np.ndarray]:
    """Input indices in batches of ``size``, longest texts first (stable), so a batch pads little."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[start : start + size] for start in range(0, len(texts), size)]


@functools.lru_cache(maxsize=4)
def _built(factory: Callable[..., Any], args: tuple) -> Any:
    return factory(*args)


@dataclass(frozen=True)
class WorkerCall:
    """``method`` of the model ``factory(*args)`` builds, applied to each call of a partition; the model is built
    once per worker process (and kept for the stage's later partitions)."""

    factory: Callable[..., Any]
    args: tuple
    method: str

    def __call__(self, calls: list[tuple]) -> list[Any]:
        import torch

        from irforge.runtime.cores import thread_share

        torch.set_num_threads(thread_share())  # the worker's own threads, not the machine's cores
        fn = getattr(_built(self.factory, self.args), self.method)
        return [fn(*call) for call in calls]


def map_calls(model: Any, method: str, calls: Sequence[tuple], desc: str, unit: str = "batch",
              on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """``model.method(*call)`` for every call, in order. On a Dask worker the calls are spread over the cluster
    (whole calls: a batch is never split), each worker rebuilding the model from ``model.worker_spec()``.
    ``on_result(i, result)`` sees each result as it is ready here (after each call; on Dask, once gathered)."""
    calls = list(calls)
    if not calls:
        return []
    if on_dask_worker():
        factory, args = model.worker_spec()
        results = map_partitions(WorkerCall(factory, args, method), calls, desc=desc)
        for i, result in enumerate(results):
            if on_result is not None:
                on_result(i, result)
        return results
    fn, results = getattr(model, method), []
    for i, call in enumerate(progress(calls, desc=desc, unit=unit)):
        results.append(fn(*call))
        if on_result is not None:
            on_result(i, results[-1])
    return results
