"""Two jobs on the same cores: before (each takes every core and OpenMP's waiting threads spin) vs irforge's
core budget (waiting threads sleep; thread-count-independent work takes its share of the cores).

Each job is a fresh process doing what a pipeline stage does: MiniLM encoding (which takes a share) or MiniLM
training steps (which keep the machine's full thread count: their result depends on it). Measured, sides
alternated over rounds:
  1. one job alone, OpenMP's default waiting vs passive waiting (the cost of sleeping threads on an idle machine);
  2. two jobs at once, before vs with the budget: each job's wall time against its time alone.

    python benchmarks/bench_cores.py [--rounds 3] [--work encode train]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import conditions

JOB = """
import os, sys, time
work, mode, share = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "before":
    import torch  # libgomp reads OMP_WAIT_POLICY when it loads: before irforge can set it
import irforge, torch
from irforge.runtime.cores import available_cores
threads = available_cores() if mode == "before" or work == "train" else max(1, available_cores() // share)
torch.set_num_threads(threads)
from irforge.models import load_sentence_transformer
from irforge.models.resolve import resolve_model
model = load_sentence_transformer(resolve_model("pkg:all-minilm-l6-v2", sys.argv[4]), 128)
texts = [f"passage {i} on the boundary layer, heat transfer and the flow past a flat plate " * 5 for i in range(192)]
started = time.perf_counter()
if work == "encode":
    with torch.inference_mode():
        model.encode(texts, batch_size=32)
else:
    opt = torch.optim.AdamW(model.parameters(), 1e-5)
    for i in range(0, 192, 16):
        out = model(model.tokenize(texts[i:i + 16]))["sentence_embedding"]
        (out @ out.T).logsumexp(1).mean().backward()
        opt.step(); opt.zero_grad()
print(time.perf_counter() - started)
"""


def jobs(work: str, mode: str, at_once: int) -> list[float]:
    """Start ``at_once`` jobs together; each one's timed section in seconds."""
    env = dict(os.environ, IRFORGE_PROGRESS="0", HF_HUB_OFFLINE="1")
    env.pop("OMP_WAIT_POLICY", None)
    cache = str(conditions.ROOT / ".irforge-cache")
    procs = [subprocess.Popen([sys.executable, "-c", JOB, work, mode, str(at_once), cache], cwd=conditions.ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(at_once)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a {work} job failed: {outs}")
    return [float(o.strip().splitlines()[-1]) for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    conditions.add_arguments(parser)
    parser.add_argument("--work", nargs="+", default=["encode", "train"], choices=["encode", "train"])
    args = parser.parse_args()
    conditions.header("two jobs on the same cores: before vs the core budget")
    for work in args.work:
        alone: dict[str, list[float]] = {"before": [], "budget": []}
        pair: dict[str, list[float]] = {"before": [], "budget": []}
        for r in range(args.rounds):
            for mode in ("before", "budget") if r % 2 == 0 else ("budget", "before"):
                alone[mode] += jobs(work, mode, 1)
                time.sleep(1)
                pair[mode] += jobs(work, mode, 2)
                time.sleep(1)
        print(f"{work}:")
        conditions.summary({f"alone, {m}": alone[m] for m in alone} | {f"two at once, {m} (each)": pair[m] for m in pair})
        for mode in ("before", "budget"):
            slow = statistics.median(pair[mode]) / statistics.median(alone[mode])
            print(f"  {mode:>6}: two at once take {slow:.2f}x the time alone (ideal on 2 cores: about 2x or less)")
        print(f"  passive waiting alone costs {statistics.median(alone['budget']) / statistics.median(alone['before']):.2f}x "
              "the default's time (1.00 = free)")
    conditions.footer()


if __name__ == "__main__":
    main()
