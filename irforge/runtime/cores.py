"""The core budget: how many threads a stage's torch, faiss and Lucene work may use.

Threads that outnumber the cores fight for them, and OpenMP threads that wait by spinning burn the cores the
others need: two 2-thread training jobs on 2 cores took 5.6x their idle time each (each 1.7x once waiting
threads sleep; ``benchmarks/bench_cores.py``). So:

- :func:`available_cores` is what this process may really use: its CPU affinity, capped by a cgroup CPU quota
  (a container limited to 1.5 CPUs gets 2 threads, not the host's 64).
- Every stage run takes a share: the available cores divided by the stage runs going on at once in this process
  (the Prefect flow runs independent nodes side by side), or, on a Dask worker, the worker's own thread count
  divided the same way. ``runtime.threads: N`` pins it.
- Only work whose result does not depend on the thread count takes a share (encoding, generation, search, index
  builds: tested bit-identical at 1 and 2 threads). Training does not: its gradient sums change with the thread
  count, so it uses :func:`training_threads`, fixed for a machine (never lowered by load or concurrency), and
  records it.
- ``OMP_WAIT_POLICY=PASSIVE`` is set (unless the user set it) before torch loads, in ``irforge/__init__``: waiting
  threads sleep instead of spinning, which is what keeps two pipelines on one machine from thrashing.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

_lock = threading.Lock()
_running = 0  # stage runs in progress in this process


def _own_cgroup() -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].lstrip("/")
    except OSError:
        pass
    return ""


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores, or None when unlimited (v2 ``cpu.max``, v1 CFS files)."""
    for folder in (root / _own_cgroup(), root):  # v2: this process's own group, else the namespace's root
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        except (OSError, ValueError):
            continue
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may run on: its affinity mask, capped by the cgroup CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _dask_worker_threads() -> int | None:
    if "distributed" not in sys.modules:  # never imported: not inside a Dask worker
        return None
    from distributed import get_worker

    try:
        return int(get_worker().state.nthreads)
    except (ValueError, AttributeError):
        return None


@contextlib.contextmanager
def stage_share() -> Iterator[None]:
    """Count a stage run as going on in this process while the block runs (see :func:`thread_share`)."""
    global _running
    with _lock:
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1


def running_stages() -> int:
    return _running


def thread_share(pinned: int | None = None) -> int:
    """Threads for one stage's thread-count-independent work: ``pinned`` if given, else the budget (the Dask
    worker's threads or the available cores) divided by the stage runs going on in this process."""
    if pinned:
        return pinned
    budget = _dask_worker_threads() or available_cores()
    return max(1, budget // max(1, _running))


def training_threads(pinned: int | None = None) -> int:
    """Threads for training: the same on a given machine whatever else runs, since the result depends on them."""
    return pinned or _dask_worker_threads() or available_cores()
