"""The verdict: nDCG@10 from (in)complete judgments, the next judgment to ask for, the stopping rule, and the
publish rule that keeps the default unless the evidence is strong."""

from __future__ import annotations

import numpy as np
import pytest

from irforge.evaluation import score
from irforge.evaluation import verdict as V


def ranked(*docs: str) -> list[tuple[str, float]]:
    return [(d, float(len(docs) - i)) for i, d in enumerate(docs)]


def test_complete_judgments_give_ir_measures_ndcg_including_trec_eval_ties():
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(40)]
    runs = {s: {f"q{q}": [(d, float(rng.integers(0, 6))) for d in rng.permutation(docs)[:25]] for q in range(6)}
            for s in ("a", "b", "c")}  # integer scores: many ties, broken by document id as trec_eval does
    qrels = {f"q{q}": {d: int(rng.integers(0, 4)) for d in rng.permutation(docs)[:15]} for q in range(6)}
    pool = V.pool_of(runs)
    est = V.estimate(pool, qrels, unjudged="nonrelevant")
    assert est.ndcg.shape == (1, 6, 3)
    for i, system in enumerate(pool.systems):
        means, per_query = score(runs[system], qrels, ["nDCG@10"])
        assert est.judged_only[:, i].mean() == pytest.approx(means["nDCG@10"], abs=1e-9)
        assert est.ndcg[0, :, i].mean() == pytest.approx(means["nDCG@10"], abs=1e-9)


def test_uncertainty_shrinks_as_judgments_come_and_vanishes_when_the_pool_is_judged():
    runs = {"good": {"q": ranked("r1", "r2", "n1", "n2")}, "bad": {"q": ranked("n1", "n2", "r1", "r2")}}
    pool = V.pool_of(runs)
    truth = {"q": {"r1": 2, "r2": 1, "n1": 0, "n2": 0}}
    spread = lambda est: float(np.ptp(est.means[:, 0] - est.means[:, 1]))  # noqa: E731
    none = V.estimate(pool, {}, samples=400, seed=1)
    some = V.estimate(pool, {"q": {"r1": 2, "n1": 0}}, samples=400, seed=1)
    full = V.estimate(pool, truth, samples=400, seed=1)
    assert spread(none) > spread(some) > 0
    assert full.ndcg.shape[0] == 1 and spread(full) == 0  # nothing uncertain: one sample is exact
    v = V.verdict(full)
    assert v["leader"] == "good" and v["systems"]["good"]["p_best"] == 1.0
    assert v["stop"] and "you can stop" in v["message"]


def test_the_next_judgment_separates_the_leader_from_its_threat_and_warms_up_untouched_queries():
    # a and b agree everywhere except rank 1 of q1; c's documents are judged not relevant. Shared documents tell a
    # from b nothing.
    runs = {"a": {"q1": ranked("x", "s1", "s2"), "q2": ranked("t1", "t2")},
            "b": {"q1": ranked("y", "s1", "s2"), "q2": ranked("t1", "t2")},
            "c": {"q1": ranked("z1", "z2", "z3"), "q2": ranked("z4", "z5")}}
    pool = V.pool_of(runs)
    judged = {"q1": {"s1": 1, "z1": 0, "z2": 0, "z3": 0}, "q2": {"t1": 1, "z4": 0, "z5": 0}}
    (q, d, _), = V.next_judgments(V.estimate(pool, judged, samples=400, seed=3), 1)
    assert (q, d) in {("q1", "x"), ("q1", "y")}
    first = V.next_judgments(V.estimate(pool, {"q1": {"s1": 1}}, samples=400, seed=3), 1)
    assert first[0][0] == "q2"  # a query nobody judged yet gets its first judgment before anything else
    everything = {q: {d: 0 for d in docs} for q, docs in zip(pool.queries, pool.docs, strict=True)}
    assert V.next_judgments(V.estimate(pool, everything, samples=100), 3) == []


def test_depth_order_is_the_union_of_each_systems_top_k_shallowest_first():
    runs = {"a": {"q": ranked("1", "2", "3")}, "b": {"q": ranked("2", "4", "5")}}
    assert V.depth_order(V.pool_of(runs), 2) == [("q", "1"), ("q", "2"), ("q", "4")]


def simulate(runs, qrels, budget=400, seed=0):
    """Ask for the verdict's next judgment until it says stop; the qrels answer (absent = not relevant)."""
    pool = V.pool_of(runs)
    judged: dict[str, dict[str, int]] = {}
    for _ in range(budget):
        est = V.estimate(pool, judged, samples=400, seed=seed)
        v = V.verdict(est)
        if v["stop"]:
            return v, judged
        (q, d, _), = V.next_judgments(est, 1)
        judged.setdefault(q, {})[d] = qrels.get(q, {}).get(d, 0)
    return v, judged


