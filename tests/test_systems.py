"""Train -> index -> evaluate -> report on a toy project with tiny random models; significance and report parts."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import paths
from irforge.contract import SCHEMAS, ArtifactError, read_provenance, write_artifact
from irforge.engine import run_stage
from irforge.evaluation import corpus_identity, significance
from irforge.retrieval import read_system
from trainkit import PROVENANCE, SYSTEMS, TOPICS, make_project


def _judgments(root: Path) -> dict[str, str]:
    """One query per toy topic, judged relevant to its own document."""
    queries = root / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": f"t{i}", "text": t.split()[0] + " " + t.split()[-1]}) + "\n"
                               for i, t in enumerate(TOPICS)))
    qrels = root / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"t{i}\t{i}\t1\n" for i in range(len(TOPICS))))
    return {"corpus.queries": str(queries), "corpus.qrels": str(qrels)}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.tables = 0
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1
        self._in_heading = tag in ("h1", "h2")

    def handle_data(self, data):
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_models) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("project")
    params = make_project(root, tiny_models, **_judgments(root), **{
        "train.dense.epochs": 1, "train.splade.epochs": 1, "evaluate.systems": SYSTEMS,
        "evaluate.fusions": [["bm25", "dense-zs"], ["bm25", "dense", "splade"]], "evaluate.resamples": 500,
        "evaluate.feedback": {"bm25-rm3": {"system": "bm25", "method": "rm3"},
                              "dense-prf": {"system": "dense", "feedback": "rrf(bm25+dense+splade)", "docs": 2}},
        "evaluate.compare": [["dense", "dense-zs"], ["rrf(bm25+dense+splade)", "rrf(bm25+dense-zs)"]],
        "evaluate.depth": 10})
    run_stage("judgments", root, params)  # evaluate and report read the judgments artifacts
    for model in ("dense", "splade"):  # one train run per trainer
        run_stage("train", root, params, model)
    for system in SYSTEMS:
        run_stage("index", root, params, system)
    run_stage("evaluate", root, params)
    return root, params


def test_every_index_opens_from_its_system_json(evaluated):
    root, params = evaluated
    kinds = {"bm25": "bm25", "dense-zs": "faiss", "dense": "faiss", "splade-zs": "impact", "splade": "impact"}
    for system in SYSTEMS:
        assert read_system(root / paths.index_dir(system))["kind"] == kinds[system]
    assert read_system(root / paths.index_dir("dense"))["model"] == paths.model_dir("dense")
    inputs = {i["path"] for i in read_provenance(root / paths.PER_QUERY)["inputs"]}
    assert {paths.QUERIES, paths.QRELS, *(paths.index_dir(s) for s in SYSTEMS)} <= inputs


def test_evaluate_compares_every_system_and_fusion(evaluated):
    root, _ = evaluated
    metrics = json.loads((root / paths.METRICS).read_text())
    assert set(metrics) == {*SYSTEMS, "bm25-rm3", "dense-prf", "rrf(bm25+dense-zs)", "rrf(bm25+dense+splade)"}
    # A feedback system searches after the run it feeds on: its latency includes that run's.
    assert metrics["dense-prf"]["latency_mean_ms"] >= metrics["rrf(bm25+dense+splade)"]["latency_mean_ms"]
    for system, values in metrics.items():
        assert {"nDCG@10", "RR@10", "R@100", "R@1000", "AP", "latency_mean_ms", "latency_p95_ms"} <= set(values)
        assert values["latency_p95_ms"] >= 0 and 0 <= values["nDCG@10"] <= 1
        if system != "bm25":
            assert {"delta_vs_bm25", "p_ttest_vs_bm25", "p_randomisation_vs_bm25"} <= set(values)
    assert metrics["bm25"]["nDCG@10"] > 0.5  # the toy queries share words with their documents
    table = (root / paths.SYSTEMS_TABLE).read_text().splitlines()
    assert table[0].startswith("system,nDCG@10") and len(table) == 1 + len(metrics)
    assert (root / paths.TREC_RUNS / "rrf(bm25+dense-zs).trec").exists()



def test_evaluate_tests_each_trained_system_against_its_reference(evaluated):
    root, _ = evaluated
    metrics = json.loads((root / paths.METRICS).read_text())
    per_query: dict[str, dict[str, float]] = {}
    for r in pq.read_table(root / paths.PER_QUERY).to_pylist():
        if r["measure"] == "nDCG@10":
            per_query.setdefault(r["system"], {})[r["query_id"]] = r["value"]
    for system, reference in [("dense", "dense-zs"), ("rrf(bm25+dense+splade)", "rrf(bm25+dense-zs)")]:
        values = metrics[system]
        assert {f"delta_vs_{reference}", f"p_randomisation_vs_{reference}", f"wins_vs_{reference}"} <= set(values)
        diffs = [per_query[system][q] - per_query[reference][q] for q in per_query[reference]]
        assert values[f"delta_vs_{reference}"] == pytest.approx(np.mean(diffs), abs=1e-4)
        assert values[f"wins_vs_{reference}"] == sum(d > 0 for d in diffs)
    assert "delta_vs_dense-zs" not in metrics["splade"]  # only the pairs asked for


def test_compare_must_name_systems_that_ran(evaluated):
    root, params = evaluated
    with pytest.raises(ValueError, match="evaluate.compare: 'splade-zs' is not a system, feedback system or fusion"):
        run_stage("evaluate", root, params.with_overrides({"evaluate.compare": [["splade", "splade-zs"]],
                                                            "evaluate.systems": ["bm25", "splade"], "evaluate.fusions": [],
                                                            "evaluate.feedback": {}}))


def test_missing_index_is_a_clear_error(evaluated, tmp_path):
    root, params = evaluated
    before = (root / paths.METRICS).read_bytes()
    # A system evaluate names must be declared in index.systems ...
    with pytest.raises(ValueError, match=r"evaluate.systems: 'nope' is not a system of index.systems \(known: bm25, "):
        run_stage("evaluate", root, params.with_overrides({"evaluate.systems": ["bm25", "nope"], "evaluate.fusions": [],
                                                            "evaluate.compare": [], "evaluate.feedback": {}}))
    # ... and its index built: the error names the index folder and the command that builds it.
    declared = params.with_overrides({"index.systems.nope": {"kind": "bm25"}, "evaluate.systems": ["bm25", "nope"],
                                      "evaluate.fusions": [], "evaluate.compare": [], "evaluate.feedback": {}})
    with pytest.raises(ArtifactError, match=re.escape(f"{root / paths.index_dir('nope')}: artifact 'index/nope' "
                                                      "not found; build it with `irforge run index nope`")):
        run_stage("evaluate", root, declared)
    assert (root / paths.METRICS).read_bytes() == before  # nothing written


def test_fusion_must_name_listed_systems(evaluated):
    root, params = evaluated
    with pytest.raises(ValueError, match="'splade' is not"):
        run_stage("evaluate", root, params.with_overrides({"evaluate.systems": ["bm25"], "evaluate.feedback": {},
                                                            "evaluate.fusions": [["bm25", "splade"]]}))


def test_report_renders_tables_and_existing_figures(evaluated, tmp_path):
    root, params = evaluated
    rows = [{"query_id": f"g{i}", "chunk_id": f"{i}#0", "doc_id": str(i), "text": f"generated {i}",
             "generator": "toy", "prompt_id": "p", "template": "keywords" if i % 2 else "question",
             "mean_logprob": -1.0, "rank_bm25": 1 if i % 3 else None, "rank_dense": None,
             "kept": bool(i % 3), "reason": None if i % 3 else "source not in top 20"} for i in range(9)]
    write_artifact(pa.Table.from_pylist(rows, SCHEMAS["filtered_queries"]), root / paths.FILTERED,
                   "filtered_queries", PROVENANCE)
    ablation = root / "ablation.json"
    rows = [{"name": "base", "overrides": {"train.negatives": 1}, "examples": 8,
             "metrics": {"dense": {"nDCG@10": 0.5}, "bm25": {"nDCG@10": 0.3}}},
            {"name": "no-negatives", "overrides": {"train.negatives": 0}, "examples": 8,
             "metrics": {"dense": {"nDCG@10": 0.4}, "bm25": {"nDCG@10": 0.3}}}]
    # Measured on another corpus (or on one it does not name): a note says so, no numbers are shown.
    other = {"path": "data/elsewhere", "sha256": "f" * 64}
    for recorded, said in ((other, "was measured on data/elsewhere (corpus sha256 ffffffffffff)"),
                           (None, "was measured on a corpus it does not name")):
        ablation.write_text(json.dumps({"rows": rows} | ({"corpus": recorded} if recorded else {})))
        summary = run_stage("report", root, params.with_overrides({"report.ablation": str(ablation)}))
        assert summary["sections"] == ["verdict", "systems", "training", "filter"]
        text = (root / paths.REPORT / "index.html").read_text()
        assert said in text and "no-negatives" not in text
    here = corpus_identity(root / paths.CHUNKS)
    ablation.write_text(json.dumps({"corpus": here, "rows": rows}))
    summary = run_stage("report", root, params.with_overrides({"report.ablation": str(ablation)}))
    assert summary["sections"] == ["verdict", "systems", "training", "ablation", "filter"]
    page_path = root / paths.REPORT / "index.html"
    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    assert {"measures.png", "latency.png", "wins_losses.png", "training.png", "ablation.png"} <= set(page.images)
    for image in page.images:
        assert (page_path.parent / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page_path.read_text()
    assert "6 of 9 generated queries kept" in text and "source not in top 20" in text
    assert "no-negatives" in text and "rrf(bm25+dense+splade)" in text
    assert "Trained vs zero-shot" in page.headings  # evaluate.compare pairs, tested against each other
    assert "Unchanged in every run: bm25 0.3000" in text  # the systems no ablation run changed are named once
    # The page says which corpus (and which judgments) its numbers come from.
    assert f"(sha256 of its files {here['sha256'][:12]}). Judgments: " in text
    assert "12 judged queries (4 dev, 8 test)" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text  # static, offline
    assert page.tables >= 5 and "Training" in page.headings


@pytest.mark.parametrize(("content", "message"), [
    ('{"rows": [{"name": "a", "metrics": {}}, {"metrics": {}}]}', "row 1: field 'name' must be a string"),
    ('{"rows": [{"name": "a", "metrics": {"dense": 0.4}}]}', "row 0 (a): field 'metrics' must map systems"),
    ('{"rows": {"name": "a"}}', "expected an object with a list 'rows'"),
    ('{"rows": [', "not valid JSON"),
])
def test_malformed_ablation_file_is_named_with_row_and_field(evaluated, tmp_path, content, message):
    root, params = evaluated
    ablation = tmp_path / "ablation.json"
    ablation.write_text(content)
    before = (root / paths.REPORT / "index.html").read_bytes() if (root / paths.REPORT / "index.html").exists() else None
    with pytest.raises(ValueError, match=re.escape(f"{ablation}: ") + ".*" + re.escape(message)):
        run_stage("report", root, params.with_overrides({"report.ablation": str(ablation)}))
    if before is not None:  # the report folder is published whole, or not at all
        assert (root / paths.REPORT / "index.html").read_bytes() == before


def test_irforge_report_command_skips_sections_without_artifacts(tmp_path, tiny_models):
    import yaml
    from typer.testing import CliRunner

    from irforge.cli import app

    params = make_project(tmp_path, tiny_models)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.data))
    result = CliRunner().invoke(app, ["report", "--root", str(tmp_path), "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("artifacts/report/index.html")
    text = (tmp_path / paths.REPORT / "index.html").read_text()
    assert text.count("Skipped:") == 3


def test_ablation_reruns_only_the_steps_an_override_touches():
    import importlib.util

    from irforge.engine import load_config, validate
    from irforge.ops.ablation import dirty_nodes

    repo = Path(__file__).parents[1]
    spec = importlib.util.spec_from_file_location("ablation", repo / "benchmarks/ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)  # the driver script imports
    config = load_config(repo)  # the repository's params.yaml
    keys = [n.key for n in dirty_nodes(config, {"train.negatives": 0})]
    assert {"train-dense", "train-splade", "index-dense", "index-splade", "evaluate", "report"} <= set(keys)
    assert keys.index("train-dense") < keys.index("index-dense")  # one train run per trainer, before its index
    assert "teach" not in keys  # the teacher scores every mined negative whatever train.negatives is
    assert not {"chunk", "judgments", "index-bm25", "index-bm25-d2q", "index-dense-zs", "index-splade-zs"} & set(keys)
    assert dirty_nodes(config, {}) == []
    # A new system re-runs its own index and what reads the indexes, not every index (nor what BM25 feeds).
    added = {"index.systems.mpnet-zs": {"kind": "faiss", "model": "pkg:all-mpnet-base-v2"},
             "evaluate.systems": [*config.section("evaluate").systems, "mpnet-zs"]}
    assert [n.key for n in dirty_nodes(config, added)] == ["index-mpnet-zs", "evaluate", "report"]
    assert "index-bm25" in [n.key for n in dirty_nodes(config, {"index.max_length": 128})]  # shared keys: all
    for overrides in ablation.DEFAULT_VARIANTS.values():  # the default variants are valid params
        validate(config.params.with_overrides(overrides))


def test_significance_detects_a_consistent_gain_and_not_noise():
    rng = np.random.default_rng(0)
    base = {str(q): float(v) for q, v in enumerate(rng.uniform(0, 1, 100))}
    better = {q: min(1.0, v + 0.1) for q, v in base.items()}
    noisy = {q: float(np.clip(v + rng.normal(0, 0.05), 0, 1)) for q, v in base.items()}
    per_query = {"bm25": base, "better": better, "noisy": noisy, "same": dict(base)}
    gain = significance(per_query, "better", "bm25", seed=1, resamples=2000)
    assert gain["p_ttest"] < 0.001 and gain["p_randomisation"] < 0.01 and gain["delta"] > 0.05
    assert gain["wins"] > 80 and gain["losses"] == 0
    assert significance(per_query, "noisy", "bm25", seed=1, resamples=2000)["p_randomisation"] > 0.05
    assert significance(per_query, "same", "bm25", seed=1, resamples=2000)["p_ttest"] == 1.0
