"""Which system is best, how sure that is, and which judgment to ask for next.

The candidate systems' top 10 documents per query form the *pool*. A judged document has its grade; an unjudged
one is uncertain, and the verdict says how much that uncertainty (and, for ``publish``, the choice of queries)
could change the comparison:

* **Relevance of unjudged documents.** A Bayesian logistic regression, refitted after every judgment, gives each
  pooled document its probability of relevance from how the systems ranked it: the share of systems with it in
  their top 10, its best rank, its rank in each system's top 10 (so the model learns whose documents tend to be
  relevant on this corpus), and which query it answers (queries differ in how many relevant documents they
  have). The posterior is Gaussian (Laplace approximation); each Monte Carlo sample draws the weights from it,
  then each unjudged document's relevance, then a relevant document's grade from the grades seen so far
  (Dirichlet posterior). Documents are independent given the weights.
* **nDCG@10** of each system on each query is computed in every sample (linear gain, log2 discount, as
  trec_eval's ``ndcg_cut``), the ideal ranking from the judged and sampled grades of the pool plus any judged
  document outside it. Documents outside every system's top 10 are never relevant to the ideal unless judged:
  the estimate's scale assumes the pool holds the relevant documents (relative comparisons barely depend on it).
* **The verdict.** ``P(best)`` and ``P(within delta of the best)`` on the judged queries come from the document
  uncertainty alone: that is what more judgments can settle, and the stopping rule reads it (the leader is within
  ``delta`` nDCG@10 of the best with ``confidence``). Whether a system would also be better on *other* queries
  like these is a different question: ``P(better than the default)``, which ``publish`` reads, is 1 - the p-value
  of a one-sided paired randomisation test on the judged queries, averaged over samples of the unjudged
  documents (:func:`better_than`). The interval resamples the queries (bootstrap, one draw per sample).
* **The next judgment** (minimal test collections, Carterette, Allan & Sitaraman 2006): the unjudged pooled
  document whose grade moves the difference between the leader and its threats the most: its grade variance
  times the squared difference of its discounted weight in the leader's and each threat's ranking, summed over
  the threats (systems that beat the leader by more than ``delta`` in some samples). Depth-k order stays
  available (:func:`depth_order`) for comparison.

With complete judgments (a test collection: unjudged means not relevant) pass ``unjudged="nonrelevant"``: the
document uncertainty vanishes and only the query resampling remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from irforge.retrieval.runs import Run

CUTOFF = 10
DISCOUNT = 1.0 / np.log2(np.arange(2, CUTOFF + 2))  # rank 1 .. 10
PRIOR_LOGIT = -1.0  # before any judgment a pooled document is relevant with about 27 % (sd 1.5 on the logit)
SYSTEM_PRECISION = 16.0  # systems' weights shrink towards 0 (many candidates share most of their documents)
QUERY_PRECISION = 1.0
WARM_UP = 1e6  # added to the scores of a query's documents until it has a judgment
Unjudged = Literal["uncertain", "nonrelevant"]


@dataclass
class Pool:
    """The candidate systems' top ``CUTOFF`` documents per query, as indexes into each query's pooled documents."""

    systems: list[str]
    queries: list[str]
    docs: list[list[str]]  # per query: the pooled documents (sorted)
    positions: np.ndarray  # [queries, systems, CUTOFF]: index into docs[q] of each rank; width = no document
    real: np.ndarray  # [queries, width]: a pooled document (False: padding, the query pools fewer)

    @property
    def width(self) -> int:
        return self.real.shape[1]


def top_documents(hits: list[tuple[str, float]], k: int = CUTOFF) -> list[tuple[str, float]]:
    """A run's top ``k`` (document, score) as trec_eval (and so ir-measures) orders them: by score, ties by document
    id descending (RRF ties often)."""
    return sorted(hits, key=lambda h: (h[1], h[0]), reverse=True)[:k]


def pool_of(runs: dict[str, Run], queries: list[str] | None = None) -> Pool:
    """Pool ``runs`` (system -> ranked documents per query) for ``queries`` (default: every query of the first run)."""
    systems = list(runs)
    if not systems:
        raise ValueError("no candidate systems to compare")
    queries = list(queries if queries is not None else runs[systems[0]])
    tops = [[[doc for doc, _ in top_documents(runs[s].get(q, []))] for s in systems] for q in queries]
    docs = [sorted({d for top in per_system for d in top}) for per_system in tops]
    width = max([len(d) for d in docs] + [1])
    positions = np.full((len(queries), len(systems), CUTOFF), width, dtype=np.int64)
    real = np.zeros((len(queries), width), dtype=bool)
    for q, per_system in enumerate(tops):
        where = {d: i for i, d in enumerate(docs[q])}
        real[q, : len(docs[q])] = True
        for s, top in enumerate(per_system):
            for r, d in enumerate(top):
                positions[q, s, r] = where[d]
    return Pool(systems, queries, docs, positions, real)


def depth_order(pool: Pool, depth: int) -> list[tuple[str, str]]:
    """Depth-k pooling: every document in any system's top ``depth``, query by query, shallowest rank first."""
    order: list[tuple[str, str]] = []
    for q, query in enumerate(pool.queries):
        seen: set[int] = set()
        for r in range(min(depth, CUTOFF)):
            for s in range(len(pool.systems)):
                p = int(pool.positions[q, s, r])
                if p < len(pool.docs[q]) and p not in seen:
                    seen.add(p)
                    order.append((query, pool.docs[q][p]))
    return order


