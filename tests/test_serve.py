"""Publish an evaluated hybrid system, search it from the command line and over HTTP, swap versions under load."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import paths
from irforge.cli import app
from irforge.engine import load_config, run_stage
from irforge.ops import serving
from irforge.ops.publish import publish
from irforge.ops.search import SearchService
from servekit import loopback_socket, serving_in_thread
from trainkit import TOPICS, make_project

TARGET = "rrf(bm25-rm3+dense-prf+splade-zs)"  # a fusion over a trained model, PRF and a zero-shot SPLADE leg


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_models) -> Path:
    root = tmp_path_factory.mktemp("served")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"t{i}", "text": t.split()[0] + " " + t.split()[-1]})
                                                + "\n" for i, t in enumerate(TOPICS)))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"t{i}\t{i}\t1\n" for i in range(len(TOPICS))))
    params = make_project(root, tiny_models, **{
        "corpus.queries": "queries.jsonl", "corpus.qrels": "qrels.tsv", "train.dense.epochs": 1,
        "evaluate.systems": ["bm25", "dense", "splade-zs"],
        "evaluate.feedback": {"bm25-rm3": {"system": "bm25", "method": "rm3", "docs": 3},
                              "dense-prf": {"system": "dense", "feedback": "rrf(bm25+dense+splade-zs)", "docs": 2}},
        "evaluate.fusions": [["bm25", "dense", "splade-zs"], ["bm25-rm3", "dense-prf", "splade-zs"]],
        "evaluate.compare": [], "evaluate.rerank": {}, "evaluate.resamples": 200, "evaluate.depth": 10,
        "serve.depth": 10, "serve.threads": 1, "serve.system": TARGET})
    (root / "params.yaml").write_text(yaml.safe_dump(params.data, sort_keys=False))
    run_stage("judgments", root, params)
    run_stage("train", root, params, "dense")
    for system in ("bm25", "dense", "splade-zs"):
        run_stage("index", root, params, system)
    run_stage("evaluate", root, params)
    return root


@pytest.fixture(scope="module")
def published(project) -> dict:
    return publish(project, load_config(project, "params.yaml"))


@pytest.fixture(scope="module")
def client(project, published):
    from fastapi.testclient import TestClient

    from irforge.ops.service import create_app

    with TestClient(create_app(project, load_config(project, "params.yaml"), watch=False)) as c:
        yield c


def test_publish_links_the_plan_indexes_and_models_with_provenance(project, published):
    folder = serving.served_dir(project, "main")
    assert published["version"] == folder.name == "v000001" and published["system"] == TARGET
    assert sorted(p.name for p in (folder / "artifacts/index").iterdir()) == ["bm25", "dense", "splade-zs"]
    assert (folder / "artifacts/train/dense/model.safetensors").exists()  # the trained model travels with it
    spec = json.loads((folder / "system.json").read_text())
    assert spec["plan"]["target"] == TARGET and set(spec["plan"]["steps"]) == {
        "bm25-rm3", "dense-prf", "rrf(bm25+dense+splade-zs)", TARGET}
    assert "artifacts/train/dense" in {m["name"] for m in spec["models"]}
    metrics = json.loads((project / paths.METRICS).read_text())[TARGET]
    assert published["experiment_metrics"]["nDCG@10"] == metrics["nDCG@10"]
    assert published["metrics"]["nDCG@10"] > 0 and "R@100" in published["metrics"]  # as a re-index scores a version
    assert published["experiment"]["indexes"]["dense"]["params_hash"]


def test_a_served_system_ranks_as_it_was_evaluated(project, published):
    runs = pq.read_table(project / paths.RUNS).to_pylist()
    evaluated: dict[str, list[str]] = {}
    for row in sorted((r for r in runs if r["system"] == TARGET), key=lambda r: (r["query_id"], r["rank"])):
        evaluated.setdefault(row["query_id"], []).append(row["doc_id"])
    queries = {json.loads(line)["_id"]: json.loads(line)["text"] for line in (project / "queries.jsonl").read_text().splitlines()}
    service = SearchService.open_version(serving.served_dir(project, "main"), project / ".irforge-cache", threads=1)
    try:
        found = service.search(queries, k=10)
    finally:
        service.close()
    assert {q: [h["doc_id"] for h in hits] for q, hits in found.items()} == evaluated


def _cli(project, *args):
    return CliRunner().invoke(app, [*args, "--root", str(project), "--params", str(project / "params.yaml")])


def test_cli_search_prints_the_http_ranking(project, published, client):
    out = _cli(project, "search", "wing", "lift", "--json", "-k", "5")
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output[out.output.index("{"):])
    http = client.get("/search", params={"q": "wing lift", "k": 5}).json()
    assert [(h["doc_id"], h["score"]) for h in cli["results"]] == [(h["doc_id"], h["score"]) for h in http["results"]]
    assert cli["version"] == http["version"] == "v000001" and len(http["results"]) == 5
    top = http["results"][0]
    assert top["doc_id"] == "0" and top["title"] is not None
    assert any(top["passage"][a:b].lower() in ("wing", "lift") for a, b in top["highlights"])

    text = _cli(project, "search", "wing", "lift", "-k", "3", "--explain")
    assert text.exit_code == 0 and "bm25-rm3: #" in text.output and "score" in text.output
    experiment = _cli(project, "search", "wing", "lift", "--json", "--experiment", TARGET)
    assert experiment.exit_code == 0, experiment.output
    assert json.loads(experiment.output[experiment.output.index("{"):])["results"][0]["doc_id"] == "0"


def test_http_endpoints(client):
    health = client.get("/health").json()
    main = health["systems"]["main"]
    assert health["status"] == "ok" and main["version"] == "v000001" and main["system"] == TARGET
    assert main["documents"] == len(TOPICS) and any(m["sha256"] for m in main["models"])
    batch = client.post("/search", json={"queries": {"a": "shock wave", "b": "satellite orbit"}, "k": 3, "explain": True})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert results["a"][0]["doc_id"] == "2" and results["b"][0]["doc_id"] == "7"
    assert set(results["a"][0]["explain"]) == {"bm25", "dense", "splade-zs", "bm25-rm3", "dense-prf", "rrf(bm25+dense+splade-zs)"}
    doc = client.get("/documents/3").json()
    assert doc["doc_id"] == "3" and doc["passages"][0]["text"].startswith("heat transfer")
    assert client.get("/documents/nope").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and '<input id="q"' in page.text
    assert client.get("/docs").status_code == 200 and "/search" in client.get("/openapi.json").json()["paths"]
    metrics = client.get("/metrics").text
    assert 'irforge_requests_total{endpoint="/search",status="200"}' in metrics
    assert "irforge_request_seconds_bucket" in metrics


def _referenced(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|spec-url|url:)\s*=?\s*["']([^"']+)["']""", html)


