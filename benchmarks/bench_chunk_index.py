"""Benchmark: the chunk stage's throughput and peak memory, and BM25 indexing, irforge vs pyserini's own indexer.

A seeded synthetic corpus (Zipf-distributed made-up words, sentences of 6-24 words, documents of ~40-900
words) is chunked by the real chunk stage with the repository's chunk params. Its chunks are then indexed
twice in the same run, on the same machine:

- irforge: ``irforge run index bm25`` (reads chunks.parquet, writes the JsonCollection, runs Anserini,
  publishes the folder artifact with provenance);
- pyserini: ``python -m pyserini.index.lucene --collection JsonCollection ...`` (through ``irforge pyserini``,
  which only sets up the JVM) on the same chunks, already written as JSONL (not timed, to its advantage),
  once as one file (how it is usually run; Anserini then indexes with one thread) and once split into
  ``--threads`` files like irforge's own collection (Anserini indexes one file per thread).

All use the same Lucene options and thread count; each run is a fresh process, so JVM start-up counts for
all. Runs are interleaved and repeated (``--repeat``), the best time of each kept, since the machine may be
shared. The ratios printed are pyserini time / irforge time (>= 1 means irforge is as fast).

    python benchmarks/bench_chunk_index.py              # 100,000 documents
    python benchmarks/bench_chunk_index.py --docs 5000  # a quick run
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import conditions
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from irforge.config import load_yaml  # noqa: E402
from irforge.contract import owned  # noqa: E402
from irforge.corpus import passage_text  # noqa: E402

CHUNKS = "artifacts/chunk/chunks.parquet"  # the chunk stage's output, relative to the project

LUCENE_OPTIONS = ["--storePositions", "--storeDocvectors", "--optimize"]  # as irforge.retrieval.build_lucene_index


def synthetic_corpus(path: Path, n_docs: int, seed: int) -> int:
    """Write ``n_docs`` BEIR-style documents; return the number of words written."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "zen", "dra", "plu", "quor", "stel", "aer", "fl"]
    vocab = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(60_000)})
    rng.shuffle(vocab)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocab))))  # Zipf's law
    words = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            n_words = min(900, max(40, int(rng.lognormvariate(5.0, 0.6))))
            drawn = rng.choices(vocab, cum_weights=cum_weights, k=n_words)
            sentences, j = [], 0
            while j < n_words:
                k = rng.randint(6, 24)
                sentences.append(" ".join(drawn[j : j + k]).capitalize() + ".")
                j += k
            title = " ".join(rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(3, 8))).capitalize()
            f.write(json.dumps({"_id": f"doc{i}", "title": title, "text": " ".join(sentences)}) + "\n")
            words += n_words
    return words


def child(code: str, env: dict[str, str]) -> dict:
    """Run Python ``code`` in a fresh process; it prints one JSON line last."""
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"benchmark step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return elapsed


CHUNK_CODE = """
import json, resource, time
from pathlib import Path
from irforge.config import Params
from irforge.engine import run_stage
root = Path({root!r})
params = Params.load(root / "params.yaml")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
summary = run_stage("chunk", root, params)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "rss_before_kb": before, "rss_peak_kb": peak, "summary": summary}}))
"""

