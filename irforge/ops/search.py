"""Searching with a system: the experiment's own artifacts, or a served version (``irforge publish``).

A served version is a small project of its own: the same relative paths as the experiment (``artifacts/chunk/
chunks.parquet``, ``artifacts/index/<system>/``, a trained model at ``artifacts/train/<model>/``) plus
``system.json`` (the search plan and the BM25 settings it ran with) and ``manifest.json``. So one code path
opens both, and the ranking is the evaluate stage's (:class:`irforge.evaluation.Searcher`).

A result is a document: its id, title, score, the passage that put it in the run (the best-ranked chunk of the
document in any searched index), the spans of that passage that match a query term (Lucene's analyzer: the
terms BM25 matches, stemmed), and on request each run of the plan with the document's rank and score there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import types
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from irforge.contract import artifacts
from irforge.evaluation import Searched, Searcher, SearchPlan, group_passages, open_scorer
from irforge.retrieval import ProjectEncoders, Run, ensure_java, open_system, read_system

log = logging.getLogger(__name__)

SYSTEM_SPEC = "system.json"
CHUNKS = "artifacts/chunk/chunks.parquet"
INDEXES = "artifacts/index"
_WORD = re.compile(r"\w+")


class _Slot:
    """One caller's queries waiting for a search, and what it got."""

    def __init__(self, queries: dict[str, str]):
        self.queries, self.done = queries, False
        self.result: Searched | None = None
        self.error: BaseException | None = None