@dataclass
class Estimate:
    """Monte Carlo samples of every system's nDCG@10 given the judgments, and what selection needs of them."""

    pool: Pool
    ndcg: np.ndarray  # [samples, queries, systems] (samples = 1 when nothing is uncertain)
    rel_rate: np.ndarray  # [queries, width]: P(relevant) of each pooled document (1/0 once judged)
    gain_moments: tuple[float, float]  # E[gain], E[gain^2] of a relevant document
    ideal: np.ndarray  # [queries]: mean ideal DCG
    judged: np.ndarray  # [queries, width] bool
    judged_only: np.ndarray  # [queries, systems]: nDCG@10 with every unjudged document taken as not relevant
    seed: int
    unjudged: Unjudged = "uncertain"

    @property
    def means(self) -> np.ndarray:
        return self.ndcg.mean(axis=1)  # [samples, systems]


def estimate(pool: Pool, judged: dict[str, dict[str, int]], unjudged: Unjudged = "uncertain", samples: int = 500,
             seed: int = 0) -> Estimate:
    """Sample every system's per-query nDCG@10 given ``judged`` (query -> document -> grade; 0 = judged not relevant)."""
    rng = np.random.default_rng(seed)
    nq, width = len(pool.queries), pool.width
    grade = np.zeros((nq, width + 1))  # last column: the padding position, gain 0
    known = np.zeros((nq, width + 1), dtype=bool)
    known[:, width] = True
    outside = [[] for _ in range(nq)]  # judged relevant grades of documents no system put in its top 10
    for q, query in enumerate(pool.queries):
        where = {d: i for i, d in enumerate(pool.docs[q])}
        for doc, g in judged.get(query, {}).items():
            if doc in where:
                grade[q, where[doc]], known[q, where[doc]] = max(0, g), True
            elif g > 0:
                outside[q].append(g)
    real = np.concatenate([pool.real, np.zeros((nq, 1), dtype=bool)], axis=1)
    seen, open_ = known & real, real & ~known
    relevant = seen & (grade > 0)
    levels = np.array(sorted({int(g) for g in grade[relevant]} | {g for o in outside for g in o}) or [1], dtype=float)
    level_counts = np.array([(grade[relevant] == v).sum() for v in levels], dtype=float) + 1.0
    draws = samples if unjudged == "uncertain" and open_.any() else 1
    gains = np.broadcast_to(grade, (draws, nq, width + 1)).copy()
    rate = np.where(known, grade > 0, 0.0)
    if draws > 1:  # the relevance model, fitted to the pooled judgments; its weights drawn once per sample
        x, prior_mean, prior_precision = features(pool)
        w_seen, w_open = seen[:, :width], open_[:, :width]
        weights, chol = fit_logistic(x[w_seen], relevant[:, :width][w_seen].astype(float), prior_mean, prior_precision)
        coefficients = weights + rng.standard_normal((draws, len(weights))) @ chol.T  # [draws, features]
        qi, pi = np.nonzero(w_open)
        p_rel = 1 / (1 + np.exp(-(coefficients @ x[qi, pi].T)))  # [draws, open documents]
        rel = rng.random((draws, len(qi))) < p_rel
        cumulative = np.cumsum(rng.dirichlet(level_counts, size=draws), axis=1)  # grades of relevant documents
        pick = (rng.random((draws, len(qi)))[:, :, None] > cumulative[:, None, :]).sum(axis=2)
        gains[:, qi, pi] = np.where(rel, levels[np.minimum(pick, len(levels) - 1)], 0.0)
        rate[qi, pi] = p_rel.mean(axis=0)
    ndcg = _ndcg(gains, pool.positions, outside)
    judged_only = _ndcg(np.where(known, grade, 0.0)[None], pool.positions, outside)[0]
    p_level = level_counts / level_counts.sum()
    ideal = _ideal(gains, outside).mean(axis=0)
    return Estimate(pool, ndcg, rate[:, :width],
                    (float(p_level @ levels), float(p_level @ levels**2)), ideal, (known & real)[:, :width],
                    judged_only, seed, unjudged)


