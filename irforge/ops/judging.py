"""The judging page (``irforge judge serve``): a person grades search results one at a time, and irforge says
which candidate system is best on their corpus and how sure that is (:mod:`irforge.evaluation.verdict`).

**The store** (``judge.store``, default ``data/judged``): ``judgments.jsonl`` is the source of truth, one JSON
event per line, append-only (``query``: a query added; ``grade``: a judge graded a document for a query;
``undo``: a judge took back their own latest standing grade; ``source``: how a query came, typed, file or
generated, and for a grade the selection that offered the pair, active or depth). Every write takes an exclusive ``flock`` on
``<store>/.lock``, catches up with what other processes appended, appends and fsyncs, then rewrites the BEIR
files the pipeline reads (``corpus.queries: data/judged/queries.jsonl``, ``corpus.qrels: data/judged/qrels/
test.tsv``), so two judges (threads or processes) never lose an event, and a restart replays the log.
``candidates.jsonl`` caches each query's top 10 per candidate system (keyed by the query and a hash of the
systems and their search plan), so a restart does not search again.

**The session**: after every judgment the verdict is computed again (nDCG@10 estimates with the unjudged pooled
documents uncertain), and the next (query, document) pair is the one that most moves the comparison of the leader
with its threats (``judge.selection: active``) or the next of depth-k pooling (``depth``). Seeded: the same
judgments give the same next pair. A skip is the judge's own and lasts while the server runs.
"""

# No `from __future__ import annotations`: FastAPI reads the request models of judging_app from its annotations.
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import random
import re
import threading
from pathlib import Path
from typing import Any

from irforge.contract import owned
from irforge.contract.artifacts import read_artifact, write_text_atomic
from irforge.evaluation import SearchPlan
from irforge.evaluation.verdict import depth_order, estimate, next_judgments, pool_of, top_documents, verdict
from irforge.ops.judge import read_queries
from irforge.ops.search import SearchService, best_passages

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("judge_page.html")
EVENTS, CANDIDATES, LOCK = "judgments.jsonl", "candidates.jsonl", ".lock"
QUERIES_FILE, QRELS_FILE = "queries.jsonl", "qrels/test.tsv"
GENERATED = "artifacts/filter/queries.parquet"
GRADES = ("not relevant", "related", "relevant", "perfect")  # grade 0..3
PASSAGE_CHARS = 2000  # the passage view shows at most this much of a passage (a huge one stays readable)
SOURCES = ("typed", "file", "generated")


class JudgingError(ValueError):
    """A request or a store that cannot be used as given."""