class SearchService:
    """A system opened once for any number of searches; thread-safe (concurrent callers are searched together)."""

    def __init__(self, root: Path | str, spec: dict[str, Any], cache_dir: Path | str, threads: int | None = None,
                 version: str | None = None, manifest: dict[str, Any] | None = None, lean: bool = False):
        """``lean``: for one search in a short-lived process (``irforge search``): a BM25 plan without a SPLADE
        (impact) index then opens Lucene without pyserini's neural query encoders, which import torch and
        transformers (about 5 s of the 8.4 s a BM25 search took from the command line)."""
        self.root, self.spec = Path(root), spec
        self.plan = SearchPlan.from_json(spec["plan"])
        self.version, self.manifest = version, manifest or {}
        columns = ["chunk_id", "doc_id", "passage_index", "title", "text", "content_hash", "section"]
        self.passages = group_passages(artifacts.read_artifact(self.root / CHUNKS, "chunks", columns).to_pylist())
        self.encoders = ProjectEncoders(self.root, cache_dir, threads)
        k1, b = spec["bm25"]["k1"], spec["bm25"]["b"]
        opening = lucene_without_neural_encoders() if lean and self._lucene_only_lexical() else contextlib.nullcontext()
        with opening:
            self.searcher = Searcher(
                self.plan, lambda system: open_system(self.root / INDEXES / system, self.encoders, k1, b, threads=threads),
                lambda name, step: open_scorer(step["scorer"], step["model"], step["max_length"], step["dtype"],
                                               self.encoders.resolve, self.encoders.dense_encoder, threads),
                self.passages)
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._leading = False
        self._analyzer: Any = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open_version(cls, folder: Path | str, cache_dir: Path | str, threads: int | None = None,
                     lean: bool = False) -> SearchService:
        """A served version's folder (``serve/<name>/versions/vNNNNNN``)."""
        folder = Path(folder)
        spec = json.loads((folder / SYSTEM_SPEC).read_text(encoding="utf-8"))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        return cls(folder, spec, cache_dir, threads, version=folder.name, manifest=manifest, lean=lean)

    @classmethod
    def open_experiment(cls, root: Path | str, config: Any, system: str, threads: int | None = None,
                        lean: bool = False) -> SearchService:
        """The experiment's artifacts under ``root`` (what `dvc repro` built), searched as ``system``."""
        return cls(root, system_spec(config, system, root), Path(root) / config.runtime.cache_dir, threads, lean=lean)

    def _lucene_only_lexical(self) -> bool:
        """True when the plan searches Lucene with BM25 only: a BM25 index, and no SPLADE (impact) one."""
        try:
            kinds = {read_system(self.root / INDEXES / s)["kind"] for s in self.plan.systems}
        except (OSError, ValueError):  # a missing or broken index: the searcher opening it says what is wrong
            return False
        return "bm25" in kinds and "impact" not in kinds

    @property
    def name(self) -> str:
        return self.spec["name"]

    # ------------------------------------------------------------------ searching
    def search(self, queries: dict[str, str], k: int = 10, explain: bool = False) -> dict[str, list[dict[str, Any]]]:
        """The top ``k`` documents of each query, best first."""
        if not queries:
            return {}
        searched = self._search_together(queries)
        target = self.plan.target or self.plan.systems[0]
        shown = [r for r in [*self.plan.systems, *self.plan.steps] if r != target]
        results: dict[str, list[dict[str, Any]]] = {}
        for qid, text in queries.items():
            hits = searched.runs[target].get(qid, [])[:k]
            best = best_passages(searched.chunk_runs, qid)
            terms = self.query_terms(text)
            results[qid] = []
            for rank, (doc, score) in enumerate(hits, start=1):
                passages = self.passages.get(doc, [])
                chunk = next((p for p in passages if p["chunk_id"] == best.get(doc)), passages[0] if passages else None)
                row: dict[str, Any] = {"rank": rank, "doc_id": doc, "score": round(float(score), 6),
                                       "title": chunk["title"] if chunk else "", "passage": chunk["text"] if chunk else "",
                                       "chunk_id": chunk["chunk_id"] if chunk else None,
                                       "section": chunk.get("section") if chunk else None}
                row["highlights"] = self.highlights(row["passage"], terms)
                if explain:
                    row["explain"] = {run: position(searched.runs[run].get(qid, []), doc) for run in shown}
                results[qid].append(row)
        return results

    def _search_together(self, queries: dict[str, str]) -> Searched:
        """Search ``queries`` with the plan, together with whatever other requests arrive meanwhile.

        The indexes and models serve one search at a time. A caller that finds one running queues its queries;
        when it ends, one waiting caller leads the next search, over every queued request at once: the encoders
        then embed the queries as one batch (4 MiniLM queries: 9.6 ms each instead of 16.7 ms alone, 2 cores).
        Batch-mates change nothing but the last float digits of encoder scores (padding)."""
        slot = _Slot(queries)
        with self._cond:
            self._pending.append(slot)
            while not slot.done and self._leading:
                self._cond.wait()
            if not slot.done:
                self._leading, batch, self._pending = True, self._pending, []
        if not slot.done:
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run(self, batch: list[_Slot]) -> None:
        merged = {f"{i}\x1f{qid}": text for i, slot in enumerate(batch) for qid, text in slot.queries.items()}
        try:
            searched = self.searcher.search(merged, timed=False)
        except BaseException as e:  # every request of the batch gets the error (an interrupt too: none waits forever)
            for slot in batch:
                slot.error, slot.done = e, True
            return
        for i, slot in enumerate(batch):
            def mine(runs: dict[str, Run], i: int = i, slot: _Slot = slot) -> dict[str, Run]:
                return {name: {qid: run.get(f"{i}\x1f{qid}", []) for qid in slot.queries} for name, run in runs.items()}

            slot.result = Searched(mine(searched.runs), {}, mine(searched.chunk_runs))
            slot.done = True

    def document(self, doc_id: str) -> dict[str, Any] | None:
        passages = self.passages.get(doc_id)
        if not passages:
            return None
        return {"doc_id": doc_id, "title": passages[0]["title"],
                "passages": [{"chunk_id": p["chunk_id"], "section": p.get("section"), "text": p["text"]} for p in passages]}

    def describe(self) -> dict[str, Any]:
        """What is served: name, version, the system, its model hashes, documents and passages."""
        return {"name": self.name, "version": self.version, "system": self.plan.target,
                "runs": [*self.plan.systems, *self.plan.steps], "models": self.spec.get("models", []),
                "documents": len(self.passages), "passages": sum(len(p) for p in self.passages.values()),
                "published_at": self.manifest.get("created_at"), "metrics": self.manifest.get("metrics")}

    # ------------------------------------------------------------------ highlighting
    def query_terms(self, text: str) -> set[str]:
        return {t for w in _WORD.findall(text) for t in self._stems(w.lower())}

    def highlights(self, passage: str, terms: set[str]) -> list[list[int]]:
        """[start, end) character spans of the passage's words whose analysed form is a query term."""
        return [[m.start(), m.end()] for m in _WORD.finditer(passage) if terms & set(self._stems(m.group().lower()))]

    def _stems(self, word: str) -> tuple[str, ...]:
        if self._analyzer is None:
            self._analyzer = _lucene_analyzer()
        return self._analyzer(word)

    def close(self) -> None:
        self.searcher.close()


def _lucene_analyzer():
    """Lucene's English analyzer (what the BM25 indexes use: lower case, stop words out, Porter stems), memoised
    per word."""
    from irforge.retrieval import ensure_java

    ensure_java()
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    analyzer = Analyzer(get_lucene_analyzer())

    @lru_cache(maxsize=200_000)
    def stems(word: str) -> tuple[str, ...]:
        return tuple(analyzer.analyze(word))

    return stems


_ENCODE = "pyserini.encode"
_LUCENE_SEARCH = "pyserini.search.lucene"


