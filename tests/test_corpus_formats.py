"""Corpus formats and text encodings: CSV and TSV corpora (quoting, line numbers, malformed records), `auto` by
extension, and a UTF-8 byte-order mark and CRLF line ends accepted in every text input (JSONL and BEIR corpora,
folder files, queries.jsonl, qrels)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import paths
from conftest import Project
from irforge.config import CorpusConfig
from irforge.contract.artifacts import read_provenance, sha256_file
from irforge.corpus import (
    BadRow,
    CorpusError,
    Document,
    JudgmentsError,
    detect_format,
    load_documents,
    load_qrels,
    load_queries,
    read_corpus,
)

BOM = b"\xef\xbb\xbf"


def _read(path: Path, **corpus) -> list[Document | BadRow]:
    return list(read_corpus(path, CorpusConfig(path=str(path), **corpus)))


def _docs(items) -> list[tuple[str, str, str, int]]:
    return [(d.doc_id, d.title, d.text, d.line) for d in items if isinstance(d, Document)]


def _bad(items) -> list[tuple[str, int, str | None, str]]:
    return [(b.source, b.line, b.field, b.reason) for b in items if isinstance(b, BadRow)]


# ---------------------------------------------------------------- CSV and TSV

# A spreadsheet's CSV: byte-order mark, CRLF, a quoted field holding line breaks, commas and doubled quotes, a
# title-only row, and malformed rows. Physical lines: 1 header, 2-4 doc a1, 5 a2, 6 blank, 7 a3, 8 short row,
# 9 bad UTF-8, 10 stray quote, 11 no id, 12 empty, 13 a4.
CSV = BOM + (
    b'doc,heading,body,extra\r\n'
    b'a1,Wings,"Wings flutter.\r\nPanels, too,\r\nsay ""engineers"".",x\r\n'
    b'a2,,Shock waves form on cones.,\r\n'
    b'\r\n'
    b'a3,Boundary layers,,\r\n'
    b'short,row\r\n'
    b'b9,Caf\xe9,Coffee.,\r\n'
    b'a5,Stray,"quoted"then text,\r\n'
    b',No id,Some text.,\r\n'
    b'e1,,,\r\n'
    b'a4,Nozzles,Nozzle flow expands.,\r\n'
)
CSV_FIELDS = {"id_field": "doc", "title_field": "heading", "text_field": "body"}


def test_csv_quoting_bom_crlf_and_each_malformed_row_quarantined_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "docs.csv").write_bytes(CSV)
    items = _read(tmp_path / "docs.csv", **CSV_FIELDS)
    assert _docs(items) == [
        ("a1", "Wings", 'Wings flutter.\nPanels, too,\nsay "engineers".', 2),  # CRLF inside the field read as \n
        ("a2", "", "Shock waves form on cones.", 5),
        ("a3", "", "Boundary layers", 7),  # title-only: the title is its text
        ("a4", "Nozzles", "Nozzle flow expands.", 13),
    ]
    bad = _bad(items)
    assert [b[:3] for b in bad] == [("docs.csv", 8, "body"), ("docs.csv", 9, "heading"), ("docs.csv", 10, None),
                                    ("docs.csv", 11, "doc"), ("docs.csv", 12, "body")]
    assert bad[0][3] == "expected 4 fields (as in the header row), found 2"
    assert bad[1][3] == "invalid UTF-8 at byte 6"
    assert bad[2][3].startswith("malformed quoting (',' expected after '\"')")
    assert bad[3][3] == "missing id"
    assert bad[4][3] == "empty document: no title ('heading') and no text ('body')"
    raws = [b.raw for b in items if isinstance(b, BadRow)]
    assert raws[0] == "short,row" and raws[1] == "b9,Caf\ufffd,Coffee.,"  # previews without the line end


def test_an_unclosed_quote_does_not_swallow_the_rows_after_it_silently(tmp_path: Path) -> None:
    (tmp_path / "docs.csv").write_text('id,text\nd1,"never closed\nd2,Second.\nd3,"Third."\n', encoding="utf-8")
    items = _read(tmp_path / "docs.csv", id_field="id")
    assert _docs(items) == []
    [(source, line, _, reason)] = _bad(items)
    assert (source, line) == ("docs.csv", 2)
    assert reason.startswith("malformed quoting (',' expected after '\"') (the record runs over lines 2-4)")
    (tmp_path / "end.csv").write_text('id,text\nd1,Fine.\nd2,"never closed\nd3,Third.\n', encoding="utf-8")
    items = _read(tmp_path / "end.csv", id_field="id")
    assert _docs(items) == [("d1", "", "Fine.", 2)]
    assert _bad(items)[0][3].startswith("unclosed quote: a quoted field runs to the end of the file "
                                        "(the record runs over lines 3-4)")


def test_csv_header_without_the_id_or_text_column_is_an_error_naming_file_column_and_header(tmp_path: Path) -> None:
    (tmp_path / "docs.csv").write_text("id,title,content\nd1,T,x\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"docs.csv: no column 'text' in the header row \(header: id, title, content\)"
                                          r"; set corpus.text_field"):
        _read(tmp_path / "docs.csv", id_field="id")
    with pytest.raises(CorpusError, match=r"docs.csv: no column '_id' in the header row \(header: id, title, content\)"):
        _read(tmp_path / "docs.csv", text_field="content")


def test_csv_fields_longer_than_the_csv_module_default_are_read(tmp_path: Path) -> None:
    long = "word " * 40_000  # 200,000 characters: above csv's default field limit of 131,072
    (tmp_path / "docs.csv").write_text(f'id,text\nbig,"{long}"\nd2,Short.\n', encoding="utf-8")
    assert _docs(_read(tmp_path / "docs.csv", id_field="id")) == [("big", "", long, 2), ("d2", "", "Short.", 3)]


def test_tsv_quoted_and_unquoted(tmp_path: Path) -> None:
    (tmp_path / "docs.tsv").write_bytes(BOM + b'id\ttitle\ttext\r\nt1\tTabs\t"a\tb\r\nc"\r\nt2\t\tplain text\r\n'
                                        b"t3\tToo\tmany\tfields\r\n")
    items = _read(tmp_path / "docs.tsv", id_field="id")
    assert _docs(items) == [("t1", "Tabs", "a\tb\nc", 2), ("t2", "", "plain text", 4)]
    assert _bad(items) == [("docs.tsv", 5, None, "expected 3 fields (as in the header row), found 4")]
    # MS MARCO-style: no quoting, a text may start with a quote. quoting: none keeps it as it is.
    (tmp_path / "marco.tab").write_text('id\ttext\n0\t"The Matrix" is a film.\n1\tA 6" pipe.\n', encoding="utf-8")
    assert _bad(_read(tmp_path / "marco.tab", id_field="id"))[0][1:3] == (2, None)  # double: quarantined, not mangled
    assert _docs(_read(tmp_path / "marco.tab", id_field="id", quoting="none")) == [
        ("0", "", '"The Matrix" is a film.', 2), ("1", "", 'A 6" pipe.', 3)]


def test_auto_tells_csv_and_tsv_by_extension(tmp_path: Path) -> None:
    for name, fmt in [("a.csv", "csv"), ("b.TSV", "tsv"), ("c.tab", "tsv"), ("d.jsonl", "jsonl"),
                      ("e.parquet", "parquet")]:
        (tmp_path / name).write_text("")
        assert detect_format(tmp_path / name) == fmt
    (tmp_path / "x.tsv").write_text("id,text\nd1,comma separated\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"no column 'id' in the header row \(header: id,text\)"):  # read as TSV
        _read(tmp_path / "x.tsv", id_field="id")
    assert _docs(_read(tmp_path / "x.tsv", id_field="id", format="csv")) == [("d1", "", "comma separated", 2)]


def test_csv_corpus_through_the_chunk_stage_with_provenance(project: Project) -> None:
    (project.root / "data" / "docs.csv").write_bytes(CSV)
    corpus = project.params.section("corpus")
    project.set_params(corpus={**corpus, "path": "data/docs.csv", "format": "auto", **CSV_FIELDS})
    project.set_params(chunk={**project.params.section("chunk"), "max_bad_fraction": 0.6})
    summary = project.run("chunk")
    assert summary == {"documents": 4, "quarantined": 5, "skipped": 0, "chunks": 4}
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert [(c["chunk_id"], c["title"], c["text"]) for c in chunks][2] == ("a3#0", "", "Boundary layers")
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["source"], b["line"]) for b in bad] == [("docs.csv", n) for n in (8, 9, 10, 11, 12)]
    prov = read_provenance(project.root / paths.CHUNKS)
    assert [(i["path"], i["kind"], i["sha256"]) for i in prov["inputs"]] == [
        ("data/docs.csv", "corpus", sha256_file(project.root / "data" / "docs.csv"))]
    # Re-indexing reads the corpus through the same function: the same documents.
    loaded = load_documents(project.root, project.config.section("corpus"), 1_000_000)
    assert [d.doc_id for d in loaded.documents] == ["a1", "a2", "a3", "a4"]
    assert loaded.file == project.root / "data" / "docs.csv"


# ---------------------------------------------------------------- byte-order mark and CRLF everywhere


def test_jsonl_and_beir_corpora_with_bom_and_crlf(tmp_path: Path) -> None:
    rows = [{"_id": "d1", "title": "One", "text": "First."}, {"_id": "d2", "title": "Two", "text": "Second."}]
    data = BOM + b"".join(json.dumps(r).encode() + b"\r\n" for r in rows) + b"\r\n"
    (tmp_path / "docs.jsonl").write_bytes(data)
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_bytes(data)
    for path in (tmp_path / "docs.jsonl", tmp_path / "beir"):
        items = _read(path)
        assert _bad(items) == []
        assert _docs(items) == [("d1", "One", "First.", 1), ("d2", "Two", "Second.", 2)]
    # invalid UTF-8 is still a bad row with its line, after a BOM too
    (tmp_path / "bad.jsonl").write_bytes(BOM + b'{"_id": "d1", "text": "ok"}\r\n{"_id": "d2", "text": "caf\xe9"}\r\n')
    assert _bad(_read(tmp_path / "bad.jsonl")) == [("bad.jsonl", 2, None, "invalid UTF-8 at byte 26")]


def test_folder_files_with_bom_and_crlf_and_title_only_files(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_bytes(BOM + b"Line one.\r\nLine two.\r\n")
    (folder / "b.md").write_bytes(BOM + b"---\r\ntitle: Proxies\r\n---\r\n# Heading\r\n\r\nBody text.\r\n")
    (folder / "c.md").write_bytes(BOM + b"# Only a heading\r\n")
    (folder / "d.html").write_bytes(BOM + b"<html><head><title>Just a title</title></head><body></body></html>")
    (folder / "empty.txt").write_bytes(BOM + b"\r\n")
    (folder / "nothing.md").write_bytes(b"<!-- a comment -->\n")
    (folder / "bad.txt").write_bytes(BOM + b"caf\xe9")
    items = _read(folder)
    assert _docs(items) == [("a.txt", "a", "Line one.\nLine two.\n", 0), ("b.md", "Proxies", "Body text.", 0),
                            ("c.md", "", "Only a heading", 0), ("d.html", "", "Just a title", 0)]
    assert [b.blocks for b in items if isinstance(b, Document)][2:] == [None, None]  # plain text: one passage
    assert _bad(items) == [("bad.txt", 0, "text", "invalid UTF-8 at byte 6"),  # counted from the file's start
                           ("empty.txt", 0, "text", "empty document: no title ('title') and no text ('text')"),
                           ("nothing.md", 0, "text", "empty document: no title ('title') and no text ('text')")]


def test_queries_and_qrels_with_bom_and_crlf(tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_bytes(BOM + b'{"_id": "q1", "text": "wing flutter"}\r\n\r\n{"_id": "q2", "text": "shock"}\r\n')
    assert load_queries(queries) == {"q1": "wing flutter", "q2": "shock"}
    qrels = tmp_path / "test.tsv"
    qrels.write_bytes(BOM + b"query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq2\td3\t1\r\n")
    assert load_qrels(qrels) == {"q1": {"d1": 2}, "q2": {"d3": 1}}
    qrels.write_bytes(BOM + b"q1\td1\t1\r\n")  # no header
    assert load_qrels(qrels) == {"q1": {"d1": 1}}
    qrels.write_bytes(BOM + b"query-id\tcorpus-id\tscore\r\nq1\td\xe91\t2\r\n")
    with pytest.raises(JudgmentsError, match=r"test.tsv:2: not UTF-8 \(byte 34 of the file\)"):
        load_qrels(qrels)
