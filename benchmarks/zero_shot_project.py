"""An evaluated project of the zero-shot candidate systems for another judged collection (BEIR folder), for the
benchmarks that compare systems across collections (judging.py, publish_rule.py).

The project's params are this repository's params.yaml with the corpus and judgments pointed at the collection
(absolute paths: read in place), and evaluate narrowed to what needs no training: BM25, BM25 + RM3, MiniLM
(dense-zs), splade-tiny (splade-zs), MiniLM with PRF (dense-zs-prf) and their fusions. Then it runs chunk,
judgments, the three indexes and evaluate (a few minutes for a collection of ~1,500 documents on 2 cores).

    python benchmarks/collections.py cisi --raw /work/collections/raw/cisi --out /work/collections/cisi
    python benchmarks/zero_shot_project.py /work/collections/cisi /work/collections/proj-cisi
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.engine import load_config, run_stage  # noqa: E402
from irforge.runtime import setup_logging  # noqa: E402

ZERO_SHOT = ("bm25", "dense-zs", "splade-zs")
FEEDBACK = ("bm25-rm3", "dense-zs-prf")


def zero_shot_params(collection: Path, cache: Path | None) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    collection = collection.resolve()
    params["corpus"].update(path=str(collection), queries=str(collection / "queries.jsonl"),
                            qrels=str(collection / "qrels/test.tsv"))
    evaluate = params["evaluate"]
    runs = (*ZERO_SHOT, *FEEDBACK)
    evaluate["systems"] = list(ZERO_SHOT)
    evaluate["feedback"] = {k: v for k, v in evaluate["feedback"].items() if k in FEEDBACK}
    evaluate["fusions"] = [f for f in evaluate["fusions"] if all(m in runs for m in f)]
    known = set(runs) | {"rrf(" + "+".join(f) + ")" for f in evaluate["fusions"]}
    evaluate["compare"] = [p for p in evaluate["compare"] if all(x in known for x in p)]
    if cache is not None:
        params["runtime"]["cache_dir"] = str(cache.resolve())
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collection", type=Path, help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    parser.add_argument("project", type=Path, help="the project folder to make (its artifacts/ are irforge's)")
    parser.add_argument("--cache", type=Path, default=None, help="runtime.cache_dir (default: the project's own)")
    args = parser.parse_args()
    setup_logging()
    args.project.mkdir(parents=True, exist_ok=True)
    params = args.project / "params.yaml"
    params.write_text(yaml.safe_dump(zero_shot_params(args.collection, args.cache), sort_keys=False), encoding="utf-8")
    config = load_config(args.project, "params.yaml")
    for stage, variant in [("chunk", None), ("judgments", None), *(("index", s) for s in ZERO_SHOT), ("evaluate", None)]:
        run_stage(stage, args.project, config, variant)
    print(f"evaluated: {args.project / 'artifacts/evaluate/metrics.json'}")


if __name__ == "__main__":
    main()