STATS_CODE = """
import json
from irforge.retrieval import ensure_java
ensure_java()
from pyserini.index.lucene import LuceneIndexReader
print(json.dumps({{name: LuceneIndexReader(path).stats() for name, path in {paths!r}.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000, help="documents in the synthetic corpus")
    parser.add_argument("--threads", type=int, default=2, help="indexing threads (both sides)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the sides alternate, medians compared")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    work = args.keep or owned.make_temp_dir(prefix="irforge-bench-")
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "IRFORGE_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        repo_params = load_yaml((REPO / "params.yaml").read_text())
        params = {
            "seed": args.seed,
            "corpus": {"path": "data/synth", "format": "auto", "id_field": "_id", "title_field": "title",
                       "text_field": "text", "queries": None, "qrels": None},
            "chunk": repo_params["chunk"],
            "runtime": {"threads": args.threads},
        }
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        started = time.perf_counter()
        words = synthetic_corpus(work / "data" / "synth" / "corpus.jsonl", args.docs, args.seed)
        print(f"corpus: {args.docs:,} documents, {words:,} words, "
              f"{(work / 'data/synth/corpus.jsonl').stat().st_size / 2**20:.0f} MiB "
              f"(generated in {time.perf_counter() - started:.0f}s)")

        # ------------------------------------------------------------ chunk
        chunk = child(CHUNK_CODE.format(root=str(work)), env)
        s = chunk["summary"]
        print(f"chunk (max_tokens {params['chunk']['max_tokens']}, stride {params['chunk']['stride']}): "
              f"{s['documents']:,} docs -> {s['chunks']:,} chunks in {chunk['seconds']:.1f}s = "
              f"{s['documents'] / chunk['seconds']:,.0f} docs/s; peak RSS {chunk['rss_peak_kb'] / 1024:,.0f} MiB "
              f"({chunk['rss_before_kb'] / 1024:,.0f} MiB before the stage started)")

        # ------------------------------------------------------------ index: the same chunks, both indexers
        import pyarrow.parquet as pq

        rows = pq.read_table(work / CHUNKS, columns=["chunk_id", "title", "text"]).to_pylist()
        shards = {"one file": 1, **({f"{args.threads} files": args.threads} if args.threads > 1 else {})}
        collections = {name: work / f"collection-{n}" for name, n in shards.items()}
        for n_files, folder in zip(shards.values(), collections.values(), strict=True):
            folder.mkdir(exist_ok=True)
            with contextlib.ExitStack() as stack:
                files = [stack.enter_context(open(folder / f"part-{i}.jsonl", "w", encoding="utf-8"))
                         for i in range(n_files)]
                for i, row in enumerate(rows):
                    doc = {"id": row["chunk_id"], "contents": passage_text(row["title"], row["text"])}
                    files[i % n_files].write(json.dumps(doc) + "\n")
        del rows
        indexes = {"irforge": work / "artifacts/index/bm25",
                   **{name: work / f"index-{folder.name}" for name, folder in collections.items()}}
        commands = {"irforge": ["irforge", "run", "index", "bm25", "--root", str(work),
                                "--params", str(work / "params.yaml")]}
        for name, folder in collections.items():
            commands[f"pyserini, {name}"] = [
                "irforge", "pyserini", "pyserini.index.lucene", "--collection", "JsonCollection",
                "--generator", "DefaultLuceneDocumentGenerator", "--input", str(folder),
                "--index", str(indexes[name]), "--threads", str(args.threads), *LUCENE_OPTIONS]
        def side(name: str):
            def run() -> None:
                owned.remove(indexes[name.removeprefix("pyserini, ")])
                timed(commands[name], env)
            return run

        conditions.header(f"index bm25: irforge vs pyserini's indexer, {args.threads} threads, {args.repeat} rounds")
        times, _ = conditions.alternate({name: side(name) for name in commands}, args.repeat)
        stats = child(STATS_CODE.format(paths={name: str(path) for name, path in indexes.items()}), env)
        if len({json.dumps(v, sort_keys=True) for v in stats.values()}) != 1:
            sys.exit(f"the indexes differ: {stats}")
        print(f"index bm25 ({stats['irforge']['documents']:,} chunks, {stats['irforge']['total_terms']:,} terms, "
              f"{args.threads} threads, process start and JVM included):")
        conditions.summary(times)
        for name in times:
            if name != "irforge":
                print(f"  ratio {name} / irforge = {conditions.ratio(times, name, 'irforge'):.2f} (medians)")
        conditions.footer()
    finally:
        if not args.keep:
            owned.remove(work)


if __name__ == "__main__":
    main()