def test_the_stopping_rule_finds_a_clearly_better_system_with_few_judgments_and_never_before_every_query_is_seen():
    rng = np.random.default_rng(5)
    runs: dict[str, dict] = {"strong": {}, "weak": {}, "mixed": {}}
    qrels = {}
    for q in range(8):
        relevant = [f"r{q}.{i}" for i in range(4)]
        other = [f"n{q}.{i}" for i in range(30)]
        qrels[f"q{q}"] = {d: 1 for d in relevant}
        runs["strong"][f"q{q}"] = ranked(*relevant[:3], *rng.permutation(other)[:7])
        runs["weak"][f"q{q}"] = ranked(*rng.permutation(other)[:9], relevant[3])
        runs["mixed"][f"q{q}"] = ranked(*rng.permutation(other)[:5], *relevant[:2], *rng.permutation(other)[:3])
    v, judged = simulate(runs, qrels)
    assert v["stop"] and v["leader"] == "strong"
    assert all(judged.get(q) for q in qrels)  # every query had at least one judgment before the stop
    pooled = sum(len(d) for d in V.pool_of(runs).docs)
    assert sum(len(d) for d in judged.values()) < pooled / 2  # far fewer than judging the whole pool


def test_publish_keeps_the_default_unless_a_system_is_better_with_confidence():
    qids = [f"q{i}" for i in range(30)]
    base = np.linspace(0.2, 0.8, 30)
    rng = np.random.default_rng(2)

    def runs_with(values: dict[str, np.ndarray]):
        # One relevant document per query, put at the rank whose discount gives (about) the wanted nDCG@10.
        out = {}
        for name, vals in values.items():
            out[name] = {}
            for q, v in zip(qids, vals, strict=True):
                rank = int(np.clip(round(2 ** (1 / max(v, 1e-3)) - 1), 1, 10))
                docs = [f"{q}-n{i}" for i in range(10)]
                docs.insert(rank - 1, f"{q}-rel")
                out[name][q] = ranked(*docs[:10])
        return out

    qrels = {q: {f"{q}-rel": 1} for q in qids}
    noisy = runs_with({"default": base, "noise": np.clip(base + rng.normal(0, 0.15, 30), 0.05, 1)})
    v = V.verdict(V.estimate(V.pool_of(noisy), qrels, unjudged="nonrelevant"), default="default")
    assert v["choice"] == "default" and "the default is kept" in v["choice_reason"] or "default default is the best" \
        in v["choice_reason"]
    better = runs_with({"default": base, "better": np.clip(base + 0.3, 0.05, 1)})
    v = V.verdict(V.estimate(V.pool_of(better), qrels, unjudged="nonrelevant"), default="default")
    assert v["choice"] == "better" and v["systems"]["better"]["p_better_than_default"] >= 0.95
    assert "better than the default default" in v["choice_reason"]


def test_experiment_verdict_reads_completeness_and_split_from_the_judgments():
    runs = {"a": {"q1": ranked("x", "y"), "q2": ranked("z", "w")}, "b": {"q1": ranked("y", "x"), "q2": ranked("w", "z")}}
    listed = {"q1": {"x": 1}, "q2": {"z": 1}}  # relevant documents only: a test collection's convention
    v = V.experiment_verdict(runs, listed, {"q1": "dev", "q2": "test"}, "b", 0.01, 0.95, seed=0)
    assert v["unjudged"] == "nonrelevant" and v["split"] == "all"  # one dev query is too few to choose on
    assert v["choice"] == "b" and v["leader"] == "a"  # a leads, but two queries are no evidence
    pooled = {"q1": {"x": 1, "y": 0}, "q2": {"z": 1}}  # a judged-not-relevant row: pooled judging, rest unknown
    v = V.experiment_verdict(runs, pooled, {"q1": "dev", "q2": "test"}, "b", 0.01, 0.95, seed=0, samples=200)
    assert v["unjudged"] == "uncertain" and v["samples"] == 200
    silent = {"a": runs["a"], "b": {"q1": runs["b"]["q1"]}}  # b found nothing for q2: it still counts, as 0 for b
    v = V.experiment_verdict(silent, listed, {}, "b", 0.01, 0.95, seed=0)
    assert v["queries"] == 2  # b: relevant at rank 2 on q1 (1 / log2 3), nothing on q2
    assert v["systems"]["b"]["estimate"] == pytest.approx(1 / np.log2(3) / 2, abs=1e-4)
    none = V.experiment_verdict(runs, {}, {}, "b", 0.01, 0.95)
    assert none["choice"] == "b" and "irforge judge serve" in none["choice_reason"]


def test_the_default_served_is_the_first_default_fusion_evaluated() -> None:
    """evaluate.default auto: the zero-shot fusion with EmbeddingGemma when that fusion is evaluated, else the plain
    zero-shot fusion, else the baseline; a named default is kept as given."""
    from stages.evaluate import EvaluateConfig

    three, four = ["bm25", "dense-zs", "splade-zs"], ["bm25", "dense-zs", "splade-zs", "gemma-zs"]
    def config(fusions, default="auto"):
        return EvaluateConfig(systems=["bm25", "dense-zs", "splade-zs", "gemma-zs"], fusions=fusions, compare=[],
                              feedback={}, default=default)

    assert config([three, four]).default_run() == "rrf(bm25+dense-zs+splade-zs+gemma-zs)"
    assert config([three]).default_run() == "rrf(bm25+dense-zs+splade-zs)"
    assert config([]).default_run() == "bm25"
    assert config([four], default="dense-zs").default_run() == "dense-zs"
