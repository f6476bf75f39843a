"""float32 vs bfloat16 for the embedded LLMs on this CPU: prefill-heavy work (query likelihood over 8 passages)
and a short sampled generation, the two sides alternated over several rounds (min and median of each).

    python benchmarks/bench_llm_dtype.py [--models pkg:smollm2-135m-instruct pkg:qwen2.5-coder-0.5b-instruct]

transformers warns that a GGUF model asked for in bfloat16 "is fastest in float32"; this measures it. The run
prints the conditions it ran under (``conditions.py``); ``--load`` repeats it beside a second irforge job.
"""

from __future__ import annotations

import argparse
import statistics
import time

import conditions

from irforge.generation import Generator, QueryLikelihood, SamplingParams
from irforge.runtime import available_cores

ROOT = conditions.ROOT

PASSAGES = [
    "The boundary layer on a flat plate at supersonic speed thickens downstream, and the skin friction falls "
    "as the Reynolds number grows; heat transfer follows the same trend when the wall is cooled. " * 3,
    "Flutter of thin panels exposed to a supersonic stream depends on the dynamic pressure and on the panel's "
    "stiffness; a cavity behind the panel changes the critical speed. " * 3,
] * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pkg:smollm2-135m-instruct", "pkg:qwen2.5-coder-0.5b-instruct"])
    conditions.add_arguments(parser)
    args = parser.parse_args()
    with conditions.competing_job(args.load):
        measure(args)


def measure(args) -> None:
    import torch

    torch.set_num_threads(available_cores())
    conditions.header("float32 vs bfloat16 for the embedded LLMs")
    for name in args.models:
        sides = {dtype: Generator(name, cache_dir=ROOT / ".irforge-cache", dtype=dtype) for dtype in ("float32", "bfloat16")}
        scorers = {dtype: QueryLikelihood(g, 200) for dtype, g in sides.items()}
        for scorer in scorers.values():  # weights loaded and kernels warmed before anything is timed
            scorer.score("warm up", PASSAGES[:1])
        times: dict[str, dict[str, list[float]]] = {d: {"qlm": [], "generate": []} for d in sides}
        sampling = SamplingParams(n=2, temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=16)
        for _ in range(args.rounds):
            for dtype in ("float32", "bfloat16") if _ % 2 == 0 else ("bfloat16", "float32"):
                started = time.perf_counter()
                scorers[dtype].score("heat transfer in a supersonic boundary layer", PASSAGES)
                times[dtype]["qlm"].append(time.perf_counter() - started)
                started = time.perf_counter()
                sides[dtype].generate([f"Write a question about: {PASSAGES[0][:400]}"], ["k"], sampling, seed=1)
                times[dtype]["generate"].append(time.perf_counter() - started)
        for task in ("qlm", "generate"):
            f32, bf16 = times["float32"][task], times["bfloat16"][task]
            print(f"{name} {task:>8}: float32 min {min(f32):.2f} s median {statistics.median(f32):.2f} s | bfloat16 "
                  f"min {min(bf16):.2f} s median {statistics.median(bf16):.2f} s | float32 / bfloat16 = "
                  f"{statistics.median(f32) / statistics.median(bf16):.2f}x")
    conditions.footer()


if __name__ == "__main__":
    main()