def test_api_docs_load_nothing_from_elsewhere(client):
    """/docs (Swagger UI) and /redoc are served with their scripts, styles and icon from the service itself: they
    work offline (FastAPI's own pages load them from a CDN and are blank without the internet)."""
    for page, assets in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
                         ("/redoc", {"redoc.standalone.js", "favicon.png"})):
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert not re.search(r"https?://", html.text), f"{page} names an outside URL"
        urls = _referenced(html.text)
        assert {u.rsplit("/", 1)[-1] for u in urls if u.startswith("/docs-assets/")} == assets, urls
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200 and response.content, url
        assert "/openapi.json" in urls
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"] and b"SwaggerUIBundle" in script.content
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert '"validatorUrl": null' in client.get("/docs").text  # Swagger UI sends no schema to validator.swagger.io


def test_api_docs_without_the_assets_are_a_plain_list_of_the_endpoints(monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from irforge.ops import service

    monkeypatch.setattr(service, "docs_assets", lambda: None)
    app = FastAPI(title="t", docs_url=None, redoc_url=None)

    @app.get("/search", summary="Search one query")
    def search(q: str) -> dict:
        return {}

    service.add_docs(app)
    with TestClient(app) as c:
        html = c.get("/docs").text
        assert "Search one query" in html and "<code>/search</code>" in html and "q (query, required)" in html
        assert not re.search(r"https?://", html) and "<script" not in html
        assert c.get("/openapi.json").status_code == 200 and c.get("/redoc").status_code == 404


@pytest.mark.parametrize(("method", "url", "body", "status", "reason"), [
    ("get", "/search?q=", None, 422, "q is empty"),
    ("get", "/search?q=%20%20", None, 422, "q is empty"),
    ("get", "/search?q=" + "a" * 2000, None, 422, "at most 1000 (serve.max_query_chars)"),
    ("post", "/search", json.dumps({"queries": ["a" * 100_000]}).encode(), 422, "at most 1000 (serve.max_query_chars)"),
    ("get", "/search?q=wing&k=0", None, 422, "k"),
    ("get", "/search?q=wing&k=1000000", None, 422, "k"),
    ("get", "/search?q=wing&system=nope", None, 404, "unknown system 'nope'"),
    ("get", "/search?q=%FF%FE", None, 400, "not valid UTF-8"),
    ("get", "/search", None, 422, "q"),
    ("post", "/search", b"{not json", 422, "the body is not valid JSON: Expecting property name"),
    ("post", "/search", b'{"queries": ["\xff\xfe"]}', 400, "not UTF-8 JSON"),
    ("post", "/search", json.dumps({"queries": ["w"] * 65}).encode(), 422, "at most 64 per request"),
    ("post", "/search", json.dumps({"queries": []}).encode(), 422, "queries is empty"),
    ("post", "/search", json.dumps({"queries": ["wing"], "k": -1}).encode(), 422, "k"),
])
def test_bad_requests_get_a_clear_4xx_and_the_service_stays_up(client, method, url, body, status, reason):
    if method == "get":
        response = client.get(url)
    else:
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert "Traceback" not in response.text
    assert client.get("/health").status_code == 200


def test_a_new_version_is_picked_up_and_the_old_one_closed_after_its_last_request(project, published, client):
    served = client.app.state.systems["main"]
    with served.use() as before:  # a request still running on v000001
        second = publish(project, load_config(project, "params.yaml"))
        assert served.refresh()
        assert client.get("/search", params={"q": "wing"}).json()["version"] == second["version"] == "v000002"
        assert before.version == "v000001" and before.service.searcher.retrievers  # still open for it
        assert before.service.search({"q": "wing"}, 1)["q"][0]["doc_id"] == "0"
    assert not before.service.searcher.retrievers  # closed once its last request ended

    # Requests from several threads while versions switch: every one succeeds and names a version.
    versions, errors = [], []

    def ask():
        for _ in range(5):
            r = client.get("/search", params={"q": "flutter panel"})
            (versions if r.status_code == 200 else errors).append(r.json().get("version"))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    publish(project, load_config(project, "params.yaml"))
    served.refresh()
    for t in threads:
        t.join()
    assert not errors and set(versions) <= {"v000002", "v000003"} and len(versions) == 15


def test_publish_errors_name_the_system_or_the_missing_index(project, tmp_path):
    out = _cli(project, "publish", "no-such-system")
    assert out.exit_code != 0 and "unknown system 'no-such-system'" in str(out.exception)
    config = load_config(project, "params.yaml", {"evaluate.systems": ["bm25", "dense", "splade-zs"],
                                                  "evaluate.feedback": {}, "evaluate.fusions": [], "serve.system": "dense"})
    empty = tmp_path / "empty"
    (empty / "artifacts/chunk").mkdir(parents=True)
    (empty / paths.CHUNKS).write_bytes((project / paths.CHUNKS).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"artifacts/index/dense.*missing; run `dvc repro`"):
        publish(empty, config)


def test_concurrent_searches_are_batched_and_answer_as_alone(project, published):
    service = SearchService.open_version(serving.served_dir(project, "main"), project / ".irforge-cache", threads=1)
    try:
        texts = [t.split()[0] + " " + t.split()[1] for t in TOPICS]
        alone = {t: [h["doc_id"] for h in service.search({"q": t}, 5)["q"]] for t in texts}
        batches = []
        search = service.searcher.search

        def counted(queries, **kwargs):
            batches.append(len(queries))
            return search(queries, **kwargs)

        service.searcher.search = counted
        together: dict[str, list[str]] = {}
        start = threading.Barrier(len(texts))

        def ask(text):
            start.wait()
            together[text] = [h["doc_id"] for h in service.search({"q": text}, 5)["q"]]

        threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert together == alone
        assert sum(batches) == len(texts) and len(batches) < len(texts)  # some requests were searched together
    finally:
        service.close()


def test_best_is_the_verdicts_choice_and_never_the_synthetic_ranking(tmp_path):
    from irforge.ops.search import best_system

    config = load_config(Path(__file__).resolve().parents[1], "params.yaml")
    folder = tmp_path / "artifacts/evaluate"
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match="verdict.json does not exist: run `dvc repro` first"):
        best_system(tmp_path, config)
    # A synthetic ranking that prefers rrf(bm25+dense) is not a verdict: without judgments the default is served.
    (folder / "synthetic.json").write_text(json.dumps({"queries": 8, "systems": {
        "bm25": {"nDCG@10": 0.41}, "rrf(bm25+dense)": {"nDCG@10": 0.52}}}))
    (folder / "verdict.json").write_text(json.dumps({"queries": 0, "choice": "rrf(bm25+dense-zs+splade-zs)",
                                                     "choice_reason": "no judged queries"}))
    assert best_system(tmp_path, config) == "rrf(bm25+dense-zs+splade-zs)"
    (folder / "verdict.json").write_text(json.dumps({"queries": 0, "choice": None, "choice_reason": "no default"}))
    with pytest.raises(ValueError, match="no system chosen .*-S serve.system=bm25"):
        best_system(tmp_path, config)


