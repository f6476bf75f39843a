"""EmbeddingGemma-300M as the teacher of the fast MiniLM student, on a collection's suite project
(benchmarks/suite.py made it: chunks, judgments, the zero-shot indexes, gemma-zs among them).

The project's params gain the distillation: synthesize (Qwen2.5-Coder-0.5B, ``--chunks`` chunks by seed, 2
queries each), the round-trip filter, mining, EmbeddingGemma as the only teacher (bfloat16 weights), the dense
trainer (KL to the teacher, temperature auto) on every kept triple, and the trained index `dense`. Then the test
split's nDCG@10 of the student, its zero-shot self and the teacher, with each encoder's cost per 1,000 passages
(from the index stages' CPU seconds), goes to benchmarks/results/distill.json.

    python benchmarks/distill.py --project /work/collections/suite/cisi [--chunks 400]
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

from suite import test_split  # noqa: E402

from irforge.contract import owned  # noqa: E402
from irforge.engine import load_config, run_stage  # noqa: E402
from irforge.evaluation.measures import significance  # noqa: E402
from irforge.runtime import setup_logging  # noqa: E402

TEACHER = {"kind": "bi-encoder", "model": "pkg:embeddinggemma-300m", "precision": "auto", "weight": 1.0}


def distill_params(params: dict, chunks: int | None) -> dict:
    params["synthesize"]["max_chunks"] = chunks
    params["train"].update(max_triples=None, models=["dense"])
    params["teach"]["teachers"] = {"gemma": TEACHER}
    params["index"]["systems"]["dense"] = {"kind": "faiss", "model": "artifacts/train/dense"}
    evaluate = params["evaluate"]
    evaluate["systems"] = list(dict.fromkeys([*evaluate["systems"], "dense"]))
    for fusion in (["bm25", "dense", "splade-zs"], ["bm25", "dense", "splade-zs", "gemma-zs"]):
        if fusion not in evaluate["fusions"]:
            evaluate["fusions"].append(fusion)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--chunks", type=int, default=400, help="chunks that get generated queries (0 = all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/distill.json")
    args = parser.parse_args()
    setup_logging()
    path = args.project / "params.yaml"
    params = distill_params(yaml.safe_load(path.read_text(encoding="utf-8")), args.chunks or None)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    config = load_config(args.project, "params.yaml")
    seconds = {}
    for stage, variant in [("synthesize", None), ("filter", None), ("mine", None), ("teach", None),
                           ("train", "dense"), ("index", "dense"), ("evaluate", None)]:
        start = time.perf_counter()
        run_stage(stage, args.project, config, variant)
        seconds[f"{stage} {variant or ''}".strip()] = round(time.perf_counter() - start, 1)
    result = {"project": str(args.project), "chunks": args.chunks, "seconds": seconds,
              **compare(args.project, config.seed)}
    print(json.dumps(result, indent=1))
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {}
    results[args.project.name] = result
    owned.claim(args.out, itself=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def compare(project: Path, seed: int) -> dict:
    metrics, per_query, _ = test_split(project)
    runs = ["dense", "dense-zs", "gemma-zs", "rrf(bm25+dense+splade-zs)", "rrf(bm25+dense-zs+splade-zs)",
            "rrf(bm25+dense+splade-zs+gemma-zs)", "rrf(bm25+dense-zs+splade-zs+gemma-zs)"]
    out = {"test": {r: metrics[r]["test"]["nDCG@10"] for r in runs},
           "student_vs_zero_shot": significance(per_query, "dense", "dense-zs", seed),
           "student_vs_teacher": significance(per_query, "dense", "gemma-zs", seed)}
    triples = json.loads((project / "artifacts/train/metrics-dense.json").read_text(encoding="utf-8"))
    out["examples"] = triples.get("examples")
    return out


if __name__ == "__main__":
    main()
