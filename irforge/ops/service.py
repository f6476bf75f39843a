"""The HTTP search service (``irforge serve``): FastAPI over the served systems of a project.

Each served system (``serve/<name>/served``) is opened once. A watcher thread looks at the ``served`` pointer
every ``serve.watch_seconds``; when a re-index (or ``irforge publish``) switches it, the new version is opened
beside the old one and swapped in. A request holds the version it started on until it ends (every response names
its version), and the old version is closed once its last request is done. Inputs are bounded (query length, k,
batch size); a bad request gets a 4xx naming the problem, and an unexpected failure a 500 without a traceback.

Endpoints: ``GET /search``, ``POST /search`` (a batch), ``GET /documents/{id}``, ``GET /health``, ``GET /metrics``
(Prometheus text), ``GET /`` (a search page) and the API docs at ``/docs`` and ``/redoc``, whose scripts are served
from the package ``fastapi-offline`` (nothing is loaded from a CDN: they work offline).

A service started by ``irforge serve`` announces itself with a discovery file, ``serve/.service-<pid>.json`` (its
URL, process id and served systems), removed when it stops; ``irforge search`` finds it there
(:func:`ask_running_service`) and sends its query to it instead of loading the system itself.

This module imports no web framework and no search code at the top: ``irforge search`` reads discovery files and
asks a running service through it with the standard library alone.
"""

import contextlib
import datetime as dt
import importlib.util
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from irforge.ops import serving

if TYPE_CHECKING:
    from irforge.ops.search import SearchService

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("search_page.html")
DISCOVERY_PREFIX = ".service-"  # serve/.service-<pid>.json: a running `irforge serve` of this project
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc scripts, styles and icon, served from the fastapi-offline package


class Loaded:
    """One opened version, with the requests running on it; closed when retired and idle."""

    def __init__(self, service: "SearchService"):
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
        from irforge.ops.search import SearchService

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


def create_app(root: Path | str, config: Any, names: list[str] | None = None, watch: bool = True,
               announce: tuple[str, int] | None = None):
    """The FastAPI app serving ``names`` (default: every system with a served version, ``serve.name`` first).
    ``announce``: the (host, port) it listens on, written to a discovery file while it runs (``irforge serve``)."""
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
        with announced(root, *announce, names) if announce else contextlib.nullcontext():
            yield
        stop.set()
        for system in systems.values():
            system.close()

    # docs_url=None, redoc_url=None: FastAPI's own pages load Swagger UI and ReDoc from a CDN (blank offline);
    # add_docs serves them from local files instead.
    app = FastAPI(title="irforge search", lifespan=lifespan, docs_url=None, redoc_url=None,
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

    add_docs(app)
    app.state.systems = systems
    return app


# ---------------------------------------------------------------------- API docs that work offline


def docs_assets() -> Path | None:
    """The folder of Swagger UI's and ReDoc's scripts shipped by the ``fastapi-offline`` package (found without
    importing it), or None when it is not installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    return folder if all((folder / name).is_file() for name in needed) else None


def add_docs(app: Any, assets: Path | None = None) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts served by the app itself at ``/docs-assets/``:
    FastAPI's documented self-hosting pattern (``get_swagger_ui_html`` with local ``swagger_js_url`` and
    ``swagger_css_url``). Without the assets (``fastapi-offline`` not installed), ``/docs`` is a plain HTML list of
    the endpoints, read from the OpenAPI schema (``/openapi.json``), and there is no ``/redoc``."""
    from fastapi import Request
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = assets or docs_assets()
    if assets is None:
        log.info("the package fastapi-offline is not installed: /docs lists the endpoints as plain HTML")

        @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        def plain_docs(request: Request) -> HTMLResponse:
            return HTMLResponse(endpoints_page(app.openapi(), request.scope.get("root_path", "") + app.openapi_url))

        return

    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    redirect = app.swagger_ui_oauth2_redirect_url

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=base + app.openapi_url, title=f"{app.title} - API docs", oauth2_redirect_url=redirect,
            swagger_js_url=f"{base}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_ASSETS}/favicon.png",
            # no badge from validator.swagger.io (Swagger UI sends the schema there to check it)
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    @app.get(redirect, response_class=HTMLResponse, include_in_schema=False)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", response_class=HTMLResponse, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=base + app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{base}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{base}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)


def endpoints_page(schema: dict[str, Any], openapi_url: str) -> str:
    """A plain HTML list of the endpoints of an OpenAPI schema (no script, nothing loaded from elsewhere)."""
    from html import escape

    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            params = ", ".join(f"{p['name']} ({p.get('in', '')}{', required' if p.get('required') else ''})"
                               for p in op.get("parameters", []))
            rows.append(f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(path)}</code></td>"
                        f"<td>{escape(op.get('summary', ''))}</td><td>{escape(params)}</td></tr>")
    title = escape(schema.get("info", {}).get("title", "API"))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title} - API</title></head><body>"
            f"<h1>{title}</h1><p>{escape(schema.get('info', {}).get('description', ''))}</p>"
            f"<table border='1' cellpadding='4'><tr><th>method</th><th>path</th><th>what</th><th>parameters</th></tr>"
            f"{''.join(rows)}</table><p>The full schema: <a href='{escape(openapi_url)}'>{escape(openapi_url)}</a></p>"
            "</body></html>")


