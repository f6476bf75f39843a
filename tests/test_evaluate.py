"""The evaluate stage: judgments parsing, scoring against hand-computed values, corpora without judgments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import paths
from conftest import QRELS, QUERIES, Project
from irforge.contract import ArtifactError
from irforge.corpus import JudgmentsError, load_qrels, load_queries
from irforge.evaluation import score
from irforge.retrieval import chunks_to_docs, read_system
from stages.evaluate import trec_lines

# ---------------------------------------------------------------- judgments files


def test_qrels_are_read_with_or_without_a_header(tmp_path: Path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n\nq2\td3\t1\n")
    assert load_qrels(path) == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    path.write_text("q1\td1\t1\n")
    assert load_qrels(path) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2 d2 1\n", ":3: expected 3 tab-separated fields, found 1"),
        ("q1\td1\t1\tx\n", ":1: expected 3 tab-separated fields, found 4"),
        ("q1\td1\t1\nq1\td2\thigh\n", ":2: field 'score' is not an integer: 'high'"),
    ],
)
def test_bad_qrels_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "test.tsv"
    path.write_text(content)
    with pytest.raises(JudgmentsError) as err:
        load_qrels(path)
    assert str(err.value) == f"{path}{message}"


def test_queries_are_read(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": 1, "text": "wing flutter", "metadata": {}}\n\n{"_id": "q2", "text": "shock waves"}\n')
    assert load_queries(path) == {"1": "wing flutter", "q2": "shock waves"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "q2", "text": ', ":2: expected a JSON object with '_id' and 'text'"),
        ('{"id": "q2", "text": "no _id"}', ":2: expected a JSON object with '_id' and 'text' (missing '_id')"),
        ('{"_id": "q2"}', ":2: expected a JSON object with '_id' and 'text' (missing 'text')"),
        ('["q2", "a list"]', ":2: expected a JSON object with '_id' and 'text'"),
        ('{"_id": "q2", "text": "  "}', ":2: field 'text' must be a non-empty string, found '  '"),
        ('{"_id": "q2", "text": null}', ":2: field 'text' must be a non-empty string, found None"),
    ],
)
def test_bad_queries_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": "fine"}\n' + line + "\n")
    with pytest.raises(JudgmentsError) as err:
        load_queries(path)
    assert str(err.value).startswith(f"{path}{message}")


# ---------------------------------------------------------------- scoring


def test_scores_match_hand_computed_values() -> None:
    qrels = {"q1": {"d1": 2, "d2": 1, "d9": 0}, "q2": {"d5": 1}, "q3": {"d7": 1}}
    run = {
        "q1": [("d3", 3.0), ("d1", 2.0), ("d2", 1.0)],  # relevant at ranks 2 (grade 2) and 3 (grade 1)
        "q2": [],  # nothing retrieved: counts as 0, not skipped
        "q3": [(f"x{i}", 20.0 - i) for i in range(10)] + [("d7", 1.0)],  # relevant at rank 11
    }
    means, per_query = score(run, qrels, ["nDCG@10", "RR@10", "R@100", "AP"])
    # trec_eval's nDCG uses the grade as the gain: DCG = sum(grade / log2(rank + 1)).
    ndcg_q1 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    expected = {
        ("q1", "nDCG@10"): ndcg_q1, ("q1", "RR@10"): 0.5, ("q1", "R@100"): 1.0, ("q1", "AP"): (1 / 2 + 2 / 3) / 2,
        ("q2", "nDCG@10"): 0.0, ("q2", "RR@10"): 0.0, ("q2", "R@100"): 0.0, ("q2", "AP"): 0.0,
        ("q3", "nDCG@10"): 0.0, ("q3", "RR@10"): 0.0, ("q3", "R@100"): 1.0, ("q3", "AP"): 1 / 11,
    }
    got = {(r["query_id"], r["measure"]): r["value"] for r in per_query}
    assert got == pytest.approx(expected)
    assert list(means) == ["nDCG@10", "RR@10", "R@100", "AP"]
    for measure in means:
        assert means[measure] == pytest.approx(sum(v for (_, m), v in expected.items() if m == measure) / 3)


def test_chunk_hits_become_document_hits_by_max_score() -> None:
    hits = [("d1#0", 1.0), ("d2#0", 3.0), ("d1#1", 5.0), ("a#b#2", 3.0), ("d3#0", 0.5)]
    assert chunks_to_docs(hits) == [("d1", 5.0), ("a#b", 3.0), ("d2", 3.0), ("d3", 0.5)]  # ties by id
    assert chunks_to_docs(hits, 2) == [("d1", 5.0), ("a#b", 3.0)]


def test_trec_run_format() -> None:
    text = trec_lines("bm25", {"q2": [("d1", 1.5)], "q1": [("d2", 2.25), ("d3", 1.0)]})
    assert text == "q1 Q0 d2 1 2.250000 bm25\nq1 Q0 d3 2 1.000000 bm25\nq2 Q0 d1 1 1.500000 bm25\n"


# ---------------------------------------------------------------- the stage


def test_judged_project_is_evaluated_from_the_judgments_artifacts(evaluated_project: Project) -> None:
    out = evaluated_project.root
    judged = {q for q, _, _ in QRELS}
    assert pq.read_table(out / paths.QUERIES).num_rows == len(QUERIES)
    assert pq.read_table(out / paths.QRELS).num_rows == len(QRELS)
    assert read_system(out / paths.index_dir("bm25"))["kind"] == "bm25"  # bm25 opens from its folder too
    assert {r["query_id"] for r in pq.read_table(out / paths.PER_QUERY).to_pylist()} == judged  # q6: unjudged
    assert set(json.loads((out / paths.METRICS).read_text())) == {"bm25"}
    verdict = json.loads((out / "artifacts/evaluate/verdict.json").read_text())
    assert verdict["choice"] == verdict["default"] == "bm25" and verdict["unjudged"] in ("nonrelevant", "uncertain")
    assert set(verdict["systems"]) == {"bm25"} and verdict["queries"] == len(judged)


def test_corpus_without_judgments_skips_evaluation_with_empty_outputs(evaluated_copy: Project) -> None:
    corpus = evaluated_copy.params.section("corpus")
    evaluated_copy.set_params(corpus={**corpus, "queries": None, "qrels": None})
    assert evaluated_copy.run("judgments") == {"queries": 0, "judged_queries": 0, "judgments": 0, "dev": 0, "test": 0,
                                               "unknown_dropped": 0}
    result = evaluated_copy.run("evaluate")
    assert result["systems"] == [] and result["metrics"] == {} and result["synthetic"] == {"queries": 0}
    # Nothing judged, nothing to choose by: the default (auto: the baseline, without the zero-shot fusion) is
    # served, and the verdict says where to judge.
    assert result["verdict"]["queries"] == 0 and result["verdict"]["choice"] == "bm25"
    assert "irforge judge serve" in result["verdict"]["choice_reason"]
    out = evaluated_copy.root
    assert pq.read_table(out / paths.QUERIES).num_rows == 0 and pq.read_table(out / paths.QRELS).num_rows == 0
    assert json.loads((out / paths.METRICS).read_text()) == {}
    assert pq.read_table(out / paths.PER_QUERY).num_rows == 0
    assert pq.read_table(out / paths.RUNS).num_rows == 0
    assert sorted(p.name for p in (out / paths.TREC_RUNS).iterdir()) == ["_provenance.json"]  # bm25.trec is gone
    # The report says why there are no systems (not that metrics.json is missing) and that nothing was judged.
    evaluated_copy.run("report")
    text = (out / paths.REPORT / "index.html").read_text()
    assert "No system was evaluated: this corpus has no judged queries" in text
    assert "No judgments: no system is evaluated." in text and "metrics.json does not exist" not in text


def test_configured_judgments_that_do_not_exist_are_an_error(evaluated_copy: Project) -> None:
    corpus = evaluated_copy.params.section("corpus")
    evaluated_copy.set_params(corpus={**corpus, "qrels": "data/tiny/qrels/dev.tsv"})
    before = (evaluated_copy.root / paths.QRELS).read_bytes()
    with pytest.raises(JudgmentsError, match=r"qrels/dev.tsv: corpus.qrels not found \(set corpus.queries and "
                                             r"corpus.qrels to null for a corpus without judgments\)"):
        evaluated_copy.run("judgments")  # the judgments stage reads corpus.queries / corpus.qrels for evaluate
    assert (evaluated_copy.root / paths.QRELS).read_bytes() == before  # the previous judgments stay whole


def test_unknown_system_is_an_error(evaluated_copy: Project) -> None:
    evaluated_copy.set_params(evaluate={**evaluated_copy.params.section("evaluate"), "systems": ["bm26"]})
    with pytest.raises(ValueError, match=r"evaluate.systems: 'bm26' is not a system of index.systems \(known: bm25\)"):
        evaluated_copy.run("evaluate")


def test_declared_system_without_an_index_is_an_error(evaluated_copy: Project) -> None:
    index = evaluated_copy.params.section("index")
    evaluated_copy.set_params(index={**index, "systems": {**index["systems"], "bm26": {"kind": "bm25"}}},
                              evaluate={**evaluated_copy.params.section("evaluate"), "systems": ["bm25", "bm26"]})
    with pytest.raises(ArtifactError, match=r"index/bm26: artifact 'index/bm26' not found; build it with `irforge run index bm26`"):
        evaluated_copy.run("evaluate")


def test_judgments_naming_unknown_queries_or_documents_are_dropped_or_fail(evaluated_copy: Project) -> None:
    """Such judgments cannot be scored: averaging them in as 0 would understate every system."""
    qrels = evaluated_copy.corpus / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "q1\tno-such-doc\t1\nghost\td2\t1\nghost\td3\t2\n")
    before = json.loads((evaluated_copy.root / paths.METRICS).read_text())["bm25"]["nDCG@10"]
    summary = evaluated_copy.run("judgments")
    assert summary["unknown_dropped"] == 3 and summary["judged_queries"] == 5  # ghost's two, q1's unknown document
    grades = {(r["query_id"], r["doc_id"]) for r in pq.read_table(evaluated_copy.root / paths.QRELS).to_pylist()}
    assert ("q1", "no-such-doc") not in grades and not any(q == "ghost" for q, _ in grades)
    evaluated_copy.run("evaluate")
    assert json.loads((evaluated_copy.root / paths.METRICS).read_text())["bm25"]["nDCG@10"] == before
    evaluated_copy.set_params(judgments={**evaluated_copy.params.section("judgments"), "unknown": "fail"})
    with pytest.raises(JudgmentsError, match=r"test.tsv: 3 judgments name 1 unknown queries \(e.g. ghost\) and 1 "
                                             r"documents not in the corpus \(e.g. no-such-doc\)"):
        evaluated_copy.run("judgments")


def test_non_utf8_judgment_files_name_the_file_and_line(tmp_path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(b'{"_id": "1", "text": "fine"}\n{"_id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(JudgmentsError, match=rf"{queries}:2: not UTF-8"):
        load_queries(queries)
    qrels = tmp_path / "qrels.tsv"
    qrels.write_bytes(b"query-id\tcorpus-id\tscore\n1\td1\t1\n2\td\xe92\t1\n")
    with pytest.raises(JudgmentsError, match=rf"{qrels}:3: not UTF-8"):
        load_qrels(qrels)


def test_judgments_for_none_of_the_queries_leave_nothing_to_evaluate(evaluated_copy: Project) -> None:
    (evaluated_copy.corpus / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nother\td1\t1\n")
    assert evaluated_copy.run("judgments")["judged_queries"] == 0
    assert evaluated_copy.run("evaluate")["metrics"] == {}
