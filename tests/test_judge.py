"""Judging by hand: `irforge judge export` pools systems' top documents for a person's queries into a sheet;
`irforge judge import` turns the graded sheet into BEIR judgments that a project evaluates with."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import paths
from conftest import Project
from irforge import retrieval
from irforge.cli import app
from irforge.ops.judge import JudgeError, import_sheet, read_queries


def _export(project: Project, queries, out, *extra: str):
    return CliRunner().invoke(app, ["judge", "export", str(queries), "--out", str(out), "--root", str(project.root),
                                    "--params", str(project.root / "params.yaml"), *extra])


def _rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_export_pools_the_top_documents_then_import_gives_judgments_a_project_evaluates(evaluated_copy: Project):
    root = evaluated_copy.root
    (root / "mine.txt").write_text("penguins swim fast\n\nlava basalt quasars\n", encoding="utf-8")
    result = _export(evaluated_copy, root / "mine.txt", root / "sheet.csv", "--systems", "bm25", "--depth", "3")
    assert result.exit_code == 0, result.output
    rows = _rows(root / "sheet.csv")
    queries = {"q1": "penguins swim fast", "q2": "lava basalt quasars"}
    hits = retrieval.bm25_search(root / paths.index_dir("bm25"), queries, k=12, k1=0.9, b=0.4)
    tops = {}
    for qid, text in queries.items():
        mine = [r for r in rows if r["query_id"] == qid]
        top = tops[qid] = list(dict.fromkeys(retrieval.doc_id_of(c) for c, _ in hits[qid]))[:3]
        assert sorted(r["doc_id"] for r in mine) == sorted(top)  # the pool: bm25's top 3 documents, each once
        assert all(r["query"] == text and r["passage"] and r["grade"] == "" for r in mine)
    # The order is seeded: exporting again gives the same sheet.
    assert _export(evaluated_copy, root / "mine.txt", root / "again.csv", "--systems", "bm25", "--depth", "3").exit_code == 0
    assert (root / "again.csv").read_text() == (root / "sheet.csv").read_text()

    relevant = {("q1", "d2"), ("q2", "d3")}
    assert len(rows) == 3  # q1: d2; q2: d3 and the quasar document
    blank = next(i for i, r in enumerate(rows) if (r["query_id"], r["doc_id"]) not in relevant)
    for i, row in enumerate(rows):
        row["grade"] = "" if i == blank else (2 if (row["query_id"], row["doc_id"]) in relevant else 0)
    with open(root / "sheet.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = CliRunner().invoke(app, ["judge", "import", str(root / "sheet.csv"), "--out", str(root / "data/judged")])
    assert result.exit_code == 0, result.output
    assert "corpus.queries: " in result.output and "1 rows left blank" in result.output
    assert read_queries(root / "data/judged/queries.jsonl") == queries
    qrels = (root / "data/judged/qrels/test.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and "q1\td2\t2" in qrels and len(qrels) == len(rows)  # header, no blank

    corpus = evaluated_copy.params.section("corpus")
    evaluated_copy.set_params(corpus={**corpus, "queries": "data/judged/queries.jsonl",
                                      "qrels": "data/judged/qrels/test.tsv"})
    evaluated_copy.run("judgments")
    metrics = evaluated_copy.run("evaluate")["metrics"]
    # One relevant document per query: nDCG@10 = 1 / log2(1 + its bm25 rank).
    expected = np.mean([1 / np.log2(2 + tops[q].index(d)) for q, d in sorted(relevant)])
    assert metrics["bm25"]["nDCG@10"] == pytest.approx(expected, abs=1e-4)
    evaluated_copy.run("report")
    assert "Judgments: data/judged/qrels/test.tsv, 2 judged queries" in (root / paths.REPORT / "index.html").read_text()


@pytest.mark.parametrize(("content", "message"), [
    ("query_id,query,doc_id,grade\nq1,lava,d3,5\n", "row 2: field 'grade' is '5'; expected 0, 1, 2 or 3"),
    ("query_id,query,doc_id,grade\nq1,lava,d3,yes\n", "row 2: field 'grade' is 'yes'"),
    ("query_id,query,doc_id,grade\nq1,lava,,1\n", "row 2: field 'doc_id' is empty"),
    ("query_id,query,doc_id,grade\nq1,lava,d3,1\nq1,lava,d3,0\n", "row 3: query 'q1', document 'd3' was graded 1"),
    ("query_id,query,doc_id,grade\nq1,lava,d3,1\nq1,basalt,d4,0\n", "row 3: query 'q1' has another text"),
    ("query_id,query,doc_id,grade\nq1,lava,d3,\n", "no row has a grade yet"),
    ("query_id,doc_id,grade\nq1,d3,1\n", "missing column(s) query"),
])
def test_a_bad_sheet_is_an_error_naming_the_row_and_field(tmp_path, content, message):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(content, encoding="utf-8")
    with pytest.raises(JudgeError, match=rf"{sheet}: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        import_sheet(sheet, tmp_path / "out")
    assert not (tmp_path / "out" / "qrels" / "test.tsv").exists()  # nothing half-written


def test_jsonl_sheets_and_queries_files_round_trip(tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "a", "text": "lava"}) + "\n", encoding="utf-8")
    assert read_queries(tmp_path / "q.jsonl") == {"a": "lava"}
    # A byte-order mark and CRLF line ends (a Windows editor) are read as the data they are.
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"_id": "a", "text": "lava"}).encode() + b"\r\n")
    assert read_queries(tmp_path / "bom.jsonl") == {"a": "lava"}
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfwhat is lava\r\nbasalt flows\r\n")
    assert read_queries(tmp_path / "bom.txt") == {"q1": "what is lava", "q2": "basalt flows"}
    (tmp_path / "dup.txt").write_text("", encoding="utf-8")
    with pytest.raises(JudgeError, match="no queries in it"):
        read_queries(tmp_path / "dup.txt")
    sheet = tmp_path / "s.jsonl"
    sheet.write_text(json.dumps({"query_id": "a", "query": "lava", "doc_id": "d3", "grade": 3}) + "\n", encoding="utf-8")
    assert import_sheet(sheet, tmp_path / "out")["relevant"] == 1
    assert (tmp_path / "out/qrels/test.tsv").read_text().splitlines()[1] == "a\td3\t3"


def test_sheets_saved_with_a_byte_order_mark_and_crlf_import(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark and ends lines with CRLF; a quoted cell may hold a line
    break. A JSONL sheet's passage may hold U+2028 or U+0085, which are not line ends in JSONL."""
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"\xef\xbb\xbfquery_id,query,doc_id,title,passage,grade,note\r\n"
                      b'q1,lava flows,d3,Volcanoes,"Lava cools.\r\nInto basalt.",2,\r\n'
                      b"q1,lava flows,d4,Glaciers,Ice moves.,0,\r\n"
                      b"q2,penguins,d2,Penguins,They swim.,,\r\n")
    counts = import_sheet(sheet, tmp_path / "out")
    assert (counts["queries"], counts["judgments"], counts["relevant"], counts["blank"]) == (1, 2, 1, 1)
    assert (tmp_path / "out/queries.jsonl").read_text(encoding="utf-8") == '{"_id": "q1", "text": "lava flows"}\n'
    assert (tmp_path / "out/qrels/test.tsv").read_text().splitlines() == [
        "query-id\tcorpus-id\tscore", "q1\td3\t2", "q1\td4\t0"]
    rows = [{"query_id": "a", "query": "lava", "doc_id": "d3", "passage": "one\u2028two\x85three", "grade": 1},
            {"query_id": "a", "query": "lava", "doc_id": "d4", "passage": "", "grade": 0}]
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\r\n" for r in rows))
    assert import_sheet(jsonl, tmp_path / "out2")["judgments"] == 2


def test_a_sheet_that_is_not_utf8_is_an_error_naming_the_line(tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"query_id,query,doc_id,grade\r\nq1,caf\xe9,d3,1\r\n")  # saved as Latin-1
    with pytest.raises(JudgeError, match=rf"{sheet}: line 2: not UTF-8 \(byte 36 of the file\); save the sheet as UTF-8"):
        import_sheet(sheet, tmp_path / "out")
