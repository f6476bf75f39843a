"""The search page (``GET /``) in a real headless Chromium, against a published BM25 system served by uvicorn.

Two ways in: the ``?q=`` URL (Chromium's ``--dump-dom`` after the page's JavaScript ran, plus a screenshot), and a
real interaction over the DevTools protocol (click the box, type the query, press Enter). Skips when Debian's
``chromium`` is not installed (CI installs it, see ``.ci/run``).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from browserkit import CHROMIUM, FLAGS, browser
from irforge.engine import load_config, run_stage
from irforge.ops.publish import publish
from servekit import loopback_socket, serving_in_thread
from trainkit import TOPICS, make_project

pytestmark = pytest.mark.slow

QUERY = "wing lift"
TOP_DOC = "0"  # trainkit's TOPICS[0] = "wing lift slipstream propeller"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium): no browser to drive the search page")
    return CHROMIUM


@pytest.fixture(scope="module")
def served(chromium, tmp_path_factory, tiny_models) -> Path:
    """A project whose BM25 system is evaluated and published (serve/main/v000001)."""
    root = tmp_path_factory.mktemp("page")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"t{i}", "text": t.split()[0] + " " + t.split()[-1]})
                                                + "\n" for i, t in enumerate(TOPICS)))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"t{i}\t{i}\t1\n" for i in range(len(TOPICS))))
    params = make_project(root, tiny_models, **{
        "corpus.queries": "queries.jsonl", "corpus.qrels": "qrels.tsv",
        "evaluate.systems": ["bm25"], "evaluate.feedback": {}, "evaluate.fusions": [], "evaluate.compare": [],
        "evaluate.rerank": {}, "evaluate.resamples": 200, "evaluate.depth": 10,
        "serve.depth": 10, "serve.threads": 1, "serve.system": "bm25"})
    (root / "params.yaml").write_text(yaml.safe_dump(params.data, sort_keys=False))
    run_stage("judgments", root, params)
    run_stage("index", root, params, "bm25")
    run_stage("evaluate", root, params)
    assert publish(root, load_config(root, "params.yaml"))["version"] == "v000001"
    return root


@pytest.fixture(scope="module")
def base_url(served):
    """The service on a loopback port, run by uvicorn in a background thread."""
    from irforge.ops.service import create_app

    app = create_app(served, load_config(served, "params.yaml"), watch=False)
    with serving_in_thread(app, loopback_socket(), start_timeout=30, stop_timeout=10) as url:
        yield f"{url}/"


def _run_chromium(chromium: Path, *args: str, timeout: float = 45) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run([str(chromium), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class _Element:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: _Element | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def find_all(self, tag: str | None = None, id: str | None = None, cls: str | None = None) -> list[_Element]:
        found = []
        for child in self.children:
            if isinstance(child, str):
                continue
            if ((tag is None or child.tag == tag) and (id is None or child.attrs.get("id") == id)
                    and (cls is None or cls in (child.attrs.get("class") or "").split())):
                found.append(child)
            found.extend(child.find_all(tag, id, cls))
        return found

    def find(self, tag: str | None = None, id: str | None = None, cls: str | None = None) -> _Element:
        found = self.find_all(tag, id, cls)
        assert found, f"no <{tag or '*'} id={id} class={cls}> in <{self.tag}>"
        return found[0]


class _Dom(HTMLParser):
    """A small tree from Chromium's serialised DOM (enough to read the results list)."""

    VOID = {"meta", "link", "input", "br", "img", "hr", "source", "area", "base", "col", "embed", "wbr"}

    def __init__(self, html: str):
        super().__init__()
        self.root = self.at = _Element("#document", {}, None)
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = _Element(tag, dict(attrs), self.at)
        self.at.children.append(element)
        if tag not in self.VOID:
            self.at = element

    def handle_endtag(self, tag):
        at = self.at
        while at is not None and at.tag != tag:
            at = at.parent
        if at is not None and at.parent is not None:
            self.at = at.parent

    def handle_data(self, data):
        self.at.children.append(data)


