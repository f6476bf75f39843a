"""What every benchmark shares: the conditions it ran under, the two sides alternated over rounds, min and
median of each side, and an optional second job competing for the cores.

A ratio measured on an idle machine is not the one a user sees next to another job, so each benchmark prints
the cores it may use and the load average before and after, warns when the machine was busy, and can be run
again with ``--load`` to measure the same ratio while a second irforge job encodes on the same cores.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from irforge.runtime.cores import available_cores  # noqa: E402

# A second job for --load: what a neighbouring pipeline's index stage does (MiniLM encoding, the budget's threads).
LOAD_JOB = """
import sys, pyarrow.parquet as pq
from irforge.models import DenseEncoder
from irforge.runtime.cores import thread_share
texts = [f"passage {i} about the boundary layer, heat transfer and the flow past a flat plate " * 6 for i in range(64)]
encoder = DenseEncoder("pkg:all-minilm-l6-v2", sys.argv[1], threads=thread_share(), use_cache=False)
while True:
    encoder.encode(texts)
"""


def conditions() -> str:
    one, five, _ = os.getloadavg()
    return f"{available_cores()} cores, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


_LOAD_JOBS = 0
_START: tuple[float, float, float] | None = None


def others_busy(seconds: float = 1.0) -> float:
    """Cores other processes keep busy now: /proc/stat's busy time minus ours, over ``seconds``. (The load
    average is not used for the warning: it still counts a benchmark that ended a minute ago.)"""
    busy, own, started = _busy_seconds(), _own_seconds(), time.perf_counter()
    time.sleep(seconds)
    return max(0.0, (_busy_seconds() - busy - (_own_seconds() - own)) / (time.perf_counter() - started))


def header(what: str) -> None:
    """Print what is measured and the conditions; start counting the CPU other processes use meanwhile."""
    global _START
    others = others_busy()
    print(f"{what}\nbefore: {conditions()}; other processes keep {others:.2f} cores busy now"
          f"{' (with a --load job beside it)' if _LOAD_JOBS else ''}")
    if others > 0.5 + _LOAD_JOBS * available_cores():
        print("WARNING: the machine is busy before the benchmark starts: the ratios below measure the neighbours "
              "too. Run again on an idle machine, or quote the load with the ratio.")
    _START = (time.perf_counter(), _busy_seconds(), _own_seconds())


def footer() -> None:
    """Print the conditions after, and how many cores other processes kept busy while the benchmark ran."""
    print(f"after: {conditions()}")
    if _START is None:
        return
    wall, busy, own = time.perf_counter() - _START[0], _busy_seconds() - _START[1], _own_seconds() - _START[2]
    others = max(0.0, (busy - own) / wall)
    note = " (the --load job included)" if _LOAD_JOBS else ""
    print(f"other processes kept {others:.2f} of {available_cores()} cores busy during the benchmark{note}")
    if others > 0.5 + _LOAD_JOBS * available_cores():
        print("WARNING: the machine was busy during the benchmark: compare the ratios, not the times.")


def alternate(sides: dict[str, Callable[[], Any]], rounds: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Time each side once per round, the order reversed every other round (ABBA), so drift in the machine's
    load falls on both sides alike. Returns the times per side and each side's last result."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, Any] = {}
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            started = time.perf_counter()
            results[name] = sides[name]()
            times[name].append(time.perf_counter() - started)
    return times, results


def summary(times: dict[str, list[float]], unit_count: int | None = None, unit: str = "items") -> None:
    """One line per side: min and median seconds (and throughput on the median when ``unit_count`` is given)."""
    width = max(len(name) for name in times)
    for name, values in times.items():
        med = statistics.median(values)
        rate = f"  {unit_count / med:8.1f} {unit}/s" if unit_count else ""
        print(f"  {name:<{width}}  min {min(values):7.2f} s  median {med:7.2f} s{rate}  ({len(values)} rounds)")


def ratio(times: dict[str, list[float]], slower: str, faster: str) -> float:
    """How many times faster ``faster`` is than ``slower``, on the medians."""
    return statistics.median(times[slower]) / statistics.median(times[faster])


@contextlib.contextmanager
def competing_job(enabled: bool, cache_dir: Path | str = ROOT / ".irforge-cache") -> Iterator[None]:
    """Run a second irforge job (MiniLM encoding in a loop) for the duration of the block when ``enabled``."""
    global _LOAD_JOBS
    if not enabled:
        yield
        return
    env = dict(os.environ, IRFORGE_PROGRESS="0", HF_HUB_OFFLINE="1")
    job = subprocess.Popen([sys.executable, "-c", LOAD_JOB, str(cache_dir)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _LOAD_JOBS += 1
    time.sleep(8)  # let it load its model and reach its steady state
    try:
        yield
    finally:
        job.terminate()
        job.wait()
        _LOAD_JOBS -= 1


def add_arguments(parser: Any, rounds: int = 3) -> None:
    parser.add_argument("--rounds", type=int, default=rounds, help="rounds; the sides alternate in each")
    parser.add_argument("--load", action="store_true",
                        help="measure while a second irforge job (MiniLM encoding) competes for the cores")
