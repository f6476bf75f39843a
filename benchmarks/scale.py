"""Benchmark: what irforge costs as the corpus grows (10^4, 10^5, 10^6 passages), stage by stage.

The corpus is real text recombined: the sentences of the bundled Cranfield abstracts (split at " . "; 9,360 distinct
ones), drawn with a seeded ``random.Random`` into documents of 3-7 sentences (title: the first 4-10 words of
another drawn sentence), so most documents are one passage under the default chunk params. The vocabulary is
Cranfield's (~7,000 terms) at every size: a real corpus of 10^6 passages has a larger term dictionary and shorter posting
lists, so the Lucene figures are for long postings, not for a large dictionary.

Each stage is the real one, ``irforge run <stage> <system>`` in a fresh process under ``/usr/bin/time -v``
(wall time, user+system CPU time, peak RSS of the process), with the default params' chunk, BM25, MiniLM
(``dense-zs``, faiss ``auto``) and splade-tiny (``splade-zs``) settings and an empty row cache:

- ``chunk``, ``bm25`` (the BM25 index) at every size;
- ``dense-zs`` and ``splade-zs`` at sizes up to ``--encode-max`` / ``--splade-encode-max`` (the committed
  results: 10^4, since one model takes ~0.07 CPU-s a passage). Each index stage runs twice: the first run encodes
  and indexes; the second reads the vectors back from the row cache and only indexes. The encoding row is the
  first run minus the second; the index row is the second.
- Above those sizes the encoding is **extrapolated** from the measured time per passage at the largest measured
  size (marked "extrapolated"), the faiss index is built from **random unit vectors** (what the issue allows for
  latency and memory, never for recall), and the impact index from the measured size's real SPLADE vectors,
  reused in turn under new ids; above ``--impact-max`` the impact index is extrapolated too, from the two
  largest sizes where it was built.

Search: each index opened as ``irforge serve`` opens it, the 225 Cranfield queries searched one at a time
(latency p50/p95, query encoding included, top 100) and then as one batch (throughput). Disk: the size of each
artifact. The growth exponent of each stage is the slope of log(time) on log(passages) over the measured sizes.
``--faiss-study N`` measures recall@100 and latency of the faiss settings on size N's real vectors (and latency on
random vectors of ``--random`` sizes); ``--serve N`` runs ``irforge serve`` on size N under ``--clients`` with a
hot swap. The commands behind the committed results are in the results file (``commands``) and docs/scale.md:

    python benchmarks/scale.py --sizes 10000 --work /work/scratch/scale
    python benchmarks/scale.py --sizes 100000 1000000 --encode-max 10000 --splade-encode-max 10000 \
        --impact-max 100000 --work /work/scratch/scale
    python benchmarks/scale.py --plot-only          # the table and plot from benchmarks/results/scale.json

Results: ``benchmarks/results/scale.json``, the plot ``docs/figures/scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import conditions
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale.json"
FIGURE = REPO / "docs" / "figures" / "scale.png"
SYSTEMS = {"bm25": {"kind": "bm25"},
           "dense-zs": {"kind": "faiss", "model": "pkg:all-minilm-l6-v2"},
           "splade-zs": {"kind": "impact", "model": "pkg:splade-tiny"}}


def sentences() -> list[str]:
    out = []
    with open(REPO / "data" / "cranfield" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            out.extend(s.strip() + " ." for s in text.split(" . ") if len(s.split()) >= 4)
    return sorted(set(out))


def write_corpus(path: Path, n_docs: int, seed: int) -> None:
    pool = sentences()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            title = " ".join(rng.choice(pool).split()[: rng.randint(4, 10)])
            text = " ".join(rng.choices(pool, k=rng.randint(3, 7)))
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": text}) + "\n")


def project(work: Path, n: int, seed: int) -> Path:
    root = work / f"n{n}"
    if not (root / "data" / "corpus" / "corpus.jsonl").exists():
        write_corpus(root / "data" / "corpus" / "corpus.jsonl", n, seed)
    repo = yaml.safe_load((REPO / "params.yaml").read_text())
    params = {"seed": seed,
              "corpus": {**repo["corpus"], "path": "data/corpus", "queries": None, "qrels": None},
              "chunk": repo["chunk"],
              "index": {**repo["index"], "systems": SYSTEMS},
              "evaluate": {"systems": list(SYSTEMS), "feedback": {}, "fusions": [["bm25", "dense-zs"], list(SYSTEMS)],
                           "compare": []},
              "runtime": {"threads": "auto"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def env() -> dict[str, str]:
    return {**os.environ, "IRFORGE_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def disk_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def run_stage(root: Path, stage: str, variant: str | None = None) -> dict[str, float]:
    cmd = ["irforge", "run", stage, *([variant] if variant else []), "--root", str(root),
           "--params", str(root / "params.yaml")]
    return timed_to(subprocess.DEVNULL, cmd, root)


# A faiss index over random unit vectors with the stage's own settings, for sizes whose encoding is extrapolated.
RANDOM_FAISS = """
import json, sys, numpy as np
from pathlib import Path
from irforge.config import Params
from irforge.contract import artifacts, owned
from irforge.retrieval.systems import build_faiss_folder
root, n, dim = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
owned.claim_project(root)
from stages.index import IndexConfig
cfg = IndexConfig(**Params.load(root / "params.yaml").section("index"))
rng = np.random.default_rng(0)
vectors = np.empty((n, dim), dtype=np.float32)
for start in range(0, n, 100_000):  # in blocks: one copy of the vectors
    block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
    vectors[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
ids = [f"d{i}" for i in range(n)]
out = root / "artifacts" / "index" / "dense-zs"
with artifacts.publish_dir(out, {"stage": "benchmarks/scale.py", "note": "random unit vectors"}) as tmp:
    meta = build_faiss_folder(vectors, ids, tmp, cfg.faiss.as_params(), "pkg:all-minilm-l6-v2",
                              cfg.query_max_length, 0, None)
print(json.dumps(meta))
"""

# The impact index over real SPLADE vectors of a measured size (its row cache), reused in turn under new ids.
REUSED_IMPACT = """
import json, sys, itertools
from pathlib import Path
import pyarrow.parquet as pq
from irforge.contract import artifacts, owned
from irforge.retrieval import build_impact_index, write_system
root, n, cache = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
owned.claim_project(root)
shards = sorted(cache.glob("*.parquet"))
def vectors():
    i = 0
    for shard in itertools.cycle(shards):
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=4096, columns=["terms", "impacts"]):
            for terms, impacts in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                if i == n:
                    return
                yield f"d{i}", dict(zip(terms, impacts))
                i += 1