def _check_results(results: list[dict], status: str) -> None:
    """What the page must show for QUERY: the toy document first, its query words highlighted, the version."""
    assert results, f"no results on the page (status: {status!r})"
    top = results[0]
    assert top["title"] == TOP_DOC, top  # the toy chunks have no title: the page shows the doc id
    assert top["meta"].startswith("score "), top  # the doc id is not repeated when it stands in for the title
    assert top["passage"].startswith(TOPICS[0]), top
    assert {m.lower() for m in top["marks"]} & {"wing", "lift"}, top
    noun = "result" if len(results) == 1 else "results"
    assert status.startswith(f"{len(results)} {noun} from main v000001 in "), status


def test_the_page_renders_results_for_a_query_in_its_url(chromium, base_url, tmp_path):
    url = f"{base_url}?q={urllib.request.quote(QUERY)}"
    dom = _run_chromium(chromium, "--virtual-time-budget=10000", "--dump-dom", url).stdout
    page = _Dom(dom).root
    assert page.find(id="q").attrs.get("value") in (None, QUERY)  # value is a property, not always serialised
    items = page.find(tag="ol", id="results").find_all(tag="li")
    results = [{"title": li.find(cls="title").text, "meta": li.find(cls="meta").text,
                "passage": li.find(cls="passage").text, "marks": [m.text for m in li.find_all(tag="mark")]}
               for li in items]
    _check_results(results, page.find(id="status").text)

    shot = tmp_path / "page.png"
    _run_chromium(chromium, "--virtual-time-budget=10000", "--hide-scrollbars", f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Every host name but the loopback address fails to resolve: the page gets nothing from the internet.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.mark.parametrize(("page", "rendered"), [
    ("docs", ["opblock-summary-path", "/search", "Search one query", "/documents/{doc_id}"]),  # Swagger UI's operations
    ("redoc", ["Search one query", "/search", "A document's passages"]),  # ReDoc's
])
def test_the_api_docs_render_offline(chromium, base_url, page, rendered):
    """/docs and /redoc load their scripts from the service itself (FastAPI's own pages: from a CDN, blank offline)."""
    dom = _run_chromium(chromium, OFFLINE, "--virtual-time-budget=15000", "--dump-dom", base_url + page).stdout
    missing = [text for text in rendered if text not in dom]
    assert not missing, f"{page} did not render {missing}: {dom[:2000]}"


READ_PAGE = """JSON.stringify({
  box: document.getElementById("q").value, search: location.search,
  status: document.getElementById("status").textContent,
  results: [...document.querySelectorAll("#results > li")].map(li => ({
    title: li.querySelector(".title").textContent, meta: li.querySelector(".meta").textContent,
    passage: li.querySelector(".passage").textContent,
    marks: [...li.querySelectorAll(".passage mark")].map(m => m.textContent)}))})"""


def test_typing_a_query_and_pressing_enter_shows_results(chromium, base_url, tmp_path):
    pytest.importorskip("websockets", reason="no websocket client to speak the DevTools protocol")
    with browser(chromium, tmp_path / "profile") as devtools:
        devtools("Page.navigate", url=base_url)
        # Before any search, the status line describes the served system (from /health).
        idle = devtools.wait_for('document.readyState === "complete" && document.getElementById("status").textContent')
        assert idle.startswith("main v000001: bm25, ") and idle.endswith(f"{len(TOPICS)} documents"), idle
        assert devtools.evaluate('document.querySelectorAll("#results > li").length') == 0

        box = devtools.evaluate('(r => [r.x + r.width / 2, r.y + r.height / 2])'
                                '(document.getElementById("q").getBoundingClientRect())')
        for kind in ("mousePressed", "mouseReleased"):
            devtools("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        assert devtools.evaluate('document.activeElement.id') == "q"
        for ch in QUERY:
            devtools("Input.dispatchKeyEvent", type="keyDown", key=ch, text=ch)
            devtools("Input.dispatchKeyEvent", type="keyUp", key=ch)
        enter = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        devtools("Input.dispatchKeyEvent", type="keyDown", text="\r", **enter)
        devtools("Input.dispatchKeyEvent", type="keyUp", **enter)

        devtools.wait_for('/ results? from /.test(document.getElementById("status").textContent)')
        page = json.loads(devtools.evaluate(READ_PAGE))
        assert page["box"] == QUERY and page["search"] == "?q=" + urllib.request.quote(QUERY), page
        _check_results(page["results"], page["status"])

        shot = devtools("Page.captureScreenshot", format="png")["data"]
        (tmp_path / "typed.png").write_bytes(base64.b64decode(shot))
        assert (tmp_path / "typed.png").stat().st_size > 0