def features(pool: Pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pooled document: [queries, width, F] features, and the prior mean and precision of each weight.

    Intercept; share of systems with it in their top 10; its best discount; for each system its discount in that
    system's top 10 (0 when absent: the model learns which systems' documents are relevant here); one indicator
    per query (queries differ in how many relevant documents they have)."""
    nq, ns, width = len(pool.queries), len(pool.systems), pool.width
    disc = np.zeros((nq, width + 1, ns))
    q_index, s_index = np.indices(pool.positions.shape[:2])
    for r in range(CUTOFF):
        disc[q_index, pool.positions[:, :, r], s_index] = DISCOUNT[r]
    disc = disc[:, :width]
    x = np.concatenate([np.ones((nq, width, 1)), (disc > 0).mean(axis=2, keepdims=True),
                        disc.max(axis=2, keepdims=True), disc,
                        np.broadcast_to(np.eye(nq)[:, None, :], (nq, width, nq))], axis=2)
    mean = np.zeros(x.shape[2])
    mean[0] = PRIOR_LOGIT
    precision = np.concatenate([[1 / 1.5**2, 1.0, 1.0], np.full(ns, SYSTEM_PRECISION), np.full(nq, QUERY_PRECISION)])
    return x, mean, precision


def fit_logistic(x: np.ndarray, y: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Laplace approximation of a Bayesian logistic regression: the posterior mode and the Cholesky factor of
    the posterior covariance (Newton's method from the prior mean)."""
    beta = mean.copy()
    for _ in range(25):
        p = 1 / (1 + np.exp(-(x @ beta)))
        gradient = x.T @ (p - y) + precision * (beta - mean)
        hessian = (x.T * (p * (1 - p))) @ x + np.diag(precision)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    p = 1 / (1 + np.exp(-(x @ beta)))
    hessian = (x.T * (p * (1 - p))) @ x + np.diag(precision)
    return beta, np.linalg.cholesky(np.linalg.inv(hessian))


def _ideal(gains: np.ndarray, outside: list[list[int]]) -> np.ndarray:
    """Ideal DCG@10 per sample and query: the best 10 of the pooled gains and the judged ones outside the pool."""
    extra = max([len(o) for o in outside] + [0])
    if extra:
        more = np.zeros((gains.shape[1], extra))
        for q, o in enumerate(outside):
            more[q, : len(o)] = o
        gains = np.concatenate([gains, np.broadcast_to(more, (gains.shape[0], *more.shape))], axis=2)
    top = -np.sort(-gains, axis=2)[:, :, :CUTOFF]
    return top @ DISCOUNT[: top.shape[2]]