def bad_grade(value: Any) -> str:
    return f"grade: must be 0 (not relevant), 1 (related), 2 (relevant) or 3 (perfect); got {value!r}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _tail(path: Path, offset: int) -> tuple[list[dict], int]:
    """The complete lines appended to ``path`` after byte ``offset`` (a line another process is still writing
    waits for the next call), and the new offset. A broken line (a crash mid-write) is logged and skipped."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].split(b"\n"):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                log.warning("%s: skipping a line that is not JSON (a write cut short?): %r", path, line[:200])
    return records, offset + end


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a+b") as f:  # readable: a line cut short shows as a missing last newline
        if f.tell() and os.pread(f.fileno(), 1, f.tell() - 1) != b"\n":
            f.write(b"\n")  # a line cut short by a crash stays a line of its own
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


class Store:
    """The judgments store: the event log replayed into queries and standing grades, and the candidates cache."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        owned.claim(self.folder)  # irforge rewrites the derived BEIR files in here
        (self.folder / "qrels").mkdir(parents=True, exist_ok=True)
        self.queries: dict[str, dict[str, str]] = {}  # query id -> {"text", "source"}
        self.grades: list[dict[str, Any]] = []  # every grade event, "retracted" once undone
        self.candidates: dict[tuple[str, str], dict[str, Any]] = {}  # (query id, systems key) -> record
        self.events = 0
        self._offsets = {EVENTS: 0, CANDIDATES: 0}
        self._mutex = threading.RLock()
        self.refresh()

    @contextlib.contextmanager
    def _locked(self):
        """This store to ourselves, in this process and every other one; caught up with what others wrote."""
        with self._mutex, open(self.folder / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self.refresh()
            yield

    def refresh(self) -> None:
        """Apply what was appended since the last look (by this process or another)."""
        with self._mutex:
            events, self._offsets[EVENTS] = _tail(self.folder / EVENTS, self._offsets[EVENTS])
            for event in events:
                self._apply(event)
            records, self._offsets[CANDIDATES] = _tail(self.folder / CANDIDATES, self._offsets[CANDIDATES])
            for record in records:
                self.candidates[(record["query_id"], record["key"])] = record

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "query":
            self.queries.setdefault(event["query_id"], {"text": event["text"], "source": event["source"]})
        elif kind == "grade":
            self.grades.append({**event, "retracted": False})
        elif kind == "undo":
            latest = self.latest(event["judge"])
            if latest is not None:
                latest["retracted"] = True
        self.events += 1

    def latest(self, judge: str) -> dict[str, Any] | None:
        """``judge``'s latest grade that still stands (what an undo takes back)."""
        return next((g for g in reversed(self.grades) if g["judge"] == judge and not g["retracted"]), None)

    def judged(self) -> dict[str, dict[str, int]]:
        """query -> document -> the latest standing grade (0 included: judged not relevant)."""
        out: dict[str, dict[str, int]] = {}
        for g in self.grades:
            if not g["retracted"]:
                out.setdefault(g["query_id"], {})[g["doc_id"]] = g["grade"]
        return out

    # ------------------------------------------------------------------ writes
    def _commit(self, events: list[dict[str, Any]]) -> None:
        """Inside :meth:`_locked`: append, apply, and rewrite the BEIR files from the whole log."""
        if not events:
            return
        _append(self.folder / EVENTS, events)
        self.refresh()
        write_text_atomic(self.folder / QUERIES_FILE, "".join(
            json.dumps({"_id": q, "text": v["text"], "source": v["source"]}, ensure_ascii=False) + "\n"
            for q, v in self.queries.items()))
        write_text_atomic(self.folder / QRELS_FILE, "query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{g}\n" for q, docs in sorted(self.judged().items()) for d, g in sorted(docs.items())))

    def add_queries(self, items: list[tuple[str | None, str]], source: str, judge: str = "irforge") -> list[str]:
        """Add (query id, text) pairs; the ids. Id None: numbered u1, u2, ... (typed) or f1, f2, ... (a text file),
        unless a query with that text is in the store already; a given id already there with the same text is not
        added again."""
        with self._locked():
            by_text = {v["text"]: q for q, v in self.queries.items()}
            prefix = "f" if source == "file" else "u"
            number = max((int(q[1:]) for q in self.queries if re.fullmatch(prefix + r"\d+", q)), default=0)
            ids, events = [], []
            for qid, text in items:
                if qid is None and text in by_text:
                    ids.append(by_text[text])
                    continue
                if qid is None:
                    number += 1
                    qid = f"{prefix}{number}"
                elif qid in self.queries:
                    if self.queries[qid]["text"] != text:
                        raise JudgingError(f"query id '{qid}' is in the store already, with another text "
                                           f"({self.queries[qid]['text']!r}); give this query another id")
                    ids.append(qid)
                    continue
                by_text[text] = qid
                ids.append(qid)
                events.append({"event": "query", "query_id": qid, "doc_id": None, "grade": None, "judge": judge,
                               "time": _now(), "source": source, "text": text})
            self._commit(events)
            return ids

    def grade(self, query_id: str, doc_id: str, grade: int, judge: str, source: str) -> None:
        with self._locked():
            self._commit([{"event": "grade", "query_id": query_id, "doc_id": doc_id, "grade": grade, "judge": judge,
                           "time": _now(), "source": source}])

    def undo(self, judge: str, source: str) -> dict[str, Any]:
        """Take back ``judge``'s latest standing grade; the grade event taken back."""
        with self._locked():
            latest = self.latest(judge)
            if latest is None:
                raise JudgingError(f"judge '{judge}' has no grade to undo")
            self._commit([{"event": "undo", "query_id": latest["query_id"], "doc_id": latest["doc_id"],
                           "grade": latest["grade"], "judge": judge, "time": _now(), "source": source}])
            return latest

    def add_candidates(self, records: list[dict[str, Any]]) -> None:
        with self._locked():
            _append(self.folder / CANDIDATES, records)
            self.refresh()


