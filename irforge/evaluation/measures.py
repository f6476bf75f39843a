"""Measures of runs against judgments (ir-measures), timed search, and paired significance tests.

Shared by the evaluate stage, re-indexing's metric gate and the benchmarks, so a number means the same
thing wherever it is printed.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from irforge.retrieval.runs import Run

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP")


def score(run: Run, qrels: dict[str, dict[str, int]], measures: list[str]) -> tuple[dict[str, float], list[dict]]:
    """Mean and per-query values of ``measures`` (ir-measures names) for a document-level run."""
    import ir_measures

    parsed = [ir_measures.parse_measure(m) for m in measures]
    run_dict = {qid: {doc: score for doc, score in hits} for qid, hits in run.items()}
    per_query = [
        {"query_id": m.query_id, "measure": str(m.measure), "value": float(m.value)}
        for m in ir_measures.iter_calc(parsed, qrels, run_dict)
    ]
    means = {str(m): v for m, v in ir_measures.calc_aggregate(parsed, qrels, run_dict).items()}
    return {m: means[str(p)] for m, p in zip(measures, parsed, strict=True)}, per_query


@contextlib.contextmanager
def quiet_bars():
    """No progress bars while queries are encoded one at a time (a bar per query is noise)."""
    previous = os.environ.get("IRFORGE_PROGRESS")
    os.environ["IRFORGE_PROGRESS"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("IRFORGE_PROGRESS", None)
        else:
            os.environ["IRFORGE_PROGRESS"] = previous


def search_timed(retriever, queries: dict[str, str], k: int) -> tuple[Run, list[float]]:
    """Search query by query (encoding included), so each query's latency is what a user would wait."""
    run: Run = {}
    latencies: list[float] = []
    with quiet_bars():
        for qid, text in queries.items():
            started = time.perf_counter()
            run.update(retriever.search({qid: text}, k))
            latencies.append(time.perf_counter() - started)
    return run, latencies


def significance(per_query: dict[str, dict[str, float]], system: str, baseline: str, seed: int,
                 resamples: int = 10000) -> dict[str, float]:
    """Paired tests of ``system`` against ``baseline`` on per-query values: t-test and randomisation test."""
    from scipy import stats

    qids = sorted(per_query[baseline])
    a = np.array([per_query[system].get(q, 0.0) for q in qids])
    b = np.array([per_query[baseline][q] for q in qids])
    diff = a - b
    if not np.any(diff):
        return {"delta": 0.0, "p_ttest": 1.0, "p_randomisation": 1.0, "wins": 0, "losses": 0}
    t = stats.ttest_rel(a, b)
    perm = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                  n_resamples=resamples, rng=np.random.default_rng(seed))
    return {"delta": round(float(diff.mean()), 4), "p_ttest": float(f"{t.pvalue:.3g}"),
            "p_randomisation": float(f"{perm.pvalue:.3g}"),
            "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}
