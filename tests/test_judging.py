"""The judging store (an append-only event log, BEIR files derived from it) and the judging page's HTTP API on a
tiny project: BM25, a zero-shot dense index and their fusion as the candidates."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import paths
from irforge.contract import SCHEMAS, write_artifact
from irforge.corpus import load_qrels, load_queries
from irforge.engine import load_config, run_stage
from irforge.evaluation.verdict import depth_order, next_judgments
from irforge.ops import judging
from irforge.ops.judging import PASSAGE_CHARS, JudgingError, Store
from trainkit import PROVENANCE, TOPICS, make_project

HOSTILE = "hostile"
HOSTILE_TITLE = '<script>document.title = "pwned"</script>Hostile <b>title</b>'
# A script that would set a global, an image whose error handler would, and 2 MB of text.
HOSTILE_TEXT = ('quokka <script>window.__pwned = 1</script> <img src="x" onerror="window.__pwned = 2"> '
                + "quokka wallaby marsupial " * 84_000)
FUSION = "rrf(bm25+dense-zs)"


def judging_project(root: Path, models: dict[str, Path], systems: tuple[str, ...] = ("bm25", "dense-zs"),
                    **overrides) -> Path:
    """trainkit's toy project plus a hostile document, its indexes built, params.yaml written."""
    defaults = {"evaluate.systems": list(systems), "evaluate.feedback": {}, "evaluate.fusions": [list(systems)],
                "evaluate.compare": [], "evaluate.rerank": {}, "evaluate.default": f"rrf({'+'.join(systems)})",
                "evaluate.depth": 20, "judge.samples": 100, "serve.threads": 1}
    params = make_project(root, models, **{**defaults, **overrides})
    chunks = pq.read_table(root / paths.CHUNKS).to_pylist()
    chunks.append({"chunk_id": f"{HOSTILE}#0", "doc_id": HOSTILE, "passage_index": 0, "title": HOSTILE_TITLE,
                   "text": HOSTILE_TEXT, "char_start": 0, "char_end": len(HOSTILE_TEXT), "n_tokens": 20,
                   "content_hash": "hh", "doc_hash": "dh", "section": "Zoo > Marsupials"})
    write_artifact(pa.Table.from_pylist(chunks, SCHEMAS["chunks"]), root / paths.CHUNKS, "chunks", PROVENANCE)
    (root / "params.yaml").write_text(yaml.safe_dump(params.data, sort_keys=False))
    for system in params.data["evaluate"]["systems"]:
        run_stage("index", root, params, system)
    return root


