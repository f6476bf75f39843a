"""The judging page (``irforge judge serve``) in a real headless Chromium, driven over the DevTools protocol (as
tests/test_search_page.py drives the search page): a judge names themself, adds a query, grades five documents by
keyboard; the grades survive a reload and a killed server; a hostile document is shown as text. Skips when Debian's
``chromium`` is not installed (CI installs it, see ``.ci/run``)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browserkit import CHROMIUM, DevTools, browser
from irforge.corpus import load_qrels
from irforge.ops.judging import PASSAGE_CHARS
from test_judging import HOSTILE, HOSTILE_TEXT, HOSTILE_TITLE, judging_project

pytestmark = pytest.mark.slow

QUERIES = ["wing lift propeller", "boundary layer viscous", "shock wave hypersonic", "heat transfer slab",
           "orbit satellite drag"]
KEYS = "20312"  # the five grades given by keyboard


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium): no browser to drive the judging page")
    pytest.importorskip("websockets", reason="no websocket client to speak the DevTools protocol")
    return CHROMIUM


@pytest.fixture(scope="module")
def project(chromium, tmp_path_factory, tiny_models) -> Path:
    """BM25, BM25+RM3 and their fusion as the candidates (no neural model: the server starts fast)."""
    root = judging_project(tmp_path_factory.mktemp("judging-page"), tiny_models, systems=("bm25",), **{
        "evaluate.feedback": {"bm25-rm3": {"system": "bm25", "method": "rm3", "docs": 3}},
        "evaluate.fusions": [["bm25", "bm25-rm3"]], "evaluate.default": "rrf(bm25+bm25-rm3)"})
    (root / "queries.txt").write_text("\n".join(QUERIES) + "\n")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def judge_serve(root: Path, port: int, log: Path):
    """``irforge judge serve`` in its own process, until the block ends (or the test kills it)."""
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "irforge", "judge", "serve", "--root", str(root), "--port",
                                   str(port), "--queries", str(root / "queries.txt")], stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "IRFORGE_PROGRESS": "0"})
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"judge serve exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"judge serve did not answer:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5):
                    break
            except OSError:
                time.sleep(0.3)
        yield server
    finally:
        server.kill()
        server.wait(timeout=30)


def press(devtools: DevTools, key: str) -> None:
    extra = {"code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13} if key == "\r" else {}
    devtools("Input.dispatchKeyEvent", type="keyDown", key="Enter" if key == "\r" else key, text=key, **extra)
    devtools("Input.dispatchKeyEvent", type="keyUp", key="Enter" if key == "\r" else key, **extra)


def type_into(devtools: DevTools, element: str, text: str) -> None:
    devtools.evaluate(f'(box => {{ box.focus(); box.select(); }})(document.getElementById("{element}"))')
    for ch in text:
        press(devtools, ch)
    press(devtools, "\r")


CURRENT = "current && JSON.stringify([current.query_id, current.doc_id])"
PROGRESS = 'document.getElementById("progress").textContent'


def test_grades_by_keyboard_survive_a_reload_and_a_killed_server_and_documents_stay_inert(chromium, project, tmp_path):
    port, log = _free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}/"
    with browser(chromium, tmp_path / "profile") as devtools:
        with judge_serve(project, port, log):
            devtools("Page.navigate", url=url)
            devtools.wait_for('document.readyState === "complete" && !document.getElementById("nameform").hidden')
            type_into(devtools, "name", "alice")  # the name is selected: typing replaces "anonymous"
            devtools.wait_for(f'document.getElementById("who").textContent.includes("alice") && {CURRENT}')
            assert devtools.evaluate('getComputedStyle(document.getElementById("nameform")).display') == "none"
            type_into(devtools, "newq", "nozzle rocket thrust")
            devtools.wait_for('document.getElementById("status").textContent === "added query u1"')
            assert "of 6 queries" in devtools.evaluate(PROGRESS)

            given = {}
            for i, key in enumerate(KEYS):
                pair = json.loads(devtools.wait_for(CURRENT))
                assert tuple(pair) not in given
                press(devtools, key)
                devtools.wait_for(f'{PROGRESS}.startsWith("{i + 1} judgments")')
                given[tuple(pair)] = int(key)
            verdict = devtools.evaluate('document.getElementById("message").textContent')
            assert "after 5 judgments" in verdict or "keep judging" in verdict or "no judgment yet" in verdict, verdict
            assert devtools.evaluate('document.querySelectorAll("#systems tbody tr").length') == 3
            shot = base64.b64decode(devtools("Page.captureScreenshot", format="png")["data"])
            (tmp_path / "judging.png").write_bytes(shot)
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"

            devtools("Page.reload")
            devtools.wait_for(f'document.readyState === "complete" && {PROGRESS}.startsWith("5 judgments")')
            assert "alice" in devtools.evaluate('document.getElementById("who").textContent')  # asked once

        # Killed (SIGKILL, no clean shutdown) and started again: the log is replayed, nothing is searched twice.
        searched_before = (project / "data/judged/candidates.jsonl").read_text()
        with judge_serve(project, port, log):
            devtools("Page.reload")
            devtools.wait_for(f'document.readyState === "complete" && {PROGRESS}.startsWith("5 judgments")')
            progress = devtools.evaluate(PROGRESS)
            assert "5 yours" in progress and "of 6 queries" in progress, progress  # --queries again added none
            assert (project / "data/judged/candidates.jsonl").read_text() == searched_before
            qrels = load_qrels(project / "data/judged/qrels/test.tsv")
            assert {(q, d): g for q, docs in qrels.items() for d, g in docs.items()} == given

            # A hostile document: its script tags, markup and 2 MB of text are shown as text.
            type_into(devtools, "newq", "quokka")
            devtools.wait_for('document.getElementById("status").textContent.startsWith("added query")')
            for _ in range(40):  # skip (key s) to the hostile document
                pair = devtools.wait_for(CURRENT)
                if json.loads(pair)[1] == HOSTILE:
                    break
                press(devtools, "s")
                devtools.wait_for(f"{CURRENT} !== {json.dumps(pair)}")
            page = json.loads(devtools.evaluate("""JSON.stringify({
              pwned: window.__pwned === undefined ? null : window.__pwned, title: document.title,
              shownTitle: document.getElementById("title").textContent,
              meta: document.getElementById("meta").textContent,
              passage: document.getElementById("passage").textContent,
              marks: [...document.querySelectorAll("#passage mark")].map(m => m.textContent),
              scripts: document.scripts.length, images: document.images.length})"""))
            assert page["pwned"] is None and page["title"] == "irforge judging", page
            assert page["scripts"] == 1 and page["images"] == 0
            assert page["shownTitle"] == HOSTILE_TITLE and "Zoo > Marsupials" in page["meta"]
            assert page["passage"].startswith(HOSTILE_TEXT[:PASSAGE_CHARS])
            assert page["passage"].endswith(f"… ({len(HOSTILE_TEXT) - PASSAGE_CHARS} more characters)")
            assert len(page["passage"]) < PASSAGE_CHARS + 60 and set(page["marks"]) == {"quokka"}

            devtools.evaluate('document.getElementById("full").click()')
            devtools.wait_for('!document.getElementById("document").hidden')
            whole = json.loads(devtools.evaluate("""JSON.stringify({
              text: document.getElementById("document").textContent.length, pwned: window.__pwned ?? null,
              scripts: document.scripts.length, images: document.images.length})"""))
            (tmp_path / "hostile.png").write_bytes(base64.b64decode(devtools("Page.captureScreenshot", format="png")["data"]))
            assert whole == {"text": len("Zoo > Marsupials: ") + len(HOSTILE_TEXT), "pwned": None, "scripts": 1,
                             "images": 0}