# ---------------------------------------------------------------------- `irforge search` through a running service


def _answer(result) -> dict:
    """The JSON an `irforge search --json` printed (stderr has the line naming who answered)."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@contextlib.contextmanager
def _running(project: Path):
    """`irforge serve` as its command runs it (announced in serve/), by uvicorn in a thread, on a free loopback port."""
    from irforge.ops.service import create_app

    sock = loopback_socket()
    port = sock.getsockname()[1]
    app = create_app(project, load_config(project, "params.yaml"), watch=False, announce=("127.0.0.1", port))
    with serving_in_thread(app, sock) as url:
        yield url


@pytest.fixture
def running_service(project, published):
    with _running(project) as url:
        yield url


def test_cli_search_asks_the_running_service_and_says_so(project, running_service):
    discovery = project / "serve" / f".service-{os.getpid()}.json"
    record = json.loads(discovery.read_text())
    assert record["url"] == running_service and record["pid"] == os.getpid() and "main" in record["names"]

    via_service = _cli(project, "search", "wing", "lift", "--json", "-k", "5", "--explain")
    answer = _answer(via_service)
    assert answer["answered_by"] == "service" and answer["service"] == running_service
    assert f"answered by irforge serve at {running_service}" in via_service.output
    local = _answer(_cli(project, "search", "wing", "lift", "--json", "-k", "5", "--explain", "--no-service"))
    assert local["answered_by"] == "local" and "service" not in local
    assert answer["results"] == local["results"] and answer["version"] == local["version"]
    assert answer["results"][0]["doc_id"] == "0" and "bm25-rm3" in answer["results"][0]["explain"]

    text = _cli(project, "search", "wing", "lift", "-k", "3", "--explain")
    plain = _cli(project, "search", "wing", "lift", "-k", "3", "--explain", "--no-service")
    assert text.exit_code == 0 and "answered by irforge serve" in text.output and "bm25-rm3: #" in text.output
    assert text.stdout == plain.stdout  # the same page, whoever answered

    # What the service does not answer is searched here: more documents than serve.max_k, a version it does not
    # serve yet (this one does not watch the pointer).
    many = _cli(project, "search", "wing", "--json", "-k", "101")
    assert _answer(many)["answered_by"] == "local" and "serve.max_k 100" in many.stderr
    newer = publish(project, load_config(project, "params.yaml"))["version"]
    behind = _cli(project, "search", "wing", "--json")
    assert _answer(behind)["answered_by"] == "local" and _answer(behind)["version"] == newer
    assert f"serves main {answer['version']}, not {newer} yet" in behind.stderr


def test_the_discovery_file_goes_with_the_service_and_search_falls_back(project, published):
    with _running(project):
        assert _answer(_cli(project, "search", "wing", "--json"))["answered_by"] == "service"
    assert not list((project / "serve").glob(".service-*.json"))  # removed at shutdown
    out = _cli(project, "search", "wing", "--json")
    assert _answer(out)["answered_by"] == "local" and "no `irforge serve` is running for this project" in out.stderr


def test_a_stale_discovery_file_falls_back_to_local_search(project, published):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that has ended: its pid names no process
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    serve = project / "serve"
    stale = {serve / f".service-{gone.pid}.json": {"pid": gone.pid, "url": "http://127.0.0.1:9", "names": ["main"],
                                                   "root": str(project.resolve())},
             serve / ".service-1.json": {"pid": os.getpid(), "url": f"http://127.0.0.1:{closed}", "names": ["main"],
                                         "root": str(project.resolve())},
             serve / ".service-2.json": "{not json"}
    try:
        for path, record in stale.items():
            path.write_text(record if isinstance(record, str) else json.dumps(record))
        started = time.monotonic()
        out = _cli(project, "search", "wing", "lift", "--json", "-k", "3")
        answer = _answer(out)
        assert answer["answered_by"] == "local" and answer["results"][0]["doc_id"] == "0"
        assert f"names process {gone.pid}, which is gone" in out.output
        assert f"http://127.0.0.1:{closed}/health did not answer" in out.output and ".service-2.json is unreadable" in out.output
        assert time.monotonic() - started < 60
    finally:
        for path in stale:
            path.unlink(missing_ok=True)


def test_a_bm25_search_from_the_command_line_imports_no_neural_encoder(project):
    """`irforge search` opens only what the plan needs: a BM25 system loads no torch (pyserini's search package
    would import its neural query encoders with it), ranks as usual, and a SPLADE system opened next in the same
    process still works."""
    script = f"""
import json, sys
from irforge.engine import load_config
from irforge.ops.search import SearchService
root = {str(project)!r}
config = load_config(root, "params.yaml")
lean = SearchService.open_experiment(root, config, "bm25", 1, lean=True)
hits = [h["doc_id"] for h in lean.search({{"q": "shock wave"}}, 3)["q"]]
heavy = sorted(m for m in ("torch", "transformers", "pyserini.encode", "sentence_transformers") if m in sys.modules)
splade = SearchService.open_experiment(root, config, "splade-zs", 1)
print(json.dumps({{"hits": hits, "heavy": heavy, "splade": len(splade.search({{"q": "shock wave"}}, 3)["q"])}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    service = SearchService.open_experiment(project, load_config(project, "params.yaml"), "bm25", 1)
    try:
        assert result["hits"] == [h["doc_id"] for h in service.search({"q": "shock wave"}, 3)["q"]]
    finally:
        service.close()
    assert result["heavy"] == [] and result["splade"] == 3