# ---------------------------------------------------------------------- the store


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_store_logs_events_and_derives_beir_files(tmp_path):
    store = Store(tmp_path / "judged")
    assert store.add_queries([(None, "wing lift"), (None, "shock wave")], "typed", "ann") == ["u1", "u2"]
    assert store.add_queries([(None, "wing lift")], "typed") == ["u1"]  # typed again: the same query
    assert store.add_queries([("q7", "flutter panel"), (None, "nozzle")], "file") == ["q7", "f1"]
    store.grade("u1", "d1", 2, "ann", "active")
    store.grade("u1", "d2", 0, "ann", "active")  # judged not relevant: a qrel too
    store.grade("u1", "d1", 3, "ann", "active")  # graded again: the latest grade stands
    store.grade("u2", "d3", 1, "bob", "depth")

    events = _lines(tmp_path / "judged" / "judgments.jsonl")
    assert [e["event"] for e in events] == ["query"] * 4 + ["grade"] * 4
    assert set(events[-1]) == {"event", "query_id", "doc_id", "grade", "judge", "time", "source"}
    assert events[-1]["judge"] == "bob" and events[-1]["time"].endswith("+00:00") and events[-1]["source"] == "depth"
    assert {e["source"] for e in events[:4]} == {"typed", "file"} and events[0]["text"] == "wing lift"
    queries = _lines(tmp_path / "judged" / "queries.jsonl")
    assert queries == [{"_id": "u1", "text": "wing lift", "source": "typed"},
                       {"_id": "u2", "text": "shock wave", "source": "typed"},
                       {"_id": "q7", "text": "flutter panel", "source": "file"},
                       {"_id": "f1", "text": "nozzle", "source": "file"}]
    qrels = (tmp_path / "judged" / "qrels" / "test.tsv").read_text(encoding="utf-8")
    assert qrels == "query-id\tcorpus-id\tscore\nu1\td1\t3\nu1\td2\t0\nu2\td3\t1\n"
    # What the pipeline reads (corpus.queries / corpus.qrels point here), without a byte-order mark.
    assert load_queries(tmp_path / "judged" / "queries.jsonl")["q7"] == "flutter panel"
    assert load_qrels(tmp_path / "judged" / "qrels" / "test.tsv") == {"u1": {"d1": 3, "d2": 0}, "u2": {"d3": 1}}
    for name in ("judgments.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert not (tmp_path / "judged" / name).read_bytes().startswith(b"\xef\xbb\xbf"), name

    with pytest.raises(JudgingError, match="query id 'q7' is in the store already, with another text"):
        store.add_queries([("q7", "something else")], "file")

    # A restart replays the log: the same state, and typed ids go on from u3.
    again = Store(tmp_path / "judged")
    assert again.judged() == store.judged() and again.queries == store.queries
    assert again.add_queries([(None, "cone yaw")], "typed") == ["u3"]


def test_undo_takes_back_the_judges_own_latest_standing_grade(tmp_path):
    store = Store(tmp_path / "judged")
    store.add_queries([(None, "wing")], "typed")
    store.grade("u1", "d1", 1, "ann", "active")
    store.grade("u1", "d2", 2, "ann", "active")
    store.grade("u1", "d2", 3, "bob", "active")  # bob overrides ann's grade of d2
    assert store.undo("ann", "active")["doc_id"] == "d2"  # ann's latest: her d2 (bob's still stands)
    assert store.judged() == {"u1": {"d1": 1, "d2": 3}}
    assert store.undo("bob", "active")["grade"] == 3  # now nobody's grade of d2 stands
    assert store.judged() == {"u1": {"d1": 1}}
    assert store.undo("ann", "active")["doc_id"] == "d1"
    with pytest.raises(JudgingError, match="judge 'ann' has no grade to undo"):
        store.undo("ann", "active")
    assert (tmp_path / "judged/qrels/test.tsv").read_text() == "query-id\tcorpus-id\tscore\n"
    assert Store(tmp_path / "judged").judged() == {}  # replayed: the undos too
    assert [e["event"] for e in _lines(tmp_path / "judged/judgments.jsonl")].count("undo") == 3


def _hammer(folder: str, judge: str, n: int) -> None:
    """One judge (a thread or a process, each with its own Store on the same folder) grading ``n`` pairs."""
    store = Store(folder)
    for i in range(n):
        store.grade("u1", f"{judge}-{i}", i % 4, judge, "active")


def test_two_judges_at_once_never_lose_an_event(tmp_path):
    folder = tmp_path / "judged"
    Store(folder).add_queries([(None, "wing")], "typed")
    n = 40
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: another process, not a fork of this one
    processes = [spawn.Process(target=_hammer, args=(str(folder), f"p{j}", n)) for j in range(2)]
    threads = [threading.Thread(target=_hammer, args=(folder, f"t{j}", n)) for j in range(2)]
    for worker in [*processes, *threads]:
        worker.start()
    for worker in [*processes, *threads]:
        worker.join(timeout=120)
    assert all(p.exitcode == 0 for p in processes)
    events = _lines(folder / "judgments.jsonl")
    assert len(events) == 1 + 4 * n  # every line whole (each parses), none lost
    judged = Store(folder).judged()["u1"]
    assert len(judged) == 4 * n and judged["p1-5"] == 1
    assert len((folder / "qrels/test.tsv").read_text().splitlines()) == 1 + 4 * n  # the last writer saw them all


def test_a_line_cut_short_by_a_crash_is_skipped_not_fatal(tmp_path):
    store = Store(tmp_path / "judged")
    store.add_queries([(None, "wing")], "typed")
    with open(tmp_path / "judged/judgments.jsonl", "a") as f:
        f.write('{"event": "grade", "query_id": "u1", "doc')  # a crash mid-write
    store.grade("u1", "d1", 2, "ann", "active")  # starts on a line of its own
    assert Store(tmp_path / "judged").judged() == {"u1": {"d1": 2}}


def test_a_non_loopback_host_needs_a_token(monkeypatch):
    monkeypatch.delenv("IRFORGE_JUDGE_TOKEN", raising=False)
    assert judging.write_token("127.0.0.1", "IRFORGE_JUDGE_TOKEN") is None
    assert judging.write_token("::1", "IRFORGE_JUDGE_TOKEN") is None
    with pytest.raises(JudgingError, match="refusing to serve the judging page on 0.0.0.0.*set IRFORGE_JUDGE_TOKEN"):
        judging.write_token("0.0.0.0", "IRFORGE_JUDGE_TOKEN")
    monkeypatch.setenv("IRFORGE_JUDGE_TOKEN", "s3cret")
    assert judging.write_token("0.0.0.0", "IRFORGE_JUDGE_TOKEN") == "s3cret"


# ---------------------------------------------------------------------- the session and the HTTP API


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_models) -> Path:
    return judging_project(tmp_path_factory.mktemp("judging"), tiny_models)


