"""Training throughput (triples/s) per trainer, and index build / query time per system, measured in one run.

Works on a project that has chunks and triples (``irforge run chunk`` and the mine stage, or any triples
artifact): it copies them into a scratch folder, trains each model on ``--triples`` examples for one epoch,
indexes the first ``--chunks`` chunks with every system (BM25, and the zero-shot and trained neural ones), and
times ``--queries`` single-query searches per system. Ratios are against BM25 (index) and dense (training).

    python benchmarks/bench_train.py --triples 64 --chunks 300 --queries 50
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import conditions
import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.config import Params  # noqa: E402
from irforge.contract import owned  # noqa: E402
from irforge.engine import StageContext, run_stage, validate  # noqa: E402
from irforge.engine.dag import node  # noqa: E402
from irforge.evaluation import search_timed  # noqa: E402
from irforge.retrieval import open_system  # noqa: E402
from irforge.runtime import setup_logging  # noqa: E402

SYSTEMS = ("bm25", "dense-zs", "dense", "splade-zs", "splade")
TRAINERS = ("dense", "splade")
# Artifact paths, relative to a project root.
CHUNKS = "artifacts/chunk/chunks.parquet"
TRIPLES = "artifacts/mine/triples.parquet"
MODELS = "artifacts/train"  # one folder per trained model (artifacts/train/<trainer>)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--triples", type=int, default=64, help="training examples per trainer (one epoch)")
    parser.add_argument("--chunks", type=int, default=300, help="chunks to index per system")
    parser.add_argument("--queries", type=int, default=50, help="single-query searches timed per system")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("IRFORGE_PROGRESS", "0")
    setup_logging("WARNING")
    config = validate(Params.load(args.root / "params.yaml").with_overrides({
        "train.max_triples": args.triples, "train.dense.epochs": 1, "train.splade.epochs": 1,
        "runtime.threads": args.threads, "runtime.query_threads": 1}))
    chunks = pq.read_table(args.root / CHUNKS)
    with owned.temp_dir(prefix="bench-train-") as tmp:
        train_root, index_root = Path(tmp) / "train", Path(tmp) / "index"
        for rel in (CHUNKS, TRIPLES):
            (train_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.root / rel, train_root / rel)
        conditions.header(f"training: {args.triples} triples, one epoch, {args.threads} threads")
        throughput = {}
        for model in TRAINERS:
            started = time.perf_counter()
            run_stage("train", train_root, config, model)
            seconds = time.perf_counter() - started  # includes loading and saving the model
            throughput[model] = args.triples / seconds
            print(f"  {model:<8} {seconds:7.1f} s  {throughput[model]:6.2f} triples/s  "
                  f"({throughput[model] / throughput['dense']:.2f}x dense)")
        # Index a subset with every system; trained systems read the models trained above.
        (index_root / CHUNKS).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(chunks.slice(0, args.chunks), index_root / CHUNKS)
        owned.symlink(train_root / MODELS, index_root / MODELS)
        queries = [t for t in chunks.column("title").to_pylist()[: args.queries]]
        print(f"indexing {min(args.chunks, chunks.num_rows)} chunks; {len(queries)} single-query searches per system")
        print(f"  {'system':<10} {'build s':>8} {'chunks/s':>9} {'x bm25':>7} {'query ms':>9} {'p95 ms':>7} {'x bm25':>7}")
        base = {}
        bm25 = config.section("bm25")
        for system in SYSTEMS:
            started = time.perf_counter()
            run_stage("index", index_root, config, system)
            build = time.perf_counter() - started
            # Open each index as the evaluate stage does (its context loads and records the query encoders).
            ctx = StageContext(node(config, "evaluate"), index_root, config)
            retriever = open_system(ctx.path(f"artifacts/index/{system}"), ctx, bm25.k1, bm25.b,
                                    threads=ctx.runtime.query_threads)
            _, latencies = search_timed(retriever, {str(i): q for i, q in enumerate(queries)}, k=100)
            retriever.close()
            lat = np.array(latencies) * 1000
            base.setdefault("build", build)
            base.setdefault("query", lat.mean())
            print(f"  {system:<10} {build:8.1f} {args.chunks / build:9.1f} {build / base['build']:7.1f} "
                  f"{lat.mean():9.1f} {np.percentile(lat, 95):7.1f} {lat.mean() / base['query']:7.1f}")
    conditions.footer()


if __name__ == "__main__":
    main()