def _ndcg(gains: np.ndarray, positions: np.ndarray, outside: list[list[int]]) -> np.ndarray:
    """[samples, queries, systems] nDCG@10 (0 for a query without any relevant document)."""
    q_index = np.arange(positions.shape[0])[:, None, None]
    dcg = gains[:, q_index, positions] @ DISCOUNT  # [samples, queries, systems]
    ideal = _ideal(gains, outside)[:, :, None]
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def verdict(est: Estimate, default: str | None = None, delta: float = 0.01, confidence: float = 0.95,
            resamples: int = 2000) -> dict[str, Any]:
    """Every system's estimate and interval, P(best), P(within delta of the best), the stopping rule, and the
    confidence that it is better than ``default`` (:func:`better_than`) with the choice it leads to (``default``
    kept unless a system is better with ``confidence``)."""
    pool = est.pool
    means = est.means  # [samples, systems]
    center = means.mean(axis=0)
    best = means.max(axis=1, keepdims=True)
    p_best = (means == best).astype(float)
    p_best = (p_best / p_best.sum(axis=1, keepdims=True)).mean(axis=0)
    within = (means >= best - delta - 1e-12).mean(axis=0)
    leader = int(np.argmax(center))
    # Query resampling: one bootstrap draw of the queries per Monte Carlo sample (many draws when nothing is uncertain).
    rng = np.random.default_rng(est.seed + 1)
    nq = len(pool.queries)
    draws = max(resamples, est.ndcg.shape[0]) if nq else 0
    weights = rng.multinomial(nq, np.full(nq, 1 / nq), size=draws) / nq if nq else np.zeros((0, 0))
    per_query = est.ndcg[np.arange(draws) % est.ndcg.shape[0]] if nq else est.ndcg
    resampled = np.einsum("dq,dqs->ds", weights, per_query) if nq else np.zeros((0, len(pool.systems)))
    low, high = (np.percentile(resampled, [2.5, 97.5], axis=0) if nq else (center, center))
    systems: dict[str, dict[str, Any]] = {}
    d = pool.systems.index(default) if default in pool.systems else None
    better = better_than(est.ndcg, d, resamples, est.seed + 3) if d is not None and nq else np.zeros(len(pool.systems))
    for i, name in enumerate(pool.systems):
        row = {"estimate": round(float(center[i]), 4), "judged_only": round(float(est.judged_only[:, i].mean()), 4)
               if nq else 0.0, "low": round(float(low[i]), 4), "high": round(float(high[i]), 4),
               "p_best": round(float(p_best[i]), 4), "p_within": round(float(within[i]), 4)}
        if d is not None and i != d:
            row["p_better_than_default"] = round(float(better[i]), 4)
        systems[name] = row
    judgments = int(est.judged.sum())
    untouched = int((~est.judged.any(axis=1)).sum()) if est.ndcg.shape[0] > 1 else 0
    stop = bool(nq and within[leader] >= confidence and not untouched)
    name = pool.systems[leader]
    if not nq:
        message = "no judged queries yet"
    elif est.unjudged == "nonrelevant":
        message = (f"{name} has the best estimate on these {nq} queries (judgments taken as complete: an unjudged "
                   "document is not relevant)")
    elif untouched and within[leader] >= confidence:
        message = (f"{name} leads ({center[leader]:.3f}) and is within {delta} of the best with {within[leader]:.0%} "
                   f"confidence, but {untouched} of {nq} queries have no judgment yet: judge each once before stopping")
    elif stop:
        message = (f"{name} is the best (or within {delta} nDCG@10 of it) with {within[leader]:.0%} confidence after "
                   f"{judgments} judgments on {nq} queries: you can stop")
    else:
        message = (f"{name} leads ({center[leader]:.3f}); P(within {delta} of the best) is {within[leader]:.0%}, "
                   f"{confidence:.0%} is needed: keep judging")
    out: dict[str, Any] = {"measure": "nDCG@10", "queries": nq, "judgments": judgments,
                           "samples": int(est.ndcg.shape[0]), "delta": delta, "confidence": confidence,
                           "leader": name, "stop": stop, "message": message, "systems": systems}
    out.update(choose(systems, default, confidence))
    return out


def better_than(ndcg: np.ndarray, default: int, resamples: int = 2000, seed: int = 0, draws: int = 200) -> np.ndarray:
    """Per system, the confidence that it is better than system ``default`` on queries like these: 1 - the p-value
    of a one-sided paired randomisation test (sign flips of the per-query differences), averaged over (up to
    ``draws``) samples of the unjudged documents. Unlike a bootstrap it stays modest on few queries: 3 queries
    won out of 3 give 0.875, not 1."""
    rng = np.random.default_rng(seed)
    samples = ndcg[rng.choice(ndcg.shape[0], size=min(draws, ndcg.shape[0]), replace=False)]
    diff = samples - samples[:, :, [default]]  # [draws, queries, systems]
    nq = diff.shape[1]
    flips = rng.choice([-1.0, 1.0], size=(resamples, nq))
    observed = diff.mean(axis=1)  # [draws, systems]
    null = np.einsum("rq,dqs->drs", flips, diff) / nq  # [draws, resamples, systems]
    p = (1 + (null >= observed[:, None, :] - 1e-12).sum(axis=1)) / (resamples + 1)
    confidence = 1 - p.mean(axis=0)
    confidence[default] = 0.0
    return confidence


def choose(systems: dict[str, dict[str, Any]], default: str | None, confidence: float) -> dict[str, Any]:
    """The system to serve: the default unless another is better with ``confidence`` (then the best estimate of
    those that are); without a default, the best estimate."""
    ranked = sorted(systems, key=lambda s: -systems[s]["estimate"])
    if default is None or default not in systems:
        return {"default": default, "choice": ranked[0] if ranked else None,
                "choice_reason": "the best estimate (no default system to keep)"}
    better = [s for s in ranked if systems[s].get("p_better_than_default", 0) >= confidence]
    if better:
        s = better[0]
        return {"default": default, "choice": s, "choice_reason": (
            f"{s} is better than the default {default} with P {systems[s]['p_better_than_default']:.2f} >= "
            f"{confidence} ({systems[s]['estimate']:.4f} vs {systems[default]['estimate']:.4f})")}
    top = ranked[0]
    why = (f"the default {default} is the best estimate" if top == default else
           f"{top} leads ({systems[top]['estimate']:.4f} vs {systems[default]['estimate']:.4f}) but P(better than "
           f"the default) is {systems[top]['p_better_than_default']:.2f} < {confidence}: the default is kept")
    return {"default": default, "choice": default, "choice_reason": why}