@pytest.fixture(scope="module")
def session(project):
    opened = judging.Session(project, load_config(project))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def client(project, session):
    from fastapi.testclient import TestClient

    with TestClient(judging.judging_app(project, load_config(project), session=session)) as c:
        yield c


def test_the_api_grades_undoes_and_explains(client, session, project):
    empty = client.get("/api/state").json()
    assert empty["verdict"] is None and empty["next"] is None and empty["systems"] == ["bm25", "dense-zs", FUSION]
    assert empty["default"] == FUSION

    added = client.post("/api/queries", json={"queries": ["wing lift", "shock wave nose"], "judge": "ann"}).json()
    assert added["added"] == ["u1", "u2"] and added["progress"]["queries"] == 2
    item = added["next"]
    assert item["query_id"] in ("u1", "u2") and item["source"] == "typed" and item["passage"]
    assert all(item["passage"][a:b].lower() in item["query"].split() for a, b in item["highlights"])
    verdict = added["verdict"]
    assert set(verdict["systems"]) == {"bm25", "dense-zs", FUSION} and verdict["judgments"] == 0
    assert {"estimate", "low", "high", "p_best", "p_within"} <= set(verdict["systems"]["bm25"])
    assert "p_better_than_default" in verdict["systems"]["bm25"] and verdict["leader"] in verdict["systems"]

    graded = client.post("/api/grade", json={"query_id": item["query_id"], "doc_id": item["doc_id"], "grade": 2,
                                             "judge": "ann"}).json()
    assert graded["progress"]["judgments"] == 1 and graded["progress"]["yours"] == 1
    assert graded["verdict"]["judgments"] == 1 and graded["undo"]["doc_id"] == item["doc_id"]
    assert (graded["next"]["query_id"], graded["next"]["doc_id"]) != (item["query_id"], item["doc_id"])
    qrels = load_qrels(session.store.folder / "qrels/test.tsv")
    assert qrels == {item["query_id"]: {item["doc_id"]: 2}}
    assert client.get("/api/state", params={"judge": "bob"}).json()["progress"]["yours"] == 0

    undone = client.post("/api/undo", json={"judge": "ann"}).json()
    assert undone["undone"] == {"query_id": item["query_id"], "doc_id": item["doc_id"], "grade": 2}
    # The same judgments as before: the same next pair (seeded).
    assert (undone["next"]["query_id"], undone["next"]["doc_id"]) == (item["query_id"], item["doc_id"])
    nothing = client.post("/api/undo", json={"judge": "ann"})
    assert nothing.status_code == 409 and "no grade to undo" in nothing.json()["detail"]

    skipped = client.post("/api/skip", json={"query_id": item["query_id"], "doc_id": item["doc_id"], "judge": "ann"})
    assert (skipped.json()["next"]["query_id"], skipped.json()["next"]["doc_id"]) != (item["query_id"], item["doc_id"])
    # Bob did not skip it: he is offered it still.
    bob = client.get("/api/state", params={"judge": "bob"}).json()["next"]
    assert (bob["query_id"], bob["doc_id"]) == (item["query_id"], item["doc_id"])


