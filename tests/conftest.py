"""Shared fixtures: a tiny BEIR-layout corpus with known answers, and a tiny project folder around it.

The corpus is small enough that every metric is predictable by hand: each query's relevant document is the
only one that contains the query's words (except ``q5``, whose word is in no document at all).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from irforge.config import Config, Params
from irforge.contract import owned

# Set at import, before any fixture (session-scoped ones included) runs a stage: no progress bars in test
# logs, a pinned clock so artifacts are byte-identical, and no model hub.
os.environ["IRFORGE_PROGRESS"] = "0"
os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="session", autouse=True)
def scratch_is_owned(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tests' temporary folders are irforge's to write and delete in, as a run's folders are (fixtures play
    stages that write artifacts). A user's folder, which the guard must leave alone, is made outside them
    (tests/test_owned.py)."""
    owned.claim(tmp_path_factory.getbasetemp())


# Fixtures shared by several test modules (tiny_models: tiny random dense and SPLADE models).
pytest_plugins = ["trainkit"]

NO_BROWSER = re.compile(r"chromium.* is not installed", re.IGNORECASE)  # the browser tests' skip reason


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """A browser test skipped for want of Chromium is easy to miss among the skips (-ra): say so loudly, with the
    capability left untested and the command that installs it (what .ci/run does)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if NO_BROWSER.search(str(r.longrepr))]
    if not skipped:
        return
    write = terminalreporter.write_line
    terminalreporter.write_sep("!", "NOT TESTED IN A REAL BROWSER", red=True, bold=True)
    write(f"{len(skipped)} test{'s' if len(skipped) > 1 else ''} skipped because Chromium is not installed: "
          "the search page and the judging page were not tested in a real browser.", red=True, bold=True)
    write("Install it, then run them again:  sudo apt-get install -y chromium", bold=True)
    write("  python -m pytest tests/test_search_page.py tests/test_judging_page.py")
    terminalreporter.write_sep("!", red=True, bold=True)

# A document long enough to be cut into several 32-token passages (sentences of ~8 tokens each).
LONG_TEXT = " ".join(
    f"Quasars number {i} shine brightly across the early universe." for i in range(1, 13)
)

DOCS: list[dict[str, str]] = [
    {"_id": "d1", "title": "Aardvarks", "text": "Aardvarks dig burrows at night. They eat ants and termites."},
    {"_id": "d2", "title": "Penguins", "text": "Penguins are flightless birds of the southern hemisphere. They swim fast."},
    {"_id": "d3", "title": "Volcanoes", "text": "Volcanoes erupt molten lava from the mantle. Lava cools into basalt."},
    {"_id": "d4", "title": "Glaciers", "text": "Glaciers carve valleys as ice slowly moves downhill."},
    {"_id": "d5", "title": "Telescopes", "text": "Telescopes collect light from distant galaxies and stars."},
    {"_id": "d6", "title": "Bright objects", "text": LONG_TEXT},
]

QUERIES: list[dict[str, str]] = [
    {"_id": "q1", "text": "aardvarks termites"},
    {"_id": "q2", "text": "penguins swim"},
    {"_id": "q3", "text": "basalt lava"},
    {"_id": "q4", "text": "quasars"},
    {"_id": "q5", "text": "zeppelin"},  # in no document: RR = nDCG = 0
    {"_id": "q6", "text": "unjudged query about glaciers"},  # no judgments: not evaluated
]

# (query, doc, grade). q3 has a second, lower-graded relevant doc that BM25 cannot find (no shared word).
QRELS: list[tuple[str, str, int]] = [
    ("q1", "d1", 1),
    ("q2", "d2", 1),
    ("q3", "d3", 2),
    ("q3", "d4", 1),
    ("q4", "d6", 1),
    ("q5", "d5", 1),
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_beir(folder: Path, docs: list[dict[str, str]] = DOCS, queries: list[dict[str, str]] = QUERIES,
               qrels: list[tuple[str, str, int]] = QRELS) -> Path:
    """A BEIR-layout corpus folder: corpus.jsonl, queries.jsonl, qrels/test.tsv."""
    write_jsonl(folder / "corpus.jsonl", docs)
    write_jsonl(folder / "queries.jsonl", queries)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in qrels), encoding="utf-8"
    )
    return folder


def tiny_params(corpus: str = "data/tiny", judged: bool = True) -> dict[str, Any]:
    """params.yaml for a project whose corpus is at ``corpus`` (relative to the project root): the repository's
    params.yaml (so every stage finds its section) with the foundation sections set for the tiny corpus."""
    return {
        **yaml.safe_load((REPO / "params.yaml").read_text()),
        "seed": 13,
        "corpus": {
            **yaml.safe_load((REPO / "params.yaml").read_text())["corpus"],
            "path": corpus,
            "format": "auto",
            "id_field": "_id",
            "title_field": "title",
            "text_field": "text",
            "queries": f"{corpus}/queries.jsonl" if judged else None,
            "qrels": f"{corpus}/qrels/test.tsv" if judged else None,
        },
        "chunk": {
            "tokenizer": "pkg:all-minilm-l6-v2",
            "max_tokens": 32,
            "stride": 8,
            "max_doc_chars": 1_000_000,
            "max_bad_fraction": 0.01,
        },
        "bm25": {"k1": 0.9, "b": 0.4},
        "index": {"systems": {"bm25": {"kind": "bm25"}}},
        "teach": {"teachers": {"bm25": {"kind": "bm25"}}},  # no model to load
        "runtime": {**yaml.safe_load((REPO / "params.yaml").read_text())["runtime"], "threads": 1},
        "evaluate": {
            **yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"],
            "systems": ["bm25"],
            "feedback": {},
            "fusions": [],
            "compare": [],
            "measures": ["nDCG@10", "RR@10", "R@100"],
            "depth": 100,
            "chunk_factor": 2,
        },
    }


@dataclass
class Project:
    """A project folder: ``root`` holds params.yaml and the corpus; artifacts land under ``root/artifacts``."""

    root: Path

    @property
    def params(self) -> Params:
        return Params.load(self.root / "params.yaml")

    @property
    def config(self) -> Config:
        from irforge.engine import validate

        return validate(self.params)

    @property
    def corpus(self) -> Path:
        return self.root / self.params.section("corpus")["path"]

    def set_params(self, **sections: Any) -> None:
        """Replace whole params sections (``chunk={...}``) or top-level keys in params.yaml."""
        data = yaml.safe_load((self.root / "params.yaml").read_text())
        data.update(sections)
        (self.root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def run(self, stage: str, variant: str | None = None) -> dict[str, Any]:
        from irforge.engine import run_stage

        return run_stage(stage, self.root, self.config, variant)


def make_project(root: Path, judged: bool = True) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    write_beir(root / "data" / "tiny")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(judged=judged), sort_keys=False))
    return Project(root)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A BEIR folder with the six documents, six queries and the qrels above."""
    return write_beir(tmp_path / "tiny")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A fresh project folder in tmp_path with the tiny corpus at data/tiny and params.yaml beside it."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def evaluated_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project that has run chunk, judgments -> index bm25 -> evaluate once (shared, read-only: copy it to modify)."""
    project = make_project(tmp_path_factory.mktemp("evaluated") / "project")
    project.run("chunk")
    project.run("judgments")
    project.run("index", "bm25")
    project.run("evaluate")
    return project


@pytest.fixture
def evaluated_copy(evaluated_project: Project, tmp_path: Path) -> Iterator[Project]:
    """A private copy of :func:`evaluated_project` that a test may change."""
    root = tmp_path / "project"
    shutil.copytree(evaluated_project.root, root)
    yield Project(root)


@pytest.fixture(scope="session")
def tokenizer_json() -> Path:
    """The embedded MiniLM tokenizer (a tokenizer.json, fast to load)."""
    from irforge.models import resolve_model

    return resolve_model("pkg:all-minilm-l6-v2").path / "tokenizer.json"