def next_judgments(est: Estimate, k: int = 1, delta: float = 0.01) -> list[tuple[str, str, float]]:
    """The ``k`` unjudged (query, document) pairs whose grades most change the leader's comparison with its threats."""
    pool = est.pool
    means = est.means
    leader = int(np.argmax(means.mean(axis=0)))
    threat = (means - means[:, [leader]] > delta).mean(axis=0)
    threat[leader] = 0.0
    if not threat.any():  # settled already: keep separating the leader from its closest followers
        order = np.argsort(-means.mean(axis=0))
        threat[order[1:4]] = 1.0
    nq, width = est.rel_rate.shape[0], est.pool.width
    weight = np.zeros((nq, len(pool.systems), width + 1))  # discounted weight of each document in each ranking
    q_index, s_index = np.indices(pool.positions.shape[:2])
    for r in range(CUTOFF):
        np.add.at(weight, (q_index, s_index, pool.positions[:, :, r]), DISCOUNT[r])
    weight = weight[:, :, :width] / np.maximum(est.ideal, 1e-9)[:, None, None] / max(nq, 1)
    gap = ((weight[:, [leader], :] - weight) ** 2 * threat[None, :, None]).sum(axis=1)  # [queries, width]
    mean_gain, mean_square = est.gain_moments
    p = est.rel_rate
    variance = p * mean_square - (p * mean_gain) ** 2
    score = np.where(est.judged | ~pool.real, -np.inf, variance * gap)
    # A warm-up round: a query without any judgment gets one first, so every query's weight is learnt from its own
    # judgments rather than the prior alone (and the stopping rule never rests on a query nobody looked at).
    untouched = ~est.judged.any(axis=1) & np.isfinite(score).any(axis=1)
    score = np.where(untouched[:, None] & np.isfinite(score), score + WARM_UP, score)
    tie = np.random.default_rng(est.seed + 2).random(score.shape)  # seeded tie-break
    flat = np.lexsort((tie.ravel(), -score.ravel()))[:k]
    return [(pool.queries[i // width], pool.docs[i // width][i % width], float(score.ravel()[i]))
            for i in flat if np.isfinite(score.ravel()[i])]


MIN_DEV_QUERIES = 20  # fewer dev queries than this and a choice on them is a coin toss: choose on every judged query


def experiment_verdict(runs: dict[str, Run], qrels: dict[str, dict[str, int]], splits: dict[str, str],
                       default: str | None, delta: float, confidence: float, choose_on: str = "auto",
                       unjudged: str = "auto", seed: int = 0, samples: int = 500) -> dict[str, Any]:
    """The evaluate stage's verdict: which run to serve, chosen on the dev split (or every judged query when the
    dev split is too small to choose on), with the judgments' completeness decided from the qrels themselves."""
    # A judged query some system found nothing for counts (that system scores 0 on it), as in evaluate's metrics.
    judged = sorted(q for q in qrels if any(q in r for r in runs.values()))
    if not judged:
        return {"queries": 0, "default": default, "choice": default, "choice_reason": (
            "no judged queries: the choice rests on the default" + (f" {default}" if default else "") +
            "; judge a few queries in the judging page (`irforge judge serve`) for a verdict on this corpus")}
    dev = [q for q in judged if splits.get(q) == "dev"]
    if choose_on == "auto":
        choose_on = "dev" if len(dev) >= MIN_DEV_QUERIES else "all"
    queries = dev if choose_on == "dev" else judged
    if unjudged == "auto":  # judged-not-relevant rows are the mark of pooled judging: the rest is unknown, not 0
        unjudged = "uncertain" if any(g <= 0 for docs in qrels.values() for g in docs.values()) else "nonrelevant"
    pool = pool_of(runs, queries)
    out = verdict(estimate(pool, qrels, unjudged, samples, seed), default, delta, confidence)
    out.update({"split": choose_on, "unjudged": unjudged, "assumes": (
        "unjudged documents are not relevant (the collection lists its relevant documents)" if unjudged ==
        "nonrelevant" else "an unjudged document in a system's top 10 is relevant with a rate learnt from the "
        "judgments (by how many systems rank it and how high), independently of the others")})
    return out
