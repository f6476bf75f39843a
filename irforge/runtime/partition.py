"""Sharding of per-row work: run locally in batches, or across a Dask cluster in partitions.

A stage that maps a function over rows calls :func:`map_partitions` instead of looping itself (today the
chunk stage does; generation and encoding still loop locally). Outside Dask it runs ``fn`` over consecutive batches
with a progress bar. When the stage runs as a Prefect task on a Dask worker (``irforge flow --dask``), the
rows are cut into contiguous partitions that the cluster's workers process in parallel (``worker_client``
lets the task hand work back to the cluster without blocking a worker slot). Results are concatenated in
partition order, so the output is identical however the work was split.

``fn`` must be picklable and take a list of rows, returning a list. A function that needs a heavy model
should load it inside (cached per process), not capture a loaded one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

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


def _on_dask_worker() -> bool:
    if "distributed" not in sys.modules:  # never imported: certainly not inside a Dask worker
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def map_partitions(fn: Callable[[list[T]], list[R]], items: Sequence[T], batch: int = 256, desc: str = "map") -> list[R]:
    items = list(items)
    if not items:
        return []
    if not _on_dask_worker():
        out: list[R] = []
        for start in progress(range(0, len(items), batch), desc=desc, unit="batch"):
            out.extend(fn(items[start : start + batch]))
        return out
    from distributed import worker_client

    with worker_client() as client:
        workers = len(client.scheduler_info(n_workers=-1)["workers"]) or 1
        n_parts = _PARTITIONS.get() or int(os.environ.get("IRFORGE_PARTITIONS", 0)) or 2 * workers
        shards = [items[a:b] for a, b in bounds(len(items), n_parts)]
        log.info("%s: %d rows in %d partitions over %d Dask workers", desc, len(items), len(shards), workers)
        futures = client.map(fn, shards, pure=False)
        results = client.gather(futures)
    return [row for part in results for row in part]
