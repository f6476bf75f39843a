"""The publish rule measured: does the system `publish` serves beat the robust default on the queries it never saw?

For each collection (an evaluated project folder, as for benchmarks/judging.py) and each of ``--splits`` seeded
random dev/test splits of its judged queries (``--dev`` queries in dev, the rest test), two rules choose a system
on the dev split only:

* **point**: the best dev nDCG@10 (irforge's rule before the verdict);
* **verdict**: the default (``--default``, the zero-shot fusion) unless a system is better than it with
  confidence >= ``--confidence`` (1 - the one-sided paired randomisation p-value on the dev queries:
  irforge.evaluation.verdict.better_than, what `publish` does now).

On the test split: how often the served system loses to the default, by how much on average when it does, the
mean difference to the default, and the mean shortfall to the test split's own best system.

    python benchmarks/publish_rule.py --collection cranfield=. --collection cisi=/work/collections/proj-cisi \\
        --collection med=/work/collections/proj-med --out benchmarks/results/publish_rule.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from judging import load  # noqa: E402

from irforge.evaluation import verdict as V  # noqa: E402


def per_query(project: Path) -> tuple[list[str], np.ndarray]:
    """Systems and their nDCG@10 on every judged query ([queries, systems]) under the full judgments."""
    runs, qrels = load(project)
    queries = sorted(q for q in qrels if all(q in r for r in runs.values()))
    pool = V.pool_of(runs, queries)
    return pool.systems, V.estimate(pool, qrels, unjudged="nonrelevant").judged_only


def choose(values: np.ndarray, systems: list[str], rule: str, default: str, confidence: float, seed: int) -> int:
    if rule == "point":
        return int(np.argmax(values.mean(axis=0)))
    d = systems.index(default)
    p_better = V.better_than(values[None], d, seed=seed)
    passing = [i for i in np.argsort(-values.mean(axis=0)) if p_better[i] >= confidence]
    return int(passing[0]) if passing else d


def measure(systems: list[str], values: np.ndarray, dev: int, splits: int, default: str, confidence: float) -> dict:
    d = systems.index(default)
    out: dict = {"queries": values.shape[0], "dev": dev, "splits": splits, "systems": len(systems)}
    rows = {rule: [] for rule in ("point", "verdict")}
    for seed in range(splits):
        order = np.random.default_rng(seed).permutation(values.shape[0])
        dev_rows, test_rows = values[order[:dev]], values[order[dev:]]
        test_means = test_rows.mean(axis=0)
        for rule in rows:
            pick = choose(dev_rows, systems, rule, default, confidence, seed)
            rows[rule].append((systems[pick], test_means[pick] - test_means[d], test_means.max() - test_means[pick]))
    for rule, picks in rows.items():
        diff = np.array([p[1] for p in picks])
        losses = diff[diff < -1e-12]
        counts: dict[str, int] = {}
        for name, *_ in picks:
            counts[name] = counts.get(name, 0) + 1
        out[rule] = {"loses_to_default": round(float(np.mean(diff < -1e-12)), 3),
                     "mean_loss_when_losing": round(float(losses.mean()), 4) if len(losses) else 0.0,
                     "worst_loss": round(float(diff.min()), 4),
                     "mean_vs_default": round(float(diff.mean()), 4),
                     "mean_shortfall_to_test_best": round(float(np.mean([p[2] for p in picks])), 4),
                     "served": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:5])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", action="append", required=True, help="NAME=PROJECT_FOLDER (evaluated)")
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--dev", type=int, default=25, help="dev queries (at most a third of the judged queries)")
    parser.add_argument("--default", default="rrf(bm25+dense-zs+splade-zs)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("collection", "out")}, "collections": {}}
    for spec in args.collection:
        name, folder = spec.split("=", 1)
        systems, values = per_query(Path(folder))
        dev = min(args.dev, values.shape[0] // 3)
        report["collections"][name] = result = measure(systems, values, dev, args.splits, args.default, args.confidence)
        print(name, json.dumps(result, indent=1), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