out = root / "artifacts" / "index" / "splade-zs"
with artifacts.publish_dir(out, {"stage": "benchmarks/scale.py", "note": "SPLADE vectors reused"}) as tmp:
    count = build_impact_index(vectors(), tmp, threads=2)
    write_system(tmp, {"kind": "impact", "model": "pkg:splade-tiny", "scale": 100, "query_max_length": 256})
print(json.dumps({"documents": count}))
"""

# Search latency (one query at a time, top 100, query encoding included) and batch throughput of each index.
SEARCH = """
import json, sys, time, numpy as np
from pathlib import Path
from irforge.retrieval.systems import ProjectEncoders, open_system
root, systems = Path(sys.argv[1]), sys.argv[2].split(",")
queries = {}
for line in open(sys.argv[3], encoding="utf-8"):
    q = json.loads(line); queries[q["_id"]] = q["text"]
out = {}
encoders = ProjectEncoders(root, root / ".irforge-cache", threads=1, use_cache=False)
for system in systems:
    started = time.perf_counter()
    retriever = open_system(root / "artifacts" / "index" / system, encoders, k1=0.9, b=0.4, threads=1)
    retriever.search(dict(list(queries.items())[:2]), 100)  # warm: model loaded, JVM and caches started
    opened = time.perf_counter() - started
    latencies = []
    for qid, text in queries.items():
        started = time.perf_counter()
        retriever.search({qid: text}, 100)
        latencies.append(time.perf_counter() - started)
    if hasattr(retriever, "threads"):
        retriever.threads = 2
    started = time.perf_counter()
    retriever.search(queries, 100)
    batch = time.perf_counter() - started
    retriever.close()
    out[system] = {"open_s": round(opened, 2), "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
                   "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1),
                   "batch_qps": round(len(queries) / batch, 1)}
