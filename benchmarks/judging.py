"""Judging by simulation: the real judgments play the judge, and we see how few judgments the verdict needs.

For each collection (a project folder whose ``evaluate`` stage ran: ``artifacts/evaluate/runs.parquet`` holds the
candidate systems' runs, ``artifacts/judgments/qrels.parquet`` the judgments), and each of ``--runs`` seeded runs:

1. draw ``--queries`` judged queries (with at least one relevant document);
2. the truth: every candidate's nDCG@10 on those queries under the full judgments; the true best;
3. **active** judging (irforge.evaluation.verdict, as the judging page does): ask for the judgment the verdict
   picks, answer it from the qrels (a document not in them is not relevant), until the stopping rule fires
   (the leader within ``delta`` of the best with ``confidence``) or ``--budget`` judgments are spent;
4. **depth-5 and depth-10 pooling**: judge every document in any system's top k; the best by nDCG@10 with the
   rest taken as not relevant wins. Active judging is also read at those two budgets.

A choice is *right* when its true nDCG@10 is within 0.01 of the true best's. Calibration: of the runs that
stopped saying "95 % confident", the share that were right.

    python benchmarks/judging.py --collection cranfield=. --collection cisi=/work/collections/proj-cisi \\
        --collection med=/work/collections/proj-med --runs 30 --out benchmarks/results/judging.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.contract.artifacts import read_artifact  # noqa: E402
from irforge.evaluation import verdict as V  # noqa: E402

TOLERANCE = 0.01  # "right": within this of the true best's nDCG@10


def load(project: Path) -> tuple[dict, dict]:
    """The candidate systems' runs (system -> query -> ranked documents) and the qrels of a project."""
    table = read_artifact(project / "artifacts/evaluate/runs.parquet", "run",
                          ["system", "query_id", "doc_id", "rank", "score"])
    runs: dict[str, dict[str, list]] = {}
    cols = [table.column(c).to_pylist() for c in ("system", "query_id", "doc_id", "rank", "score")]
    for system, query, doc, rank, score in zip(*cols, strict=True):
        if rank <= 50:  # the top 10 after trec_eval's tie-break is well inside the top 50
            runs.setdefault(system, {}).setdefault(query, []).append((doc, score))
    qrels: dict[str, dict[str, int]] = {}
    judged = read_artifact(project / "artifacts/judgments/qrels.parquet", "qrels")
    for q, d, g in zip(*(judged.column(c).to_pylist() for c in ("query_id", "doc_id", "grade")), strict=True):
        qrels.setdefault(q, {})[d] = g
    return runs, qrels


def truth(pool: V.Pool, qrels: dict) -> np.ndarray:
    est = V.estimate(pool, {q: qrels.get(q, {}) for q in pool.queries}, unjudged="nonrelevant")
    return est.judged_only.mean(axis=0)


def within(est: V.Estimate, delta: float) -> tuple[int, float]:
    means = est.means
    leader = int(np.argmax(means.mean(axis=0)))
    return leader, float((means[:, leader] >= means.max(axis=1) - delta - 1e-12).mean())


