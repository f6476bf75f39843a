"""The core budget: cores from affinity and the cgroup quota, shares for stage runs going on at once, training
threads that never move with load, and the premise that lets everything else take a share (encoding gives the
same bits at any thread count)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from irforge.runtime import cores
from irforge.runtime.cores import available_cores, stage_share, thread_share, training_threads

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("files", "expected"), [
    ({"cpu.max": "150000 100000\n"}, min(AFFINITY, 2)),  # 1.5 CPUs: 2 threads (rounded up)
    ({"cpu.max": "max 100000\n"}, AFFINITY),  # no quota
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1, half a CPU
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, AFFINITY),  # v1, unlimited
    ({}, AFFINITY),  # no cgroup files at all
])
def test_available_cores_is_the_affinity_capped_by_the_cgroup_quota(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cores(tmp_path) == expected


def test_stage_runs_at_once_split_the_cores_and_pinned_threads_win(monkeypatch):
    monkeypatch.setattr(cores, "available_cores", lambda: 4)
    assert cores.running_stages() == 0
    with stage_share():
        assert thread_share() == 4
        with stage_share():  # a second stage run starts beside it (the flow's parallel nodes)
            assert thread_share() == 2 and cores.running_stages() == 2
            with stage_share(), stage_share(), stage_share():
                assert thread_share() == 1  # never below one thread
            assert thread_share(pinned=3) == 3  # runtime.threads: 3
            assert training_threads() == 4  # training keeps the machine's count: its result depends on it
        assert thread_share() == 4
    assert cores.running_stages() == 0


def test_concurrent_stage_threads_each_see_their_share(monkeypatch):
    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    barrier, seen = threading.Barrier(2), []

    def stage() -> None:
        with stage_share():
            barrier.wait()
            seen.append(thread_share())
            barrier.wait()

    workers = [threading.Thread(target=stage) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == [1, 1]


def test_a_failing_stage_gives_its_share_back(monkeypatch):
    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    with pytest.raises(RuntimeError), stage_share():
        raise RuntimeError("stage failed")
    assert cores.running_stages() == 0 and thread_share() == 2


def test_importing_irforge_makes_waiting_threads_sleep_unless_the_user_chose():
    code = "import os, irforge; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "ACTIVE"


def test_encoding_gives_the_same_bits_at_any_thread_count(tmp_path):
    """Why encoding, search and generation may take a share that changes with load: their output does not
    depend on the thread count (training's does; it keeps a fixed count)."""
    import torch

    from irforge.models import DenseEncoder, SpladeEncoder

    texts = [f"passage {i}: the boundary layer on a flat plate thickens downstream " * (1 + i % 5) for i in range(24)]
    dense = DenseEncoder("pkg:all-minilm-l6-v2", tmp_path, max_length=128, use_cache=False)
    splade = SpladeEncoder("pkg:splade-tiny", max_length=128)
    before = torch.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            out[n] = dense.encode(texts), splade.encode_dense(texts)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(out[1][0], out[2][0]) and np.array_equal(out[1][1], out[2][1])


@pytest.mark.slow  # the embedded SmolLM2, twice: ~20 s on 2 idle cores
def test_generation_and_query_likelihood_give_the_same_bits_at_any_thread_count(tmp_path):
    """The flow's doc2query and synthesize run side by side with one core each where `dvc repro` gives each
    two: the embedded LLM must sample the same queries either way (the generate stage's dtype: auto)."""
    import torch

    from irforge.generation import Generator, QueryLikelihood, SamplingParams

    gen = Generator("pkg:smollm2-135m-instruct", tmp_path, dtype="auto")
    prompts = ["Write a search query for: the boundary layer on a flat plate thickens downstream.",
               "Write a search query for: panel flutter in a supersonic stream."]
    sampling = SamplingParams(n=2, temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=12)
    before = torch.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            rows = gen.generate(prompts, ["a", "b"], sampling, seed=3, batch_size=2)
            scores = QueryLikelihood(gen, 200).score("supersonic panel flutter", prompts)
            out[n] = [[(s.text, s.mean_logprob) for s in r] for r in rows], list(scores)
    finally:
        torch.set_num_threads(before)
    if gen.dtype == torch.bfloat16:  # where the CPU has native bf16 (dtype auto picks it): the same bits
        assert out[1] == out[2]
        return
    # float32 on a CPU without native bf16 (an AMD EPYC without AVX-512, issue 27's machine): matmul reductions
    # are split by thread count, so log-probs differ in the 7th digit; the sampled queries must still be the same.
    texts = {n: [[t for t, _ in r] for r in rows] for n, (rows, _) in out.items()}
    assert texts[1] == texts[2]
    for n in (1, 2):
        flat = [p for r in out[n][0] for _, p in r] + out[n][1]
        other = [p for r in out[3 - n][0] for _, p in r] + out[3 - n][1]
        assert flat == pytest.approx(other, abs=1e-5)