# ---------------------------------------------------------------------- the session: candidates, verdict, next pair


def candidate_plan(root: Path, evaluate: Any, systems: list[str] | None) -> tuple[SearchPlan, list[str]]:
    """The evaluate stage's search plan narrowed to the candidate runs (``judge.systems``, or every run of the
    evaluate section whose indexes exist), and the candidates."""
    full = SearchPlan.from_config(evaluate)
    every = [*full.systems, *full.steps]
    if systems is not None:
        unknown = [s for s in systems if s not in every]
        if unknown:
            raise JudgingError(f"judge.systems: '{unknown[0]}' is not a run of the evaluate section (known: "
                               f"{', '.join(every)})")
    narrowed = {s: full.narrowed(s) for s in (systems or every)}
    missing = {s: [i for i in plan.systems if not (root / "artifacts" / "index" / i).exists()] for s, plan in narrowed.items()}
    if systems is None:  # every run: those whose indexes are built
        left_out = [s for s, m in missing.items() if m]
        if left_out:
            log.warning("not judging %s: no index yet for %s", ", ".join(left_out),
                        ", ".join(sorted({i for s in left_out for i in missing[s]})))
        systems = [s for s in every if not missing[s]]
    elif any(missing.values()):
        run, indexes = next((s, m) for s, m in missing.items() if m)
        raise JudgingError(f"judge.systems: {run} needs {root / 'artifacts' / 'index' / indexes[0]}, which does not "
                           f"exist (run `irforge run index {indexes[0]}` or `dvc repro`)")
    if not systems:
        raise JudgingError(f"no candidate system has its indexes under {root / 'artifacts' / 'index'}: run `dvc repro` "
                           "(or `irforge run index bm25`) first")
    needed = {r for s in systems for r in [*narrowed[s].systems, *narrowed[s].steps]}
    plan = SearchPlan(None, [s for s in full.systems if s in needed], {n: st for n, st in full.steps.items() if n in needed},
                      full.rrf_k, full.depth, full.chunk_factor)
    return plan, list(systems)


