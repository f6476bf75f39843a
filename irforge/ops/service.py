"""The HTTP search service (``irforge serve``): FastAPI over the served systems of a project.

Each served system (``serve/<name>/served``) is opened once. A watcher thread looks at the ``served`` pointer
every ``serve.watch_seconds``; when a re-index (or ``irforge publish``) switches it, the new version is opened
beside the old one and swapped in. A request holds the version it started on until it ends (every response names
its version), and the old version is closed once its last request is done. Inputs are bounded (query length, k,
batch size); a bad request gets a 4xx naming the problem, and an unexpected failure a 500 without a traceback.

Endpoints: ``GET /search``, ``POST /search`` (a batch), ``GET /documents/{id}``, ``GET /health``, ``GET /metrics``
(Prometheus text), ``GET /`` (a search page) and FastAPI's ``/docs``.
"""


import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from irforge.ops import serving
from irforge.ops.search import SearchService

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("search_page.html")


class Loaded:
    """One opened version, with the requests running on it; closed when retired and idle."""

    def __init__(self, service: SearchService):
        self.service, self.version = service, service.version
        self._inflight, self._retired, self._lock = 0, False, threading.Lock()

    def acquire(self) -> bool:
        with self._lock:
            if self._retired:
                return False
            self._inflight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._inflight -= 1
            close = self._retired and self._inflight == 0
        if close:
            self._close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            close = self._inflight == 0
        if close:
            self._close()

    def _close(self) -> None:
        log.info("closing %s %s (no request left on it)", self.service.name, self.version)
        self.service.close()


class ServedSystem:
    """The served version of ``serve/<name>``, kept current by :meth:`refresh`."""

    def __init__(self, root: Path, name: str, cache_dir: Path, threads: int):
        self.root, self.name, self.cache_dir, self.threads = root, name, cache_dir, threads
        self._current: Loaded | None = None
        self._swap = threading.Lock()
        self.refresh()
        if self._current is None:
            raise serving.ServeError(f"nothing is served under {serving.system_dir(root, name)}: run "
                                     "`irforge publish` (or `irforge reindex`) first")

    def refresh(self) -> bool:
        """Open the version the pointer names if it is not the one loaded; True when it swapped."""
        version = serving.served_version(self.root, self.name)
        current = self._current
        if version is None or (current is not None and current.version == version):
            return False
        started = time.perf_counter()
        service = SearchService.open_version(serving.served_dir(self.root, self.name), self.cache_dir, self.threads)
        service.search({"warm-up": "warm up"}, 1)  # first-query costs (JIT, lazy weights) before users see it
        with self._swap:
            old, self._current = self._current, Loaded(service)
        log.info("%s: serving %s (opened in %.1f s)%s", self.name, version, time.perf_counter() - started,
                 f", replacing {old.version}" if old else "")
        if old is not None:
            old.retire()
        return True

    @contextlib.contextmanager
    def use(self):
        """The current version, held for the length of one request."""
        while True:
            with self._swap:
                loaded = self._current
            if loaded is not None and loaded.acquire():
                break
        try:
            yield loaded
        finally:
            loaded.release()

    def close(self) -> None:
        if self._current is not None:
            self._current.retire()