def simulate(runs: dict, qrels: dict, seed: int, queries: int, budget: int, samples: int, delta: float,
             confidence: float, at_depth_budgets: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    candidates = sorted(q for q, docs in qrels.items() if any(g > 0 for g in docs.values())
                        and all(q in r for r in runs.values()))
    chosen = sorted(rng.choice(candidates, size=min(queries, len(candidates)), replace=False).tolist())
    pool = V.pool_of(runs, chosen)
    real = truth(pool, qrels)
    best = float(real.max())
    right = lambda i: bool(real[i] >= best - TOLERANCE - 1e-12)  # noqa: E731
    out: dict = {"seed": seed, "queries": len(chosen), "true_best": pool.systems[int(real.argmax())],
                 "true_best_ndcg": round(best, 4)}
    depth_budgets = {}
    for depth in (5, 10):
        order = V.depth_order(pool, depth)
        judged: dict[str, dict[str, int]] = {}
        for q, d in order:
            judged.setdefault(q, {})[d] = qrels.get(q, {}).get(d, 0)
        pick = int(np.argmax(V.estimate(pool, judged, unjudged="nonrelevant").judged_only.mean(axis=0)))
        depth_budgets[depth] = len(order)
        out[f"depth{depth}"] = {"judgments": len(order), "choice": pool.systems[pick], "right": right(pick)}
    judged = {}
    at_budget: dict[int, int] = {}
    stopped = None
    for n in range(budget + 1):
        est = V.estimate(pool, judged, samples=samples, seed=seed)
        leader, p = within(est, delta)
        for depth, size in depth_budgets.items():
            if n == size:
                at_budget[depth] = leader
        if stopped is None and p >= confidence and all(judged.get(q) for q in pool.queries):
            stopped = (n, leader, p)
            if not at_depth_budgets or all(d in at_budget or depth_budgets[d] > budget for d in depth_budgets):
                break
        if n == budget:
            break
        (q, d, _), = V.next_judgments(est, 1, delta) or [(None, None, 0)]
        if q is None:  # every pooled document judged
            break
        judged.setdefault(q, {})[d] = qrels.get(q, {}).get(d, 0)
    n_final = sum(len(v) for v in judged.values())
    if stopped is None:
        stopped_info = {"stopped": False, "judgments": n_final, "choice": pool.systems[leader], "right": right(leader)}
    else:
        stopped_info = {"stopped": True, "judgments": stopped[0], "choice": pool.systems[stopped[1]],
                        "right": right(stopped[1]), "confidence": round(stopped[2], 3)}
    out["active"] = stopped_info
    for depth in depth_budgets:
        if depth in at_budget:  # (a budget larger than --budget is not read)
            pick = at_budget[depth]
            out[f"active_at_depth{depth}_budget"] = {"judgments": depth_budgets[depth], "choice": pool.systems[pick],
                                                     "right": right(pick)}
    return out


def summarise(results: list[dict]) -> dict:
    def block(key: str) -> dict:
        rows = [r[key] for r in results]
        n = [row["judgments"] for row in rows]
        return {"judgments_median": float(np.median(n)), "judgments_mean": round(float(np.mean(n)), 1),
                "judgments_max": int(max(n)), "right": round(float(np.mean([row["right"] for row in rows])), 3)}

    active = [r["active"] for r in results]
    stopped = [a for a in active if a["stopped"]]
    out = {"runs": len(results), "active": block("active") | {
        "stopped": len(stopped), "stopped_right": round(float(np.mean([a["right"] for a in stopped])), 3) if stopped else None}}
    for key in ("depth5", "depth10", "active_at_depth5_budget", "active_at_depth10_budget"):
        if all(key in r for r in results):
            out[key] = block(key)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", action="append", required=True, help="NAME=PROJECT_FOLDER (evaluated)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--queries", type=int, default=25)
    parser.add_argument("--budget", type=int, default=400, help="judgments at most per run")
    parser.add_argument("--samples", type=int, default=1000, help="Monte Carlo samples (judge.samples)")
    parser.add_argument("--delta", type=float, default=0.01)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = {"settings": {k: v for k, v in vars(args).items() if k not in ("collection", "out")}, "collections": {}}
    for spec in args.collection:
        name, folder = spec.split("=", 1)
        runs, qrels = load(Path(folder))
        started = time.perf_counter()
        results = []
        for seed in range(args.runs):
            results.append(simulate(runs, qrels, seed, args.queries, args.budget, args.samples, args.delta,
                                    args.confidence))
            a = results[-1]["active"]
            print(f"{name} run {seed + 1}/{args.runs}: {a['judgments']} judgments, {a['choice']} "
                  f"({'right' if a['right'] else 'WRONG'}), {time.perf_counter() - started:.0f} s", file=sys.stderr)
        summary = summarise(results)
        summary["systems"] = len(runs)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        report["collections"][name] = {"summary": summary, "runs": results}
        print(name, json.dumps(summary, indent=1), flush=True)
    if args.out:  # collections measured by an earlier run (in parallel, say) stay in the file
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.exists():
            earlier = json.loads(args.out.read_text(encoding="utf-8")).get("collections", {})
            report["collections"] = {**{k: v for k, v in earlier.items() if k not in report["collections"]},
                                     **report["collections"]}
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