class Session:
    """The judging of one project: the store, the candidate systems opened once, the verdict and the next pair.
    Thread-safe (one request at a time)."""

    def __init__(self, root: Path | str, config: Any):
        self.root = Path(root)
        self.cfg, self.evaluate = config.section("judge"), config.section("evaluate")
        self.max_chars, self.seed = config.section("serve").max_query_chars, config.seed
        plan, self.systems = candidate_plan(self.root, self.evaluate, self.cfg.systems)
        store = Path(self.cfg.store)
        self.store = Store(store if store.is_absolute() else self.root / store)
        default = self.evaluate.default_run()  # auto: the zero-shot fusion, as publish's verdict
        self.default = default if default in self.systems else None
        bm25 = config.section("bm25")
        spec = {"name": "judge", "plan": plan.to_json(), "bm25": {"k1": bm25.k1, "b": bm25.b}}
        # Cached top 10s are reused only for the same candidates searched the same way.
        self.key = hashlib.sha256(json.dumps([self.systems, spec], sort_keys=True).encode()).hexdigest()[:16]
        self.service = SearchService(self.root, spec, self.root / config.runtime.cache_dir,
                                     config.section("serve").threads)
        self.skipped: dict[str, set[tuple[str, str]]] = {}  # judge -> pairs skipped while this server runs
        self._lock = threading.RLock()
        self._cached: tuple[tuple[int, int], Any, dict[str, Any]] | None = None

    def close(self) -> None:
        self.service.close()

    # ------------------------------------------------------------------ queries
    def check_text(self, text: str, where: str) -> str:
        text = " ".join(str(text).split())  # one line: queries.jsonl and the page show it as one
        if not text:
            raise JudgingError(f"{where} is empty")
        if len(text) > self.max_chars:
            raise JudgingError(f"{where} has {len(text)} characters; at most {self.max_chars} (serve.max_query_chars)")
        return text

    def add_queries(self, texts: list[str], source: str = "typed", ids: list[str] | None = None,
                    judge: str = "irforge") -> list[str]:
        items = [(ids[i] if ids else None, self.check_text(t, f"query {i + 1}")) for i, t in enumerate(texts)]
        with self._lock:
            added = self.store.add_queries(items, source, judge)
            self.search_missing()
            return added

    def add_file_queries(self, path: Path | str) -> list[str]:
        """``--queries FILE``: a .txt (one per line) or BEIR .jsonl."""
        path = Path(path)
        queries = read_queries(path)  # a text file's ids (q1, q2, ...) are line numbers: ours are f1, f2, ...
        return self.add_queries(list(queries.values()), "file", list(queries) if path.suffix == ".jsonl" else None)

    def add_generated(self, n: int) -> list[str]:
        """``--seed-generated N``: N of the filter's kept generated queries, those held out from training first
        (a query a model trained on favours that model), then by a seeded draw."""
        rows = [r for r in read_artifact(self.root / GENERATED, "filtered_queries",
                                         ["query_id", "text", "kept", "holdout"]).to_pylist() if r["kept"]]
        random.Random(self.seed).shuffle(rows)
        rows.sort(key=lambda r: not r["holdout"])  # stable: the draw's order within each group stays
        chosen = rows[:n]
        if len(chosen) < n:
            log.warning("%s: only %d kept generated queries (asked for %d)", self.root / GENERATED, len(chosen), n)
        return self.add_queries([r["text"] for r in chosen], "generated", [r["query_id"] for r in chosen])

    def search_missing(self) -> None:
        """Search the queries that have no cached top 10s yet, and cache them."""
        with self._lock:
            missing = {q: v["text"] for q, v in self.store.queries.items() if (q, self.key) not in self.store.candidates}
            if not missing:
                return
            searched = self.service.searcher.search(missing, timed=False)
            records = []
            for qid in missing:
                # The order pool_of reads a run in (ties by document id, as trec_eval), cut at the pool depth.
                runs = {s: [list(h) for h in top_documents(searched.runs[s].get(qid, []))] for s in self.systems}
                best = best_passages(searched.chunk_runs, qid)
                records.append({"query_id": qid, "key": self.key, "runs": runs,
                                "passages": {d: best.get(d) for hits in runs.values() for d, _ in hits}})
            self.store.add_candidates(records)
            log.info("searched %d new queries with %s", len(missing), ", ".join(self.systems))

    # ------------------------------------------------------------------ verdict and the next pair
    def _current(self) -> tuple[Any, dict[str, Any]] | tuple[None, None]:
        """The estimate and verdict for the judgments so far (computed again only when the log grew)."""
        version = (self.store.events, len(self.store.candidates))
        if self._cached is None or self._cached[0] != version:
            queries = [q for q in self.store.queries if (q, self.key) in self.store.candidates]
            if not queries:
                self._cached = (version, None, None)
            else:
                runs = {s: {q: [tuple(h) for h in self.store.candidates[(q, self.key)]["runs"][s]] for q in queries}
                        for s in self.systems}
                est = estimate(pool_of(runs, queries), self.store.judged(), samples=self.cfg.samples, seed=self.seed)
                found = verdict(est, self.default, self.evaluate.delta, self.evaluate.confidence)
                self._cached = (version, est, found)
        return self._cached[1], self._cached[2]

    def next_pair(self, judge: str) -> tuple[str, str] | None:
        est, _ = self._current()
        if est is None:
            return None
        skipped = self.skipped.get(judge, set())
        if self.cfg.selection == "depth":
            judged = self.store.judged()
            order = [(q, d) for q, d in depth_order(est.pool, self.cfg.depth) if d not in judged.get(q, {})]
        else:
            order = [(q, d) for q, d, _ in next_judgments(est, len(skipped) + 1, self.evaluate.delta)]
        pair = next((p for p in order if p not in skipped), None)
        if pair is None and order:  # only skipped pairs are left: they come back
            skipped.clear()
            pair = order[0]
        return pair

    def item(self, query_id: str, doc_id: str) -> dict[str, Any]:
        """What the page shows of a pair: the query, the document's title, heading path and best passage (cut at
        PASSAGE_CHARS) with the query's words marked."""
        query = self.store.queries[query_id]
        passages = self.service.passages.get(doc_id, [])
        best = (self.store.candidates.get((query_id, self.key)) or {}).get("passages", {}).get(doc_id)
        chunk = next((p for p in passages if p["chunk_id"] == best), passages[0] if passages else None)
        text = chunk["text"] if chunk else ""
        shown = text[:PASSAGE_CHARS]
        return {"query_id": query_id, "query": query["text"], "source": query["source"], "doc_id": doc_id,
                "title": chunk["title"] if chunk else "", "section": chunk.get("section") if chunk else None,
                "passage": shown, "truncated": len(text) > len(shown), "passage_chars": len(text),
                "highlights": self.service.highlights(shown, self.service.query_terms(query["text"])),
                "passages": len(passages)}

    def state(self, judge: str) -> dict[str, Any]:
        with self._lock:
            self.store.refresh()
            self.search_missing()  # queries another process added
            est, found = self._current()
            pair = self.next_pair(judge)
            judged = self.store.judged()
            latest = self.store.latest(judge)
            pooled = int(est.pool.real.sum()) if est is not None else 0
            return {
                "judge": judge, "selection": self.cfg.selection, "systems": self.systems, "default": self.default,
                "progress": {"judgments": sum(len(d) for d in judged.values()),
                             "relevant": sum(g > 0 for d in judged.values() for g in d.values()),
                             "yours": sum(1 for g in self.store.grades if g["judge"] == judge and not g["retracted"]),
                             "queries": len(self.store.queries), "judged_queries": len(judged),
                             "pooled": pooled, "pooled_judged": int(est.judged.sum()) if est is not None else 0},
                "verdict": found, "next": self.item(*pair) if pair else None,
                "undo": {k: latest[k] for k in ("query_id", "doc_id", "grade")} if latest else None,
                "store": str(self.store.folder)}

    # ------------------------------------------------------------------ judging
    def _known(self, query_id: str, doc_id: str) -> None:
        if query_id not in self.store.queries:
            raise JudgingError(f"query_id: no query '{query_id}' in the store")
        if doc_id not in self.service.passages:
            raise JudgingError(f"doc_id: no document '{doc_id}' in {self.root / 'artifacts/chunk/chunks.parquet'}")

    def grade(self, query_id: str, doc_id: str, grade: int, judge: str) -> None:
        if grade not in range(len(GRADES)):
            raise JudgingError(bad_grade(grade))
        with self._lock:
            self.store.refresh()
            self._known(query_id, doc_id)
            self.store.grade(query_id, doc_id, grade, judge, self.cfg.selection)

    def skip(self, query_id: str, doc_id: str, judge: str) -> None:
        with self._lock:
            self._known(query_id, doc_id)
            self.skipped.setdefault(judge, set()).add((query_id, doc_id))

    def undo(self, judge: str) -> dict[str, Any]:
        with self._lock:
            return self.store.undo(judge, self.cfg.selection)

    def document(self, doc_id: str) -> dict[str, Any] | None:
        return self.service.document(doc_id)