print(json.dumps(out))
"""


def child(code: str, *args: str, cwd: Path) -> tuple[dict, dict[str, float]]:
    """Run Python ``code`` in a measured fresh process; it prints one JSON line last."""
    script = cwd / ".child.py"
    script.write_text(code)
    report = cwd / ".child.out"
    with open(report, "w") as out:
        cost = timed_to(out, [sys.executable, str(script), *args], cwd)
    return json.loads(report.read_text().strip().splitlines()[-1]), cost


def timed_to(stdout, cmd: list[str], cwd: Path) -> dict[str, float]:
    """Wall, CPU (user + system) and peak RSS of ``cmd`` (and its children) from GNU time."""
    report = cwd / ".time.txt"
    done = subprocess.run(["/usr/bin/time", "-v", "-o", str(report), *cmd], cwd=cwd, env=env(), stdout=stdout,
                          stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    text = report.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)", text).group(1).split(":")
    return {"wall_s": round(sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall))), 2),
            "cpu_s": round(float(re.search(r"User time \(seconds\): (.+)", text).group(1))
                           + float(re.search(r"System time \(seconds\): (.+)", text).group(1)), 2),
            "peak_rss_mb": round(int(re.search(r"Maximum resident set size \(kbytes\): (.+)", text).group(1)) / 1024, 1)}


def grown(results: dict, stage: str, passages: int) -> dict:
    """A stage's cost at ``passages`` from its two largest measured sizes, by their growth exponent."""
    measured = sorted((r["passages"], r["stages"][stage]) for r in results["sizes"].values()
                      if stage in r["stages"] and "extrapolated" not in r["stages"][stage])[-2:]
    (x0, a), (x1, b) = measured
    out = {}
    for key in ("wall_s", "cpu_s"):
        slope = np.log(b[key] / a[key]) / np.log(x1 / x0)
        out[key] = round(float(b[key] * (passages / x1) ** slope), 1)
    out["extrapolated"] = f"from {x0:,} and {x1:,} passages (growth exponent {slope:.2f})"
    return out


def measure(root: Path, n: int, encode_max: dict[str, int], results: dict, save: Callable[[], None],
            impact_max: int) -> dict:
    """Every stage's cost at one size, saved after each stage; a stage measured by an earlier, interrupted run of
    this size is kept (``results``: every size's results, the smaller ones used for extrapolation)."""
    import pyarrow.parquet as pq

    row = results["sizes"].setdefault(str(n), {"documents": n, "stages": {}})
    stages = row["stages"]
    print(f"\n== {n:,} documents: {root}", flush=True)

    def step(name: str, measure_it: Callable[[], dict]) -> None:
        if name not in stages:
            stages[name] = measure_it()
            save()
        print(f"   {name}: {stages[name]}", flush=True)

    step("chunk", lambda: {**run_stage(root, "chunk"), "disk_mb": disk_mb(root / "artifacts/chunk/chunks.parquet")})
    row["passages"] = pq.ParquetFile(root / "artifacts/chunk/chunks.parquet").metadata.num_rows
    step("bm25 index", lambda: {**run_stage(root, "index", "bm25"), "disk_mb": disk_mb(root / "artifacts/index/bm25")})
    for system, label in (("dense-zs", "faiss index"), ("splade-zs", "impact index")):
        encode = f"{system} encoding"
        if encode in stages and label in stages:
            print(f"   {encode}: {stages[encode]}\n   {label}: {stages[label]}", flush=True)
            continue
        if n <= encode_max[system]:
            first = run_stage(root, "index", system)
            second = run_stage(root, "index", system)  # vectors from the row cache: the index build alone
            stages[encode] = {"wall_s": round(first["wall_s"] - second["wall_s"], 2),
                              "cpu_s": round(first["cpu_s"] - second["cpu_s"], 2), "peak_rss_mb": first["peak_rss_mb"]}
            stages[label] = {**second, "disk_mb": disk_mb(root / f"artifacts/index/{system}")}
        else:
            largest = max((m for m in results["sizes"].values()
                           if encode in m["stages"] and "extrapolated" not in m["stages"][encode]),
                          key=lambda m: m["passages"])
            per = {k: largest["stages"][encode][k] / largest["passages"] for k in ("wall_s", "cpu_s")}
            stages[encode] = {k: round(v * row["passages"], 1) for k, v in per.items()}
            stages[encode]["extrapolated"] = f"from {largest['passages']:,} passages"
            if system == "splade-zs" and row["passages"] > impact_max:
                stages[label] = grown(results, label, row["passages"])
            elif system == "dense-zs":
                meta, cost = child(RANDOM_FAISS, str(root), str(row["passages"]), "384", cwd=root)
                stages[label] = {**cost, "disk_mb": disk_mb(root / f"artifacts/index/{system}"),
                                 "note": f"random unit vectors, {meta['faiss_type']}"}
            else:
                cache = next((root.parent / f"n{largest['documents']}" / ".irforge-cache" / "impacts").glob("*"))
                _, cost = child(REUSED_IMPACT, str(root), str(row["passages"]), str(cache), cwd=root)
                stages[label] = {**cost, "disk_mb": disk_mb(root / f"artifacts/index/{system}"),
                                 "note": f"SPLADE vectors of {largest['passages']:,} passages reused"}
        save()
        print(f"   {encode}: {stages[encode]}\n   {label}: {stages[label]}", flush=True)
    built = [s for s in SYSTEMS if (root / "artifacts/index" / s / "system.json").exists()]
    search, cost = child(SEARCH, str(root), ",".join(built), str(REPO / "data/cranfield/queries.jsonl"), cwd=root)
    row["search"] = search
    row["search_process"] = cost
    row["faiss_type"] = json.loads((root / "artifacts/index/dense-zs/system.json").read_text())["faiss_type"]
    print(f"   search {search}", flush=True)
    return row