@contextlib.contextmanager
def lucene_without_neural_encoders() -> Iterator[None]:
    """Open BM25 (Lucene) searchers inside this block without importing pyserini's neural query encoders.

    ``pyserini.search.lucene`` imports ``pyserini.encode`` (torch, transformers, scikit-learn, ...: 5 s on 2
    cores) only for its impact searcher, which a plan without a SPLADE index never uses. So it is imported with a
    placeholder standing for ``pyserini.encode`` (in ``sys.modules`` for that import only); when the block ends,
    ``pyserini.search.lucene`` is dropped from ``sys.modules`` too, so a later import (an impact index opened in
    the same process) loads it whole, with the real encoders. The searchers opened inside keep working. Nothing
    changes if pyserini's search or encoders were imported already."""
    placed = _LUCENE_SEARCH not in sys.modules and _ENCODE not in sys.modules and _import_lucene_with_placeholder()
    try:
        yield
    finally:
        if placed:
            _forget(_LUCENE_SEARCH)


def _import_lucene_with_placeholder() -> bool:
    def any_class(name: str) -> type:  # what `from pyserini.encode import QueryEncoder, ...` asks for
        if name.startswith("__"):
            raise AttributeError(name)  # a module attribute (__file__, __path__, ...): it has none
        return type(name, (), {"__module__": _ENCODE})

    placeholder = types.ModuleType(_ENCODE, "stands for pyserini.encode while pyserini.search.lucene imports")
    placeholder.__getattr__ = any_class
    ensure_java()
    sys.modules[_ENCODE] = placeholder
    try:
        import pyserini.search.lucene  # noqa: F401 - imported with the placeholder: what BM25Retriever imports next
    except Exception:  # a pyserini that needs more of pyserini.encode at import: the ordinary, slower way
        log.debug("pyserini.search.lucene did not import with a placeholder for pyserini.encode", exc_info=True)
        _forget(_LUCENE_SEARCH)
        return False
    finally:
        _forget(_ENCODE)
    return True


def _forget(module: str) -> None:
    """Drop ``module`` and its submodules from ``sys.modules`` (and its parent's attribute): the next import loads
    it again."""
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[name]
    package, _, attribute = module.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and attribute in vars(parent):
        delattr(parent, attribute)


def best_passages(chunk_runs: dict[str, Run], qid: str) -> dict[str, str]:
    """doc_id -> the chunk that ranks best for it in any index or feedback run (what put it in the results)."""
    best: dict[str, tuple[int, str]] = {}
    for run in chunk_runs.values():
        seen: set[str] = set()
        for rank, (chunk_id, _) in enumerate(run.get(qid, [])):
            doc = chunk_id.rsplit("#", 1)[0]
            if doc not in seen:
                seen.add(doc)
                if doc not in best or rank < best[doc][0]:
                    best[doc] = (rank, chunk_id)
    return {doc: chunk for doc, (_, chunk) in best.items()}


def position(hits: list[tuple[str, float]], doc: str) -> dict[str, Any] | None:
    for rank, (hit, score) in enumerate(hits, start=1):
        if hit == doc:
            return {"rank": rank, "score": round(float(score), 6)}
    return None


# ---------------------------------------------------------------------- what a system is, from the experiment


def best_system(root: Path | str, config: Any) -> str:
    """The evaluate stage's verdict (``verdict.json``): the robust default (evaluate.default) unless a run is better
    with evaluate.confidence on the judged queries. Without judgments the default: the label-free synthetic
    ranking is not a way to choose (it disagrees with judgments; docs/judging.md)."""
    return verdict_choice(root)[0]


def verdict_choice(root: Path | str) -> tuple[str, str]:
    """The verdict's chosen system and the reason it gives (see :func:`best_system`)."""
    path = Path(root) / "artifacts" / "evaluate" / "verdict.json"
    if not path.exists():
        raise ValueError(f"serve.system is 'best' but {path} does not exist: run `dvc repro` first, or name a "
                         "system (e.g. -S serve.system=bm25)")
    verdict = json.loads(path.read_text(encoding="utf-8"))
    if not verdict.get("choice"):
        raise ValueError(f"{path}: no system chosen ({verdict.get('choice_reason')}): name one with serve.system, "
                         "e.g. -S serve.system=bm25, or set evaluate.default")
    log.info("serve.system best: %s (%s)", verdict["choice"], verdict["choice_reason"])
    return verdict["choice"], verdict["choice_reason"]


def system_spec(config: Any, system: str, root: Path | str = ".") -> dict[str, Any]:
    """The served description of ``system`` (``best``: see :func:`best_system`): its plan, BM25 settings and the
    index systems' specs."""
    serve = config.section("serve")
    if system == "best":
        system = best_system(root, config)
    plan = SearchPlan.from_config(config.section("evaluate"), system, depth=serve.depth)
    bm25 = config.section("bm25")
    specs = config.section("index").systems
    return {"name": serve.name, "plan": plan.to_json(), "bm25": {"k1": bm25.k1, "b": bm25.b},
            "indexes": {s: specs[s].as_params() for s in plan.systems if s in specs}}
