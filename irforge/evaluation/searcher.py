"""Search plans: the runs one system needs (indexes, feedback systems, reranks, fusions) and their execution.

The evaluate stage runs the plan of every system it compares; ``irforge search``, ``irforge serve`` and the
re-index gate run the plan of the one system they serve. Both go through :class:`Searcher`, so a served system
ranks exactly as it was evaluated (at its own ``depth``).

A plan is plain data (JSON in a served version's ``system.json``), built from the ``evaluate`` params section by
:meth:`SearchPlan.from_config`. Each derived run is a step: ``feedback`` (a system searched again with its query
moved towards another run's top documents), ``rerank`` (a run's top documents scored again) or ``fusion`` (RRF).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from irforge.evaluation.measures import search_timed as _search_timed
from irforge.evaluation.rerank import PassageScorer, rerank_run
from irforge.retrieval import (
    BM25Retriever,
    FaissRetriever,
    ImpactRetriever,
    Retriever,
    Rocchio,
    Run,
    SparseRocchio,
    VectorRocchio,
    chunks_to_docs,
)
from irforge.retrieval import reciprocal_rank_fusion as rrf

FEEDBACK_KEYS = ("system", "method", "feedback", "docs", "terms", "alpha", "beta", "query_weight")
RERANK_KEYS = ("system", "model", "depth", "max_passages", "fusion", "max_length", "dtype")


def fusion_name(members: list[str]) -> str:
    return "rrf(" + "+".join(members) + ")"


@dataclass
class SearchPlan:
    """What to search for ``target`` (None: every run of the evaluate section)."""

    target: str | None
    systems: list[str]  # indexes searched (index.systems names)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # derived runs, in an order that respects needs
    rrf_k: int = 60
    depth: int = 1000  # documents per run
    chunk_factor: int = 2  # chunk hits fetched per document kept

    @classmethod
    def from_config(cls, cfg: Any, target: str | None = None, depth: int | None = None) -> SearchPlan:
        """The plan of ``target`` (a system, feedback system, rerank or fusion of ``cfg``, the evaluate section)."""
        steps: dict[str, dict[str, Any]] = {}
        for name in cfg.derived_order():
            if name in cfg.feedback:
                steps[name] = {"kind": "feedback", **{k: getattr(cfg.feedback[name], k) for k in FEEDBACK_KEYS}}
            elif name in cfg.rerank:
                rr = cfg.rerank[name]
                steps[name] = {"kind": "rerank", "scorer": rr.kind, **{k: getattr(rr, k) for k in RERANK_KEYS}}
            else:
                steps[name] = {"kind": "fusion", "members": next(m for m in cfg.fusions if fusion_name(m) == name)}
        plan = cls(None, list(cfg.systems), steps, cfg.rrf_k, depth or cfg.depth, cfg.chunk_factor)
        return plan if target is None else plan.narrowed(target)

    def narrowed(self, target: str) -> SearchPlan:
        """Only the runs ``target`` needs."""
        if target not in self.systems and target not in self.steps:
            raise ValueError(f"unknown system '{target}': not an evaluated system, feedback system, rerank or fusion "
                             f"(known: {', '.join([*self.systems, *self.steps])})")
        needed, todo = set(), [target]
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo += self.needs(name)
        return SearchPlan(target, [s for s in self.systems if s in needed],
                          {n: s for n, s in self.steps.items() if n in needed}, self.rrf_k, self.depth, self.chunk_factor)

    def needs(self, name: str) -> list[str]:
        step = self.steps.get(name)
        if step is None:
            return []
        if step["kind"] == "fusion":
            return list(step["members"])
        if step["kind"] == "feedback" and step["feedback"] != "self":
            return [step["system"], step["feedback"]]
        return [step["system"]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchPlan:
        """A plan from its JSON (whose step order a key-sorted dump does not keep: it is derived again)."""
        plan = cls(**data)
        done, order = set(plan.systems), {}
        while len(order) < len(plan.steps):
            ready = [n for n in sorted(plan.steps) if n not in done and all(d in done for d in plan.needs(n))]
            if not ready:
                raise ValueError(f"search plan: steps {sorted(set(plan.steps) - done)} need runs it does not have")
            order.update({n: plan.steps[n] for n in ready})
            done.update(ready)
        plan.steps = order
        return plan


@dataclass
class Searched:
    runs: dict[str, Run]  # document runs of every system and step
    latencies: dict[str, np.ndarray]  # seconds per query (in query order) of every run, first stages included
    chunk_runs: dict[str, Run]  # chunk hits of the indexes and feedback systems (best passage of a document)


def _search_batch(retriever: Any, queries: dict[str, str], k: int) -> tuple[Run, list[float]]:
    started = time.perf_counter()
    run = retriever.search(queries, k) if queries else {}
    return run, [(time.perf_counter() - started) / max(1, len(queries))] * len(queries)


class Searcher:
    """Opens a plan's indexes (and rerankers) once, then searches any number of query batches with it."""

    def __init__(self, plan: SearchPlan, open_index: Callable[[str], Retriever],
                 open_reranker: Callable[[str, dict[str, Any]], PassageScorer] | None = None,
                 passages: dict[str, list[dict]] | None = None):
        self.plan, self.passages = plan, passages or {}
        self.retrievers: dict[str, Any] = {}
        self.feedback: dict[str, Any] = {}
        self.rerankers: dict[str, PassageScorer] = {}
        try:  # every index and reranker opens before any search: a missing one fails fast
            for system in plan.systems:
                self.retrievers[system] = open_index(system)
            for name, step in plan.steps.items():
                if step["kind"] == "feedback":
                    self.feedback[name] = self._feedback_retriever(name, step, open_index)
                elif step["kind"] == "rerank":
                    if open_reranker is None:
                        raise ValueError(f"{name}: a rerank step needs a reranker")
                    self.rerankers[name] = open_reranker(name, step)
        except BaseException:
            self.close()
            raise

    def _feedback_retriever(self, name: str, step: dict[str, Any], open_index: Callable[[str], Retriever]) -> Any:
        retriever = self.retrievers[step["system"]]
        if isinstance(retriever, FaissRetriever):
            if step["method"] != "rocchio":
                raise ValueError(f"evaluate.feedback.{name}: a faiss system takes method rocchio, not {step['method']}")
            return VectorRocchio(retriever, step["docs"], step["alpha"], step["beta"])
        if isinstance(retriever, ImpactRetriever):
            if step["method"] != "rocchio":
                raise ValueError(f"evaluate.feedback.{name}: an impact (SPLADE) system takes method rocchio, not "
                                 f"{step['method']}")
            return SparseRocchio(retriever, self.passages, step["docs"], step["alpha"], step["beta"])
        if isinstance(retriever, BM25Retriever):
            if step["feedback"] != "self":
                raise ValueError(f"evaluate.feedback.{name}: BM25 feedback ({step['method']}) comes from the system's "
                                 f"own top documents; set feedback: self (got '{step['feedback']}')")
            expanded = open_index(step["system"])  # its own searcher: feedback settings stay off the plain one
            expanded.use_feedback(step["method"], step["docs"], step["terms"], step["query_weight"], step["alpha"],
                                  step["beta"])
            return expanded
        raise ValueError(f"evaluate.feedback.{name}: feedback for '{step['system']}' ({type(retriever).__name__}) is "
                         "not supported; it works on faiss and impact (rocchio) and bm25 (rm3, rocchio) systems")

    def search(self, queries: dict[str, str], before: Callable[[str, Any], None] | None = None,
               timed: bool = True) -> Searched:
        """Every run of the plan for ``queries``; ``before(system, retriever)`` is called before each index is
        searched (evaluate counts cut queries). ``timed``: each query searched on its own, so its latency is what
        one user waits; otherwise each retriever searches the whole batch at once (encoders batch the queries:
        a service answering concurrent requests together), and latencies are the batch's mean."""
        plan = self.plan
        search_timed = _search_timed if timed else _search_batch
        k = plan.depth * plan.chunk_factor  # extra chunk hits, so `depth` documents remain after max-aggregation
        runs: dict[str, Run] = {}
        chunk_runs: dict[str, Run] = {}
        latencies: dict[str, np.ndarray] = {}

        def documents(name: str, hits: Run, seconds: list[float]) -> None:
            chunk_runs[name] = hits
            runs[name] = {qid: chunks_to_docs(h, plan.depth) for qid, h in hits.items()}
            latencies[name] = np.array(seconds)

        for system, retriever in self.retrievers.items():
            if before is not None:
                before(system, retriever)
            documents(system, *search_timed(retriever, queries, k))
        for name, step in plan.steps.items():
            if step["kind"] == "rerank":
                runs[name], seconds = rerank_run(runs[step["system"]], queries, self.passages, self.rerankers[name],
                                                 step["depth"], step["max_passages"], step["fusion"], plan.rrf_k,
                                                 desc=f"rerank {name}")
                latencies[name] = latencies[step["system"]] + np.array(seconds)  # the first stage ran first
            elif step["kind"] == "feedback":
                retriever = self.feedback[name]
                if isinstance(retriever, Rocchio):  # the feedback run was searched first
                    source = step["system"] if step["feedback"] == "self" else step["feedback"]
                    documents(name, *search_timed(retriever.given(runs[source]), queries, k))
                    latencies[name] = latencies[source] + latencies[name]
                else:
                    documents(name, *search_timed(retriever, queries, k))
            else:
                members = step["members"]
                runs[name] = rrf([runs[m] for m in members], k=plan.rrf_k, depth=plan.depth)
                latencies[name] = sum(latencies[m] for m in members)  # members run one after the other
        return Searched(runs, latencies, chunk_runs)

    def close(self) -> None:
        for retriever in [*self.retrievers.values(), *self.feedback.values()]:
            if hasattr(retriever, "close"):  # a Rocchio holds nothing of its own
                retriever.close()
        self.retrievers, self.feedback = {}, {}