@pytest.mark.parametrize(("body", "detail"), [
    ({"grade": 7}, "grade: must be 0 (not relevant), 1 (related), 2 (relevant) or 3 (perfect); got 7"),
    ({"grade": "2"}, "grade: must be 0 (not relevant), 1 (related), 2 (relevant) or 3 (perfect); got '2'"),
    ({"grade": 1, "query_id": "nope"}, "query_id: no query 'nope' in the store"),
    ({"grade": 1, "doc_id": "nope"}, "doc_id: no document 'nope' in"),
])
def test_a_bad_grade_is_a_422_naming_the_problem(client, body, detail):
    client.post("/api/queries", json={"queries": ["wing lift"]})
    response = client.post("/api/grade", json={"query_id": "u1", "doc_id": "0", "judge": "ann", **body})
    assert response.status_code == 422 and detail in response.json()["detail"], response.json()


def test_a_query_must_be_non_empty_and_short(client):
    empty = client.post("/api/queries", json={"queries": ["   "]})
    assert empty.status_code == 422 and empty.json()["detail"] == "query 1 is empty"
    long = client.post("/api/queries", json={"queries": ["x" * 1001]})
    assert long.status_code == 422 and "at most 1000 (serve.max_query_chars)" in long.json()["detail"]


def test_a_hostile_document_is_data_and_its_passage_is_cut(client, session):
    client.post("/api/queries", json={"queries": ["quokka"]})
    qid = next(q for q, v in session.store.queries.items() if v["text"] == "quokka")
    item = session.item(qid, HOSTILE)
    assert item["title"] == HOSTILE_TITLE and item["section"] == "Zoo > Marsupials"  # as it is: the page escapes
    assert item["truncated"] and len(item["passage"]) == PASSAGE_CHARS and item["passage_chars"] == len(HOSTILE_TEXT)
    assert item["highlights"] and all(b <= PASSAGE_CHARS for _, b in item["highlights"])
    doc = client.get(f"/api/document/{HOSTILE}").json()
    assert doc["passages"][0]["text"] == HOSTILE_TEXT
    assert client.get("/api/document/nope").status_code == 404
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert page.text.count("<script") == 1 and f'<script nonce="{nonce}">' in page.text
    assert "frame-ancestors 'none'" in policy and "script-src 'nonce-" in policy


