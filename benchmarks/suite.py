"""Candidate settings on every judged collection, for the rule a default or preset changes by: at least level
(>= -0.005 nDCG@10 on the test split) on every collection, and better on average.

Each collection (a BEIR folder; benchmarks/collections.py makes them) gets a project whose params are this
repository's params.yaml with the corpus pointed at the collection and evaluate narrowed to systems that need no
training: BM25 (+ RM3), MiniLM (dense-zs), splade-tiny (splade-zs), all-mpnet-base-v2 (mpnet-zs) and
EmbeddingGemma-300M (gemma-zs, bfloat16 weights where the CPU has bf16), each dense leg also with vector PRF,
and the fusions of SETTINGS. The same dev/test split as any irforge run (judgments.dev_queries, seed). Every
setting is compared with the zero-shot fusion on the test split (paired randomisation test).

    python benchmarks/suite.py --collection cranfield=data/cranfield --collection cisi=/work/collections/cisi \\
        --work /work/collections/suite --cache /work/collections/cache [--precision-check cranfield]
    python benchmarks/suite.py --merge cranfield.json cisi.json ...   # one table from runs made one by one

``--precision-check NAME`` also indexes NAME with EmbeddingGemma in float32 (gemma-zs-f32), to show that the
bfloat16 weights give the same nDCG@10. Writes benchmarks/results/suite.json and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from zero_shot_project import zero_shot_params  # noqa: E402

from irforge.contract import owned  # noqa: E402
from irforge.engine import load_config, run_stage  # noqa: E402
from irforge.evaluation.measures import significance  # noqa: E402
from irforge.runtime import setup_logging  # noqa: E402

REFERENCE = "rrf(bm25+dense-zs+splade-zs)"  # the zero-shot fusion: evaluate.default
INDEXES = {
    "bm25": {"kind": "bm25"},
    "dense-zs": {"kind": "faiss", "model": "pkg:all-minilm-l6-v2"},
    "splade-zs": {"kind": "impact", "model": "pkg:splade-tiny"},
    "mpnet-zs": {"kind": "faiss", "model": "pkg:all-mpnet-base-v2"},
    "gemma-zs": {"kind": "faiss", "model": "pkg:embeddinggemma-300m", "precision": "auto"},
}
FEEDBACK = {
    "bm25-rm3": {"system": "bm25", "method": "rm3", "docs": 10, "terms": 10, "query_weight": 0.5},
    **{f"{leg}-prf": {"system": leg, "method": "rocchio", "feedback": f"rrf(bm25+{leg})", "docs": 3, "alpha": 1.0,
                      "beta": 1.0} for leg in ("dense-zs", "mpnet-zs", "gemma-zs")},
}
# Setting -> the run it serves. The first is the reference; "quality preset" is params-quality.yaml's best system.
SETTINGS = {
    "zero-shot fusion (default)": REFERENCE,
    "bm25": "bm25",
    "bm25 + RM3": "bm25-rm3",
    "PRF fusion": "rrf(bm25-rm3+dense-zs-prf)",
    "quality preset (mpnet, PRF)": "rrf(bm25-rm3+dense-zs-prf+mpnet-zs-prf+splade-zs)",
    "MiniLM": "dense-zs",
    "EmbeddingGemma": "gemma-zs",
    "EmbeddingGemma + PRF": "gemma-zs-prf",
    "BM25 + EmbeddingGemma": "rrf(bm25+gemma-zs)",
    "zero-shot fusion + EmbeddingGemma": "rrf(bm25+dense-zs+splade-zs+gemma-zs)",
    "BM25 + SPLADE + EmbeddingGemma": "rrf(bm25+splade-zs+gemma-zs)",
    "zero-shot fusion + mpnet + EmbeddingGemma": "rrf(bm25+dense-zs+splade-zs+mpnet-zs+gemma-zs)",
    "PRF fusion + EmbeddingGemma PRF": "rrf(bm25-rm3+dense-zs-prf+gemma-zs-prf+splade-zs)",
    "BM25 + EmbeddingGemma PRF": "rrf(bm25+gemma-zs-prf)",
}


def members(run: str) -> list[str]:
    return run[4:-1].split("+") if run.startswith("rrf(") else [run]


def suite_params(collection: Path, cache: Path | None, precision_check: bool, mpnet_precision: str) -> dict:
    params = zero_shot_params(collection, cache)
    indexes = dict(INDEXES, **({"gemma-zs-f32": {**INDEXES["gemma-zs"], "precision": "float32"}}
                               if precision_check else {}))
    indexes["mpnet-zs"] = {**indexes["mpnet-zs"], "precision": mpnet_precision}
    params["index"]["systems"] = indexes
    evaluate = params["evaluate"]
    evaluate["systems"] = list(indexes)
    evaluate["feedback"] = FEEDBACK
    feedback_runs = [spec["feedback"] for spec in FEEDBACK.values() if "feedback" in spec]  # PRF reads these
    evaluate["fusions"] = [members(run) for run in dict.fromkeys([*feedback_runs, *SETTINGS.values()])
                           if run.startswith("rrf(")]
    evaluate["compare"] = []
    return params


def run_collection(name: str, collection: Path, project: Path, cache: Path | None, precision_check: bool,
                   mpnet_precision: str) -> dict:
    project.mkdir(parents=True, exist_ok=True)
    params = suite_params(collection, cache, precision_check, mpnet_precision)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    config = load_config(project, "params.yaml")
    seconds = {}
    for stage, variant in [("chunk", None), ("judgments", None),
                           *(("index", s) for s in config.section("index").systems), ("evaluate", None)]:
        start = time.perf_counter()
        run_stage(stage, project, config, variant)
        seconds[f"{stage} {variant or ''}".strip()] = round(time.perf_counter() - start, 1)
    return {"collection": name, "path": str(collection), "seconds": seconds, "mpnet_precision": mpnet_precision,
            **table(project, config.seed)}


def test_split(project: Path) -> tuple[dict, dict[str, dict[str, float]], int]:
    """An evaluated project's metrics, each run's nDCG@10 per test query, and the number of test queries."""
    import pyarrow.parquet as pq

    evaluate = project / "artifacts" / "evaluate"
    metrics = json.loads((evaluate / "metrics.json").read_text(encoding="utf-8"))
    splits = pq.read_table(project / "artifacts/judgments/queries.parquet", columns=["query_id", "split"]).to_pylist()
    test = {r["query_id"] for r in splits if r["split"] == "test"}
    per_query: dict[str, dict[str, float]] = {}
    for row in pq.read_table(evaluate / "per_query.parquet").to_pylist():
        if row["measure"] == "nDCG@10" and row["query_id"] in test:
            per_query.setdefault(row["system"], {})[row["query_id"]] = row["value"]
    return metrics, per_query, len(test)


def table(project: Path, seed: int) -> dict:
    metrics, per_query, test = test_split(project)
    rows = {}
    for setting, run in [*SETTINGS.items(), *((s, s) for s in ("gemma-zs-f32",) if s in metrics)]:
        m = metrics[run]
        row = {"run": run, "test": m["test"]["nDCG@10"], "dev": m["dev"]["nDCG@10"], "all": m["nDCG@10"]}
        if run != REFERENCE:
            sig = significance(per_query, run, REFERENCE, seed)
            row.update(delta=sig["delta"], p=sig["p_randomisation"], wins=sig["wins"], losses=sig["losses"])
        rows[setting] = row
    return {"test_queries": test, "settings": rows}


def markdown(results: list[dict]) -> str:
    names = [r["collection"] for r in results]
    lines = ["| setting | " + " | ".join(names) + " | mean Δ | worst Δ |", "|---|" + "---|" * (len(names) + 2)]
    settings = list(results[0]["settings"])
    for setting in settings:
        cells, deltas = [], []
        for r in results:
            row = r["settings"].get(setting)
            if row is None:
                cells.append("")
                continue
            cell = f"{row['test']:.4f}"
            if "delta" in row:
                deltas.append(row["delta"])
                cell += f" ({row['delta']:+.3f}, p {row['p']:.2g})"
            cells.append(cell)
        tail = (f"{sum(deltas) / len(deltas):+.4f} | {min(deltas):+.3f}" if deltas and len(deltas) == len(results)
                else " | ")
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {tail} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", action="append", default=[], help="NAME=BEIR folder (repeatable)")
    parser.add_argument("--work", type=Path, help="a folder for the projects (one per collection)")
    parser.add_argument("--merge", type=Path, nargs="+", help="join the results files of earlier runs (one per "
                        "collection, in this order) into --out, run nothing")
    parser.add_argument("--cache", type=Path, default=None, help="runtime.cache_dir shared by the projects")
    parser.add_argument("--precision-check", action="append", default=[], help="collections also run in float32")
    parser.add_argument("--mpnet-precision", default="float32", choices=["float32", "auto"],
                        help="auto: bfloat16 weights for the mpnet leg (a third of float32's cost; the preset uses float32)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/suite.json")
    parser.add_argument("--table-only", action="store_true", help="re-read the evaluated projects, run nothing")
    args = parser.parse_args()
    setup_logging()
    results = []
    for path in args.merge or []:
        results += json.loads(path.read_text(encoding="utf-8"))["results"]
    for item in args.collection:
        name, _, folder = item.partition("=")
        project = args.work / name
        if args.table_only:
            config = load_config(project, "params.yaml")
            results.append({"collection": name, "path": folder, **table(project, config.seed)})
        else:
            results.append(run_collection(name, Path(folder).resolve(), project, args.cache,
                                          name in args.precision_check, args.mpnet_precision))
        print(markdown(results[-1:]), flush=True)
    owned.claim(args.out, itself=True)
    args.out.write_text(json.dumps({"reference": REFERENCE, "results": results}, indent=1) + "\n", encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