def exponents(rows: dict) -> dict[str, float]:
    """Slope of log(wall time) on log(passages) per stage, over sizes where it was measured (not extrapolated; a
    stand-in's build, random vectors or reused SPLADE vectors, is a measured cost)."""
    out = {}
    names = {s for r in rows.values() for s in r["stages"]}
    for stage in sorted(names):
        pts = [(r["passages"], r["stages"][stage]["wall_s"]) for r in rows.values()
               if stage in r["stages"] and "extrapolated" not in r["stages"][stage]
               and r["stages"][stage]["wall_s"] > 0]
        if len(pts) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            out[stage] = round(float(np.polyfit(x, y, 1)[0]), 2)
    return out


def table(results: dict) -> str:
    rows = results["sizes"]
    lines = ["| stage | " + " | ".join(f"{r['passages']:,} passages" for r in rows.values()) + " | growth |",
             "|---|" + "---|" * (len(rows) + 1)]
    from irforge.reporting.figures import stage_order

    for stage in stage_order(list(rows.values())):
        cells = []
        for r in rows.values():
            c = r["stages"].get(stage)
            if not c:
                cells.append("")
                continue
            mark = " (extrapolated)" if "extrapolated" in c else (" *" if "note" in c else "")
            rss = f", {c['peak_rss_mb'] / 1024:.2f} GB" if "peak_rss_mb" in c and "extrapolated" not in c else ""
            disk = f", {c['disk_mb']:,.0f} MB disk" if "disk_mb" in c else ""
            cells.append(f"{c['wall_s']:,.0f} s wall, {c['cpu_s']:,.0f} s CPU{rss}{disk}{mark}")
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {results['exponents'].get(stage, '')} |")
    for system in SYSTEMS:
        cells = [f"p50 {r['search'][system]['p50_ms']} ms, p95 {r['search'][system]['p95_ms']} ms, "
                 f"{r['search'][system]['batch_qps']} q/s batch" if system in r.get("search", {}) else "(not built)"
                 for r in rows.values()]
        lines.append(f"| search {system} | " + " | ".join(cells) + " | |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    from irforge.reporting.figures import save, scale_curve

    path.parent.mkdir(parents=True, exist_ok=True)
    save(scale_curve(list(results["sizes"].values()), list(SYSTEMS)), path.parent, path.name)


# Recall@100 against exact search and latency of each faiss setting, on the real passage vectors of one measured
# size (its MiniLM row cache, in chunk order) with the real Cranfield queries; flat and HNSW latency and memory also
# on random unit vectors of a larger size (never their recall).
FAISS_STUDY = """
import json, sys, time, numpy as np, faiss, pyarrow.parquet as pq
from pathlib import Path
from irforge.models import DenseEncoder, EmbeddingCache
from irforge.retrieval import build_faiss
root, queries_file, random_sizes = Path(sys.argv[1]), sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
faiss.omp_set_num_threads(1)
encoder = DenseEncoder("pkg:all-minilm-l6-v2", root / ".irforge-cache", max_length=256, threads=2, use_cache=False)
hashes = pq.read_table(root / "artifacts/chunk/chunks.parquet", columns=["content_hash"]).column(0).to_pylist()
cache = EmbeddingCache(root / ".irforge-cache/embeddings" / encoder.fingerprint[:16])
found = cache.get(hashes)
docs = np.stack([found[h] for h in hashes]).astype(np.float32)
texts = [json.loads(line)["text"] for line in open(queries_file, encoding="utf-8")]
queries = encoder.encode([encoder.query_prompt + t for t in texts])
k = 100

def latency(index, xq):
    times = []
    for q in xq:
        started = time.perf_counter(); index.search(q[None], k); times.append(time.perf_counter() - started)
    return round(1000 * float(np.percentile(times, 50)), 2), round(1000 * float(np.percentile(times, 95)), 2)

def size_mb(index):
    return round(len(faiss.serialize_index(index)) / 2**20, 1)

out = {"passages": len(docs), "queries": len(queries), "real": [], "random": []}
_, truth = faiss.knn(queries, docs, k, metric=faiss.METRIC_INNER_PRODUCT)
settings = [("flat", {}, [None]), ("hnsw", {"hnsw_m": 16}, [128, 256, 512]), ("hnsw", {"hnsw_m": 32}, [128, 256, 512]),
            ("ivfpq", {"pq_m": 48, "pq_bits": 8}, [16, 64, 256])]
for kind, options, searches in settings:
    started = time.perf_counter(); index = build_faiss(docs, kind, seed=0, threads=2, **options)
    built = round(time.perf_counter() - started, 1)
    for value in searches:
        if kind == "hnsw": index.hnsw.efSearch = value
        if kind == "ivfpq": index.nprobe = value
        _, got = index.search(queries, k)
        recall = float(np.mean([len(set(t) & set(g)) / k for t, g in zip(truth, got)]))
        p50, p95 = latency(index, queries)
        out["real"].append({"kind": kind, **options, "search": value, "recall_at_100": round(recall, 4),
                            "p50_ms": p50, "p95_ms": p95, "build_s": built, "index_mb": size_mb(index)})
        print(out["real"][-1], flush=True)
    del index
rng = np.random.default_rng(0)
for random_n in random_sizes:
    vectors = rng.standard_normal((random_n, docs.shape[1]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kinds = [("flat", {}, [None]), ("hnsw", {"hnsw_m": 32}, [256])]
    for kind, options, searches in kinds[: 1 if random_n > 200_000 else 2]:  # HNSW at 10^6: the scale run builds it
        started = time.perf_counter()
        index = build_faiss(vectors, kind, seed=0, threads=2, **options)
        built = round(time.perf_counter() - started, 1)
        for value in searches:
            if kind == "hnsw":
                index.hnsw.efSearch = value
            p50, p95 = latency(index, queries)
            out["random"].append({"kind": kind, **options, "search": value, "passages": random_n, "p50_ms": p50,
                                  "p95_ms": p95, "build_s": built, "index_mb": size_mb(index)})
            print(out["random"][-1], flush=True)
        del index
    del vectors
print(json.dumps(out))
"""


def serve(root: Path, clients: int, seconds: float, swap_seconds: float) -> dict:
    """`irforge serve` on a measured size: start-up until the first answer, peak memory, latency under ``clients``
    concurrent clients, and a hot swap (another system published as the served name) under that load."""
    import http.client
    import threading

    from bench_serve import free_port, load

    queries = [json.loads(line)["text"] for line in (REPO / "data/cranfield/queries.jsonl").read_text().splitlines()]
    first = "rrf(bm25+dense-zs)"
    second = "rrf(bm25+dense-zs+splade-zs)" if (root / "artifacts/index/splade-zs").exists() else "bm25"

    def irforge(*args: str) -> str:
        done = subprocess.run(["irforge", *args, "--root", str(root), "--params", str(root / "params.yaml")],
                              cwd=root, env=env(), capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"irforge {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    print(irforge("publish", first, "--name", "main").strip().splitlines()[0], flush=True)
    port = free_port()
    log = open(root / "serve.log", "w")  # noqa: SIM115 - the server's log, open while it runs
    started = time.perf_counter()
    server = subprocess.Popen(["irforge", "serve", "--root", str(root), "--params", str(root / "params.yaml"),
                               "--port", str(port), "--host", "127.0.0.1"], cwd=root, env=env(), stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        while True:  # up when the first search is answered (models loaded, indexes opened)
            if server.poll() is not None or time.perf_counter() - started > 900:
                sys.exit(f"the service did not start; see {root / 'serve.log'}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn.request("GET", "/search?q=wing&k=10&system=main")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        startup = time.perf_counter() - started
        steady = load(port, "main", queries, clients, seconds)
        swapped: dict = {}
        done = threading.Event()

        def swap() -> None:
            time.sleep(3)
            began = time.perf_counter()
            swapped["published"] = irforge("publish", second, "--name", "main").strip().splitlines()[0]
            swapped["publish_s"] = round(time.perf_counter() - began, 1)
            time.sleep(15)  # the watcher (serve.watch_seconds) picks the new version up meanwhile
            done.set()

        swapper = threading.Thread(target=swap)
        swapper.start()
        across = load(port, "main", queries, clients, swap_seconds, until=done)
        swapper.join()
        status = Path(f"/proc/{server.pid}/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 2**20
    finally:
        server.terminate()
        server.wait(timeout=60)
    out = {"passages": pq_rows(root), "startup_s": round(startup, 1), "peak_rss_gb": round(peak, 2),
           "clients": clients, "served": first, "steady": steady, "swap": {**swapped, **across, "to": second},
           "conditions": conditions.conditions()}
    print(json.dumps(out, indent=1), flush=True)
    return out


def pq_rows(root: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(root / "artifacts/chunk/chunks.parquet").metadata.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="documents")
    parser.add_argument("--encode-max", type=int, default=100_000, help="MiniLM: encode (not extrapolate) up to this size")
    parser.add_argument("--impact-max", type=int, default=1_000_000,
                        help="build the impact index up to this size; above, extrapolate it from the two largest")
    parser.add_argument("--splade-encode-max", type=int, default=10_000,
                        help="splade-tiny: encode up to this size (its 30,522-wide output costs ~40 ms CPU a passage)")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "scale")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--faiss-study", type=int, metavar="N",
                        help="recall@100 and latency of the faiss settings on the measured size N's real vectors")
    parser.add_argument("--random", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="--faiss-study: sizes of random vectors for flat/HNSW latency (HNSW up to 200,000)")
    parser.add_argument("--serve", type=int, metavar="N", help="serve the measured size N under load, with a hot swap")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30, help="--serve: seconds of steady load")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"sizes": {}}
    if args.faiss_study:
        root = args.work / f"n{args.faiss_study}"
        conditions.header(f"faiss settings on {args.faiss_study:,} documents' vectors")
        study, cost = child(FAISS_STUDY, str(root), str(REPO / "data/cranfield/queries.jsonl"),
                            ",".join(map(str, args.random)),
                            cwd=root)
        conditions.footer()
        results["faiss"] = {**study, "process": cost, "conditions": conditions.conditions(),
                            "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:])}
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        return
    if args.serve:
        root = args.work / f"n{args.serve}"
        conditions.header(f"irforge serve on {args.serve:,} documents, {args.clients} clients")
        results.setdefault("serve", {})[str(args.serve)] = serve(root, args.clients, args.seconds, 300)
        conditions.footer()
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        return
    if not args.plot_only:
        conditions.header(f"scale: {', '.join(f'{n:,}' for n in args.sizes)} documents")
        for n in sorted(args.sizes):
            started = time.perf_counter()

            def save() -> None:
                results["sizes"] = dict(sorted(results["sizes"].items(), key=lambda kv: int(kv[0])))
                RESULTS.write_text(json.dumps(results, indent=1) + "\n")

            row = measure(project(args.work, n, args.seed), n,
                          {"dense-zs": args.encode_max, "splade-zs": args.splade_encode_max}, results, save,
                          args.impact_max)
            row["conditions"] = conditions.conditions()
            row["total_s"] = round(time.perf_counter() - started)
            save()
        conditions.footer()
        results["command"] = "python benchmarks/scale.py " + " ".join(sys.argv[1:])
    results["exponents"] = exponents(results["sizes"])
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    plot(results, FIGURE)
    print(f"plot: {FIGURE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