def test_writes_need_the_token_when_one_is_set(project, session, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("IRFORGE_JUDGE_TOKEN", "s3cret")
    with TestClient(judging.judging_app(project, load_config(project), host="0.0.0.0", session=session)) as c:
        body = {"queries": ["wing lift"]}
        assert c.post("/api/queries", json=body).status_code == 401
        wrong = c.post("/api/queries", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "IRFORGE_JUDGE_TOKEN" in wrong.json()["detail"]
        assert c.post("/api/grade", json={"query_id": "u1", "doc_id": "0", "grade": 1}).status_code == 401
        assert c.post("/api/queries", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/state").status_code == 200  # reading needs none
    monkeypatch.delenv("IRFORGE_JUDGE_TOKEN")
    with pytest.raises(JudgingError, match="not loopback"):
        judging.judging_app(project, load_config(project), host="0.0.0.0", session=session)


def test_the_next_pair_active_or_depth(session):
    session.add_queries(["wing lift", "boundary layer flow"])
    est, _ = session._current()
    judged = session.store.judged()
    active = next_judgments(est, 1 + len(session.skipped.get("carol", ())), session.evaluate.delta)
    assert session.next_pair("carol") == active[0][:2]
    depth_session = session.cfg
    try:
        session.cfg = session.cfg.model_copy(update={"selection": "depth", "depth": 3})
        first = next((q, d) for q, d in depth_order(est.pool, 3) if d not in judged.get(q, {}))
        assert session.next_pair("carol") == first
        session.grade(*first, 1, "carol")
        assert session.next_pair("carol") != first
    finally:
        session.cfg = depth_session


def test_a_restart_searches_nothing_again_and_the_pipeline_reads_the_judgments(project, session, monkeypatch):
    session.add_queries(["heat transfer slab"])
    before = session.state("ann")
    config = load_config(project)
    restarted = judging.Session(project, config)
    try:
        monkeypatch.setattr(restarted.service.searcher, "search", lambda *a, **k: pytest.fail("searched again"))
        after = restarted.state("ann")
        assert after["progress"] == before["progress"] and after["verdict"] == before["verdict"]
        assert after["next"] == before["next"]
        assert {q for q, _ in restarted.store.candidates} == set(restarted.store.queries)
    finally:
        restarted.close()

    # corpus.queries / corpus.qrels pointing at the store: the judgments stage takes them.
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["corpus"].update(queries="data/judged/queries.jsonl", qrels="data/judged/qrels/test.tsv")
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    summary = run_stage("judgments", project, load_config(project))
    assert summary["queries"] == len(session.store.queries)
    assert summary["judgments"] == sum(len(d) for d in session.store.judged().values()) > 0


def test_queries_from_a_file_and_generated_ones(project, session, tmp_path):
    (tmp_path / "mine.txt").write_text("\ufeffcone pressure yaw\n\norbit satellite drag\n", encoding="utf-8")
    assert session.add_file_queries(tmp_path / "mine.txt") == ["f1", "f2"]
    assert session.add_file_queries(tmp_path / "mine.txt") == ["f1", "f2"]  # a restart with --queries again
    rows = [{"query_id": f"g{i}", "chunk_id": f"{i}#0", "doc_id": str(i), "text": TOPICS[i].split()[0] + " test",
             "generator": "toy", "prompt_id": "p", "template": "t", "mean_logprob": -1.0, "rank_bm25": 1,
             "rank_dense": 1, "kept": i != 2, "reason": None if i != 2 else "dropped", "holdout": i in (3, 4)}
            for i in range(6)]
    write_artifact(pa.Table.from_pylist(rows, SCHEMAS["filtered_queries"]), project / paths.FILTERED,
                   "filtered_queries", PROVENANCE)
    chosen = session.add_generated(3)
    assert len(chosen) == 3 and set(chosen[:2]) == {"g3", "g4"} and "g2" not in chosen  # held out first, kept only
    assert {session.store.queries[q]["source"] for q in chosen} == {"generated"}
    assert session.add_generated(3) == chosen  # seeded: the same ones


def test_a_browser_test_skipped_for_want_of_chromium_is_reported_loudly(tmp_path):
    """tests/conftest.py's terminal summary, in a pytest run of its own over two skipping tests."""
    (tmp_path / "test_fake.py").write_text(
        "import pytest\n\n"
        "def test_page():\n    pytest.skip('/nowhere/chromium is not installed (apt-get install chromium)')\n\n"
        "def test_other():\n    pytest.skip('no GPU here')\n")
    tests = Path(__file__).parent
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_fake.py")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])})
    assert "2 skipped" in run.stdout, run.stdout + run.stderr
    assert "NOT TESTED IN A REAL BROWSER" in run.stdout
    assert ("1 test skipped because Chromium is not installed: the search page and the judging page were not tested "
            "in a real browser") in run.stdout
    assert "sudo apt-get install -y chromium" in run.stdout


def test_judge_serve_refuses_a_public_host_without_a_token_before_opening_anything(project, monkeypatch):
    from typer.testing import CliRunner

    from irforge.cli import app

    monkeypatch.delenv("IRFORGE_JUDGE_TOKEN", raising=False)
    monkeypatch.setattr(judging, "Session", lambda *a, **k: pytest.fail("opened the systems before refusing"))
    result = CliRunner().invoke(app, ["judge", "serve", "--root", str(project), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and isinstance(result.exception, JudgingError)
    assert "set IRFORGE_JUDGE_TOKEN" in str(result.exception)


def test_the_candidates_are_the_evaluated_runs_with_indexes(project, caplog):
    config = load_config(project, "params.yaml", {"evaluate.systems": ["bm25", "dense-zs", "splade-zs"]})
    plan, systems = judging.candidate_plan(project, config.section("evaluate"), None)
    assert systems == ["bm25", "dense-zs", FUSION] and plan.systems == ["bm25", "dense-zs"]
    assert "not judging splade-zs: no index yet for splade-zs" in caplog.text
    with pytest.raises(JudgingError, match="judge.systems: splade-zs needs .*splade-zs, which does not exist"):
        judging.candidate_plan(project, config.section("evaluate"), ["bm25", "splade-zs"])
    with pytest.raises(JudgingError, match="judge.systems: 'nope' is not a run of the evaluate section"):
        judging.candidate_plan(project, config.section("evaluate"), ["nope"])
    plan, systems = judging.candidate_plan(project, config.section("evaluate"), ["dense-zs"])
    assert systems == ["dense-zs"] and plan.systems == ["dense-zs"] and not plan.steps


def test_judge_until_it_says_stop_then_evaluate_and_publish_the_verdicts_choice(tmp_path_factory, tiny_models):
    """The README's path for a corpus without labels: judge until the page says stop, point corpus.queries /
    corpus.qrels at the store, evaluate, publish: the served system is the verdict's, with its reason."""
    from irforge.ops.publish import publish

    root = judging_project(tmp_path_factory.mktemp("until-stop"), tiny_models)
    session = judging.Session(root, load_config(root))
    try:
        topics = {str(i): TOPICS[i] for i in range(5)}
        ids = session.add_queries(list(topics.values()))
        wanted = dict(zip(ids, topics, strict=True))  # query id -> its topic's document
        for _ in range(150):
            state = session.state("ann")
            if state["verdict"]["stop"]:
                break
            nxt = state["next"]
            session.grade(nxt["query_id"], nxt["doc_id"], 3 if nxt["doc_id"] == wanted[nxt["query_id"]] else 0, "ann")
        verdict = state["verdict"]
        assert verdict["stop"] and "you can stop" in verdict["message"]
        judged = session.store.judged()
        assert set(judged) == set(ids)  # every query judged at least once before the stop
        assert sum(len(d) for d in judged.values()) < state["progress"]["pooled"]  # not the whole pool
    finally:
        session.close()
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["corpus"].update(queries="data/judged/queries.jsonl", qrels="data/judged/qrels/test.tsv")
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(root)
    run_stage("judgments", root, config)
    evaluated = run_stage("evaluate", root, config)["verdict"]
    assert evaluated["unjudged"] == "uncertain"  # grade-0 rows: pooled judgments, the rest unknown
    assert evaluated["split"] == "all" and evaluated["queries"] == len(ids)  # too few dev queries to choose on
    assert json.loads((root / "artifacts/evaluate/verdict.json").read_text())["choice"] == evaluated["choice"]
    manifest = publish(root, config)
    assert manifest["system"] == evaluated["choice"] and manifest["why"] == evaluated["choice_reason"]
