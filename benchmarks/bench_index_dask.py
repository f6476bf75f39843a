"""Benchmark: a BM25 index built in one process vs in partitions on a 2-worker Dask cluster, merged into one.

A seeded corpus of ``--passages`` passages is recombined from Cranfield's sentences (3-7 random sentences each,
the title the first words of another) and written once as JSONL. Each round builds its BM25 index twice:

- one process: ``build_lucene_index`` here, 2 Anserini threads (the index stage's default on 2 cores);
- Dask: the same call inside a task on a ``LocalCluster`` of 2 worker processes with 1 thread each, as the
  index stage runs under ``irforge flow --dask``: the records go to partitions beside the index, one Anserini
  run (1 thread) per partition on the workers, then ``addIndexes`` + ``forceMerge(1)`` into the destination.

Both sides read the corpus file themselves (the stage reads its chunks the same way) and each JVM is started by
an untimed warm-up build first, so the times are indexing, not start-up. The sides alternate (ABBA) over
``--repeat`` rounds; the medians give the speedup and the parallel efficiency t_one / (2 x t_dask) (1.0: the two
workers build twice as fast as the one process). Both indexes are then searched with 50
Cranfield queries (top 100) and the runs compared. Results go to ``benchmarks/results/index_dask.json``.

Measured on the 2-core development machine, idle: 100,000 passages, 2 rounds, medians one process 12.1 s, Dask
15.7 s: speedup 0.77, efficiency 0.38, runs identical. On one machine the cluster only adds work (partition
files, one Anserini run per part, and a serial addIndexes + forceMerge); it can only pay where the workers bring
cores of their own (other machines), which was not measured here.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_index_dask.py --passages 100000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import conditions  # puts the repository on sys.path

from irforge.contract import owned
from irforge.corpus import passage_text
from irforge.retrieval.lucene import BM25Retriever, build_lucene_index, count_documents
from irforge.runtime.cores import available_cores
from irforge.runtime.partition import partition_count

ROOT = conditions.ROOT
CRANFIELD = ROOT / "data/cranfield"


def write_corpus(path: Path, n: int, seed: int) -> int:
    """``n`` passages recombined from Cranfield's sentences; returns the words written."""
    with open(CRANFIELD / "corpus.jsonl", encoding="utf-8") as f:
        sentences = sorted({s.strip() for line in f for s in json.loads(line)["text"].split(" .") if len(s.split()) >= 4})
    rng, words = random.Random(seed), 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " . ".join(rng.choices(sentences, k=rng.randint(3, 7))) + " ."
            title = " ".join(rng.choice(sentences).split()[: rng.randint(3, 8)])
            f.write(json.dumps({"id": f"p{i}", "title": title, "text": text}) + "\n")
            words += len(text.split()) + len(title.split())
    return words


def read_docs(path: Path, limit: int | None = None) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            row = json.loads(line)
            yield row["id"], passage_text(row["title"], row["text"])


def build_from_file(corpus: Path, index_dir: Path, threads: int, limit: int | None = None) -> int:
    """The build, reading the corpus as it goes: here for one process, or as a task on a Dask worker."""
    return build_lucene_index(read_docs(corpus, limit), index_dir, threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the sides alternate, medians compared")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/index_dask.json")
    args = parser.parse_args()
    os.environ.setdefault("IRFORGE_PROGRESS", "0")
    from distributed import Client, LocalCluster

    work = owned.make_temp_dir(prefix="irforge-bench-index-dask-")
    try:
        corpus = work / "corpus.jsonl"
        started = time.perf_counter()
        words = write_corpus(corpus, args.passages, args.seed)
        print(f"corpus: {args.passages:,} passages, {words:,} words recombined from Cranfield sentences "
              f"({time.perf_counter() - started:.0f}s)")
        indexes = {"one process": work / "one" / "index", "dask": work / "dask" / "index"}
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            for name, index in indexes.items():  # warm-up: each JVM (here, both workers) starts untimed
                warm = index.with_name("warm-up")
                if name == "dask":
                    client.submit(build_from_file, corpus, warm, 1, 2000, pure=False).result()
                else:
                    build_from_file(corpus, warm, 2, 2000)
                owned.remove(warm)

            def one() -> int:
                owned.remove(indexes["one process"])
                return build_from_file(corpus, indexes["one process"], 2)

            def dask() -> int:
                owned.remove(indexes["dask"])
                return client.submit(build_from_file, corpus, indexes["dask"], 2, pure=False).result()

            conditions.header(f"index bm25: {args.passages:,} passages, one process (2 threads) vs a 2-worker Dask "
                              f"cluster (1 thread each, {partition_count(2)} partitions merged), {args.repeat} rounds")
            load_before = os.getloadavg()
            # conditions.footer() prints the cores other processes kept busy; the same reading, kept for the JSON
            start = (time.perf_counter(), conditions._busy_seconds(), conditions._own_seconds())
            times, counts = conditions.alternate({"one process": one, "dask": dask}, args.repeat)
        # The cluster is closed before the footer: its workers' CPU time is then counted as this benchmark's own.
        others_during = max(0.0, (conditions._busy_seconds() - start[1] - (conditions._own_seconds() - start[2]))
                            / (time.perf_counter() - start[0]))
        conditions.summary(times, args.passages, "passages")
        t_one, t_dask = statistics.median(times["one process"]), statistics.median(times["dask"])
        speedup = t_one / t_dask
        print(f"  speedup one process / dask = {speedup:.2f}; parallel efficiency t_one / (2 x t_dask) = "
              f"{speedup / 2:.2f} (medians)")

        with open(CRANFIELD / "queries.jsonl", encoding="utf-8") as f:
            queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
        queries = dict(list(queries.items())[:50])
        runs = {}
        for name, index in indexes.items():
            retriever = BM25Retriever(index, threads=1)
            runs[name] = retriever.search(queries, k=100)
            retriever.close()
        identical = runs["one process"] == runs["dask"]
        documents = {name: count_documents(index) for name, index in indexes.items()}
        print(f"  documents {documents}; 50 Cranfield queries, top 100: runs identical = {identical}")
        conditions.footer()
        result = {
            "passages": args.passages, "words": words, "seed": args.seed, "rounds": args.repeat,
            "cores": available_cores(), "workers": 2, "threads_per_worker": 1, "one_process_threads": 2,
            "partitions": partition_count(2),
            "seconds": {name: [round(t, 2) for t in ts] for name, ts in times.items()},
            "median_seconds": {"one process": round(t_one, 2), "dask": round(t_dask, 2)},
            "speedup": round(speedup, 3), "parallel_efficiency": round(speedup / 2, 3),
            "documents": documents, "counts": counts, "runs_identical_50_cranfield_queries_top100": identical,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "other_processes_busy_cores_during": round(others_during, 2),
            "command": f"benchmarks/bench_index_dask.py --passages {args.passages} --repeat {args.repeat}",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        if not identical:
            sys.exit("the merged index does not rank as the one-process build does")
    finally:
        owned.remove(work)


if __name__ == "__main__":
    main()