def create_app(root: Path | str, config: Any, names: list[str] | None = None, watch: bool = True):
    """The FastAPI app serving ``names`` (default: every system with a served version, ``serve.name`` first)."""
    from fastapi import Body, FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    root, cfg = Path(root), config.section("serve")
    cache_dir = root / config.runtime.cache_dir
    if names is None:
        found = sorted(p.name for p in (root / serving.SERVE).glob("*") if (p / "served").is_symlink())
        names = sorted(found, key=lambda n: n != cfg.name)
    if not names:
        raise serving.ServeError(f"nothing is served under {root / serving.SERVE}: run `irforge publish` first")
    systems = {name: ServedSystem(root, name, cache_dir, cfg.threads) for name in names}
    default = names[0]

    registry = CollectorRegistry()
    requests = Counter("irforge_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("irforge_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    searched = Counter("irforge_queries", "queries searched", ["name"], registry=registry)

    stop = threading.Event()

    def watcher() -> None:
        while not stop.wait(cfg.watch_seconds):
            for system in systems.values():
                try:
                    system.refresh()
                except Exception as e:  # a broken new version: keep serving the one loaded, say why
                    log.error("%s: could not open the newly served version, still serving the old one: %s", system.name, e)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        thread = threading.Thread(target=watcher, name="irforge-watch", daemon=True) if watch else None
        if thread:
            thread.start()
        yield
        stop.set()
        for system in systems.values():
            system.close()

    app = FastAPI(title="irforge search", lifespan=lifespan,
                  description="Search the systems irforge trained and published (`irforge publish`).")

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            log.exception("unexpected error on %s", request.url.path)
            response = JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)
        route = request.scope.get("route")
        endpoint = route.path if route is not None else "unmatched"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        def reason(e: dict) -> str:
            if e.get("type") == "json_invalid":
                return f"the body is not valid JSON: {e.get('ctx', {}).get('error', '')} (at character {e['loc'][-1]})"
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query")) or "body"
            return f"{where}: {e.get('msg')}"

        reasons = [reason(e) for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(reasons)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's words for bad bytes
            detail = "the body is not UTF-8 JSON"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    def system_of(name: str | None) -> ServedSystem:
        chosen = name or default
        if chosen not in systems:
            raise HTTPException(404, f"unknown system '{chosen}' (served: {', '.join(systems)})")
        return systems[chosen]

    def check_text(text: str, where: str) -> str:
        if "\ufffd" in text:
            raise HTTPException(400, f"{where} is not valid UTF-8")
        if not text.strip():
            raise HTTPException(422, f"{where} is empty")
        if len(text) > cfg.max_query_chars:
            raise HTTPException(422, f"{where} has {len(text)} characters; at most {cfg.max_query_chars} (serve.max_query_chars)")
        return text

    def answer(system: ServedSystem, queries: dict[str, str], k: int, explain: bool) -> tuple[str, dict, float]:
        with system.use() as loaded:
            started = time.perf_counter()
            results = loaded.service.search(queries, k, explain)
            searched.labels(system.name).inc(len(queries))
            return loaded.version, results, round((time.perf_counter() - started) * 1000, 2)

    K = Annotated[int, Query(ge=1, le=cfg.max_k, description=f"documents per query (1-{cfg.max_k})")]

    @app.get("/search", summary="Search one query")
    def search_get(q: Annotated[str, Query(description="the query")], k: K = 10, system: str | None = None,
                   explain: bool = False) -> dict[str, Any]:
        served = system_of(system)
        version, results, took = answer(served, {"q": check_text(q, "q")}, k, explain)
        return {"name": served.name, "version": version, "query": q, "k": k, "took_ms": took, "results": results["q"]}

    class Batch(BaseModel):
        queries: list[str] | dict[str, str] = Field(description="queries, or {query_id: query}")
        k: int = Field(10, ge=1, le=cfg.max_k)
        system: str | None = None
        explain: bool = False

    @app.post("/search", summary="Search a batch of queries")
    def search_post(batch: Annotated[Batch, Body()]) -> dict[str, Any]:
        served = system_of(batch.system)
        queries = batch.queries if isinstance(batch.queries, dict) else {str(i): q for i, q in enumerate(batch.queries)}
        if not queries:
            raise HTTPException(422, "queries is empty")
        if len(queries) > cfg.max_batch:
            raise HTTPException(422, f"{len(queries)} queries; at most {cfg.max_batch} per request (serve.max_batch)")
        queries = {qid: check_text(text, f"queries[{qid}]") for qid, text in queries.items()}
        version, results, took = answer(served, queries, batch.k, batch.explain)
        return {"name": served.name, "version": version, "k": batch.k, "took_ms": took, "results": results}

    @app.get("/documents/{doc_id:path}", summary="A document's passages")
    def document(doc_id: str, system: str | None = None) -> dict[str, Any]:
        served = system_of(system)
        with served.use() as loaded:
            found = loaded.service.document(doc_id)
            if found is None:
                raise HTTPException(404, f"no document '{doc_id}' in {served.name} {loaded.version}")
            return {"name": served.name, "version": loaded.version, **found}

    @app.get("/health", summary="What is served")
    def health() -> dict[str, Any]:
        described = {}
        for name, system in systems.items():
            with system.use() as loaded:
                described[name] = loaded.service.describe()
        return {"status": "ok", "default": default, "systems": described}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    app.state.systems = systems
    return app


def app_from_env():
    """The app for ``uvicorn --factory`` (several worker processes, each loading the served versions itself):
    ``IRFORGE_ROOT`` (default ``.``) and ``IRFORGE_PARAMS`` (default ``params.yaml``) name the project."""
    import os

    from irforge.engine import load_config

    root = Path(os.environ.get("IRFORGE_ROOT", "."))
    return create_app(root, load_config(root, os.environ.get("IRFORGE_PARAMS", "params.yaml")))