# ---------------------------------------------------------------------- discovery: `irforge search` finds a service


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def discovery_files(root: Path | str) -> list[Path]:
    return sorted((Path(root) / serving.SERVE).glob(f"{DISCOVERY_PREFIX}*.json"))


def service_url(host: str, port: int) -> str:
    """Where a client reaches a service bound to ``host`` (a wildcard address: this machine)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def announced(root: Path | str, host: str, port: int, names: list[str]):
    """``serve/.service-<pid>.json`` while the block runs: where this service listens and what it serves. Files
    left by services that died without removing theirs (their process is gone) are removed first."""
    from irforge.contract import owned

    root = Path(root)
    for stale in discovery_files(root):
        try:
            pid = int(json.loads(stale.read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _pid_alive(pid):
            owned.remove(stale)
    path = root / serving.SERVE / f"{DISCOVERY_PREFIX}{os.getpid()}.json"
    record = {"url": service_url(host, port), "host": host, "port": port, "pid": os.getpid(), "names": list(names),
              "root": str(root.resolve()), "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("announced at %s for `irforge search`", path)
    try:
        yield path
    finally:
        owned.remove(path)


class ServiceUnavailable(RuntimeError):
    """No running service can answer (the reason says why): search in this process."""


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read().decode("utf-8")).get("detail")
        except (ValueError, AttributeError, OSError):
            detail = e.reason
        raise ServiceUnavailable(f"{url.split('?')[0]} answered {e.code}: {detail}") from e
    except (OSError, ValueError) as e:  # refused, timed out, reset, not JSON
        reason = getattr(e, "reason", None) or e
        raise ServiceUnavailable(f"{url.split('?')[0]} did not answer: {reason}") from e


def find_service(root: Path | str, name: str, health_timeout: float = 1.0) -> dict[str, Any]:
    """The running service of this project that serves ``name`` at its currently served version: its discovery
    record plus ``health`` (what ``GET /health`` says of ``name``). Raises :class:`ServiceUnavailable` naming why
    none will do (no discovery file, its process is gone, it does not answer, it serves another version)."""
    root = Path(root)
    current = serving.served_version(root, name)
    if current is None:
        raise ServiceUnavailable(f"nothing is served as '{name}' here")
    published = serving.manifest(root, name, current).get("created_at")  # tells this version from a namesake's
    reasons = []
    for path in discovery_files(root):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, url, names = int(record["pid"]), str(record["url"]), list(record["names"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            reasons.append(f"{serving.SERVE}/{path.name} is unreadable ({e})")
            continue
        if not _pid_alive(pid):
            reasons.append(f"{serving.SERVE}/{path.name} names process {pid}, which is gone")
            continue
        if Path(record.get("root", "")).resolve() != root.resolve():
            reasons.append(f"{serving.SERVE}/{path.name} is the service of another project ({record.get('root')})")
            continue
        if name not in names:
            reasons.append(f"the service at {url} does not serve '{name}'")
            continue
        try:
            health = _get_json(f"{url}/health", health_timeout)
        except ServiceUnavailable as e:
            reasons.append(str(e))
            continue
        served = (health.get("systems") or {}).get(name) or {}
        if served.get("version") != current:
            reasons.append(f"the service at {url} serves {name} {served.get('version')}, not {current} yet")
            continue
        if served.get("published_at") != published:
            reasons.append(f"the service at {url} serves another {name} {current} (published {served.get('published_at')})")
            continue
        return {**record, "health": served}
    raise ServiceUnavailable("; ".join(reasons) or "no `irforge serve` is running for this project")


def search_service(found: dict[str, Any], name: str, query: str, k: int, explain: bool,
                   timeout: float = 30.0) -> dict[str, Any]:
    """``GET /search`` of a running service (what :func:`find_service` found)."""
    args = {"q": query, "k": k, "system": name, **({"explain": "true"} if explain else {})}
    return _get_json(f"{found['url']}/search?{urllib.parse.urlencode(args)}", timeout)


def ask_running_service(root: Path | str, name: str, query: str, k: int, explain: bool, max_k: int,
                        max_query_chars: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer of this project's running service to one query, and the service (its discovery record and
    health); :class:`ServiceUnavailable` when none can answer it."""
    if k > max_k:
        raise ServiceUnavailable(f"-k {k} is above what the service answers (serve.max_k {max_k})")
    if len(query) > max_query_chars:
        raise ServiceUnavailable(f"the query is longer than the service takes (serve.max_query_chars {max_query_chars})")
    found = find_service(root, name)
    return search_service(found, name, query, k, explain), found


def app_from_env():
    """The app for ``uvicorn --factory`` (several worker processes, each loading the served versions itself):
    ``IRFORGE_ROOT`` (default ``.``) and ``IRFORGE_PARAMS`` (default ``params.yaml``) name the project."""
    import os

    from irforge.engine import load_config

    root = Path(os.environ.get("IRFORGE_ROOT", "."))
    return create_app(root, load_config(root, os.environ.get("IRFORGE_PARAMS", "params.yaml")))
