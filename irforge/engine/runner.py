"""Run one stage: the single entry point behind `irforge run` (hence `dvc repro`), the Prefect flows and the
ablation driver."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from irforge.config import Config, Params
from irforge.contract import ARTIFACTS
from irforge.engine.context import StageContext
from irforge.engine.dag import load_config, node, validate
from irforge.runtime.cores import running_stages, stage_share

log = logging.getLogger(__name__)


def run_stage(name: str, root: Path | str = ".", config: Config | Params | None = None, variant: str | None = None,
              ) -> dict[str, Any]:
    """Run stage ``name`` (for ``variant``, when it has variants) in the project at ``root``; ``config`` is the
    validated params (raw :class:`Params` are validated first; None: ``root/params.yaml``)."""
    root = Path(root)
    if config is None:
        config = load_config(root)
    elif isinstance(config, Params):
        config = validate(config)
    target = node(config, name, variant)
    ctx = StageContext(target, root, config)
    # The lock: a second run of the same stage here would delete this one's temp files. The share: stage runs
    # going on at once in this process (the flow's parallel nodes) divide the cores between them.
    with stage_lock(root, target.key), stage_share():
        log.info("stage %s: start (%d threads, %d stage runs in this process)", target.key, ctx.threads,
                 running_stages())
        started, cpu = time.perf_counter(), cpu_seconds()
        summary = target.module.run(ctx) or {}
        release_memory()  # a flow runs every stage in one process: what this stage freed goes back to the OS
        # CPU time (this process's threads, JVM included, and finished child processes): what a stage costs on a
        # shared machine, where wall time depends on the neighbours. Parallel stages in one process share it.
        log.info("stage %s: done in %.1fs (CPU %.1fs, memory %s) %s", target.key, time.perf_counter() - started,
                 cpu_seconds() - cpu, memory_note(), {k: v for k, v in summary.items() if k != "metrics"})
    return summary


def release_memory() -> None:
    """Collect the stage's garbage (models, batches) and hand freed heap pages back to the OS (glibc keeps them
    otherwise), so the next stage of a long-lived process starts where a fresh one would."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_note() -> str:
    """This process's resident memory now and its peak so far (what a long-lived flow process accumulates)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except OSError:
        return f"peak {peak:.1f} GiB"
    return f"{now:.1f} GiB, peak {peak:.1f} GiB"


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class StageBusyError(RuntimeError):
    """The same stage is already running in this project."""


@contextlib.contextmanager
def stage_lock(root: Path, key: str) -> Iterator[None]:
    """Hold ``artifacts/.locks/<key>.lock`` while a stage runs (released with the process, also on kill -9)."""
    import fcntl

    folder = Path(root) / ARTIFACTS / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise StageBusyError(f"stage {key} is already running in {root} (pid {holder}; lock {path})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