# ---------------------------------------------------------------------- HTTP


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_token(host: str, token_env: str) -> str | None:
    """The token every write must carry (the ``token_env`` variable), or None. Any host but loopback needs one."""
    token = os.environ.get(token_env) or None
    if token is None and not is_loopback(host):
        raise JudgingError(f"refusing to serve the judging page on {host}, which is not loopback, without a token: "
                           f"set {token_env} (every write must then send Authorization: Bearer <token>), or bind "
                           "127.0.0.1")
    return token


def judging_app(root: Path | str, config: Any, host: str | None = None, session: Session | None = None,
                queries: Path | None = None, generated: int = 0):
    """The FastAPI app of the judging page for the project at ``root``; ``host``: where it will listen (default
    judge.host; refused when it is not loopback and there is no token). ``queries`` / ``generated``: queries to add
    first (``--queries FILE``, ``--seed-generated N``)."""
    from typing import Annotated

    from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field, field_validator
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from irforge.ops.service import add_docs

    cfg = config.section("judge")
    token = write_token(host or cfg.host, cfg.token_env)  # before anything slow: a refusal comes at once
    own = session is None
    session = session or Session(root, config)
    if queries is not None:
        log.info("%d queries from %s", len(session.add_file_queries(queries)), queries)
    if generated:
        log.info("%d generated queries", len(session.add_generated(generated)))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if own:
            session.close()

    app = FastAPI(title="irforge judging", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Grade search results; irforge says which candidate system is best on your corpus.")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        def reason(e: dict) -> str:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query")) or "body"
            if where == "grade":
                return bad_grade(e.get("input"))
            return f"{where}: {e.get('msg')}"

        return JSONResponse({"detail": "; ".join(reason(e) for e in exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(JudgingError)
    async def judging_error(request: Request, exc: JudgingError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is not None and not hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, f"writes need the token: send Authorization: Bearer <the value of {cfg.token_env}> "
                                     "(the page takes it from ?token= in its address)",
                                headers={"WWW-Authenticate": "Bearer"})

    Write = Annotated[None, Depends(authorized)]

    class Judged(BaseModel):
        judge: str = Field("anonymous", max_length=100, description="who judges (the page keeps it in localStorage)")

        @field_validator("judge")
        @classmethod
        def _judge(cls, value: str) -> str:
            return " ".join(value.split()) or "anonymous"

    class Pair(Judged):
        query_id: str
        doc_id: str

    class Grade(Pair):
        grade: int = Field(ge=0, le=3, strict=True, description="0 not relevant, 1 related, 2 relevant, 3 perfect")

    class Queries(Judged):
        queries: list[str] = Field(min_length=1, max_length=config.section("serve").max_batch)

    JudgeQ = Annotated[str, Query(max_length=100)]

    def state(judge: str) -> dict[str, Any]:
        return session.state(" ".join(judge.split()) or "anonymous")

    @app.get("/api/state", summary="Progress, the verdict and the next pair to grade")
    def get_state(judge: JudgeQ = "anonymous") -> dict[str, Any]:
        return state(judge)

    @app.post("/api/queries", summary="Add typed queries")
    def post_queries(body: Queries, _: Write) -> dict[str, Any]:
        return {"added": session.add_queries(body.queries, "typed", judge=body.judge), **state(body.judge)}

    @app.post("/api/grade", summary="Grade a document for a query (0-3)")
    def post_grade(body: Grade, _: Write) -> dict[str, Any]:
        session.grade(body.query_id, body.doc_id, body.grade, body.judge)
        return state(body.judge)

    @app.post("/api/skip", summary="Skip a pair (it comes back once the rest is judged)")
    def post_skip(body: Pair, _: Write) -> dict[str, Any]:
        session.skip(body.query_id, body.doc_id, body.judge)
        return state(body.judge)

    @app.post("/api/undo", summary="Take back your latest standing grade")
    def post_undo(body: Judged, _: Write) -> dict[str, Any]:
        try:
            undone = session.undo(body.judge)
        except JudgingError as e:
            raise HTTPException(409, str(e)) from e
        return {"undone": {k: undone[k] for k in ("query_id", "doc_id", "grade")}, **state(body.judge)}

    @app.get("/api/document/{doc_id:path}", summary="A document's passages, in order")
    def get_document(doc_id: str) -> dict[str, Any]:
        found = session.document(doc_id)
        if found is None:
            raise HTTPException(404, f"no document '{doc_id}'")
        return found

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        # A nonce for the page's own script: nothing else on it may run, whatever a document holds.
        nonce = hashlib.sha256(os.urandom(16)).hexdigest()[:24]
        return HTMLResponse(PAGE.read_text(encoding="utf-8").replace("<script>", f'<script nonce="{nonce}">'), headers={
            "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
                                       "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            "Cache-Control": "no-store"})

    add_docs(app)
    app.state.session = session
    return app
