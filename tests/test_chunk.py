"""The chunk stage: window splitting, the tokenizer-based Chunker, input validation with quarantine, readers."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import paths
from conftest import LONG_TEXT, Project
from irforge.config import ParamsError
from irforge.corpus import Chunker, CorpusError, Document, passage_text, sha256_text, split_windows

# ---------------------------------------------------------------- split_windows (pure token arithmetic)


def test_short_input_is_one_window() -> None:
    assert split_windows(10, [0, 4], max_tokens=32, stride=8) == [(0, 10)]


def test_empty_input_has_no_window() -> None:
    assert split_windows(0, [0], max_tokens=32, stride=8) == []


def test_windows_without_sentences_overlap_by_exactly_stride() -> None:
    assert split_windows(100, [0], max_tokens=32, stride=8) == [(0, 32), (24, 56), (48, 80), (72, 100)]


def test_windows_end_on_sentence_boundaries_in_their_second_half() -> None:
    boundaries = [0, 20, 40, 60, 80]
    assert split_windows(100, boundaries, max_tokens=32, stride=0) == [(0, 20), (20, 40), (40, 60), (60, 80), (80, 100)]


def test_sentence_boundary_in_first_half_is_not_used() -> None:
    # Ending at token 10 would waste most of the window: cut at the limit instead.
    assert split_windows(40, [0, 10], max_tokens=32, stride=0) == [(0, 32), (32, 40)]


def test_next_window_starts_at_a_sentence_start_inside_the_overlap() -> None:
    # The first window ends at 30; the overlap [22, 30) holds a sentence start at 26.
    assert split_windows(60, [0, 26, 30], max_tokens=32, stride=8) == [(0, 30), (26, 58), (50, 60)]


def test_large_stride_never_repeats_a_window_end() -> None:
    # The overlap [6, 30) holds no sentence start; the next window must not end at 30 again (it used to,
    # giving (6, 30), (7, 30), ... one redundant passage per token).
    assert split_windows(60, [0, 30], max_tokens=32, stride=24) == [(0, 30), (6, 38), (30, 60)]


def test_sentence_longer_than_window_is_cut() -> None:
    windows = split_windows(100, [0], max_tokens=16, stride=0)
    assert windows == [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 96), (96, 100)]


def test_cuts_inside_a_sentence_fall_between_words() -> None:
    words = list(range(0, 40, 5))  # a word every 5 tokens
    assert split_windows(40, [0], max_tokens=32, stride=0, words=words) == [(0, 30), (30, 40)]
    # the overlap moves back to a word start (a little more overlap, never a sub-word start)
    assert split_windows(40, [0], max_tokens=32, stride=4, words=words) == [(0, 30), (25, 40)]


def test_word_longer_than_window_is_cut() -> None:
    assert split_windows(50, [0], max_tokens=32, stride=0, words=[0]) == [(0, 32), (32, 50)]


def test_windows_cover_every_token_within_the_limit() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 300)
        max_tokens = rng.randint(1, 64)
        stride = rng.randint(0, max_tokens - 1)
        boundaries = sorted({0, *rng.sample(range(n), min(n, rng.randint(0, 20)))})
        words = sorted({0, *rng.sample(range(n), min(n, rng.randint(0, n)))})
        windows = split_windows(n, boundaries, max_tokens, stride, words)
        assert windows[0][0] == 0 and windows[-1][1] == n
        for (s1, e1), (s2, e2) in zip(windows, windows[1:]):
            assert s1 < s2 <= e1 < e2  # progress, no gap
        assert all(0 < e - s <= max_tokens for s, e in windows)


@pytest.mark.parametrize(
    ("max_tokens", "stride", "message"),
    [
        (0, 0, "chunk.max_tokens must be positive"),
        (-5, 0, "chunk.max_tokens must be positive"),
        (32, 32, "chunk.stride must be in [0, max_tokens), got 32 with max_tokens=32"),
        (32, -1, "chunk.stride must be in [0, max_tokens), got -1"),
    ],
)
def test_invalid_window_settings_are_rejected(tokenizer_json: Path, max_tokens: int, stride: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        split_windows(10, [0], max_tokens, stride)
    with pytest.raises(ValueError, match="chunk."):
        Chunker(tokenizer_json, max_tokens, stride)


@pytest.mark.parametrize(("max_tokens", "stride", "key"), [(0, 0, "chunk.max_tokens"), (32, 32, "chunk.stride"),
                                                           (32, -1, "chunk.stride")])
def test_invalid_window_params_fail_validation_before_the_stage_runs(project: Project, max_tokens: int, stride: int,
                                                                     key: str) -> None:
    _set_chunk(project, max_tokens=max_tokens, stride=stride)
    with pytest.raises(ParamsError, match=re.escape(key)):
        project.run("chunk")
    assert not (project.root / "artifacts").exists()


# ---------------------------------------------------------------- Chunker (embedded MiniLM tokenizer)


@pytest.fixture(scope="module")
def chunker(tokenizer_json: Path) -> Chunker:
    return Chunker(tokenizer_json, max_tokens=32, stride=8)


def _check_offsets(doc: Document, rows: list[dict]) -> None:
    for row in rows:
        assert row["text"] == doc.text[row["char_start"] : row["char_end"]]


def test_short_document_is_one_chunk(chunker: Chunker) -> None:
    doc = Document("a", "Title", "Aardvarks dig burrows at night.")
    rows = chunker.split([doc])
    assert len(rows) == 1
    row = rows[0]
    assert (row["chunk_id"], row["doc_id"], row["passage_index"], row["title"]) == ("a#0", "a", 0, "Title")
    assert (row["char_start"], row["char_end"], row["text"]) == (0, len(doc.text), doc.text)
    assert row["n_tokens"] == 9  # aa ##rd ##var ##ks dig burrows at night .


def test_long_document_windows_respect_max_tokens_and_overlap(chunker: Chunker) -> None:
    doc = Document("long", "", LONG_TEXT)
    rows = chunker.split([doc])
    assert len(rows) > 3
    assert [r["chunk_id"] for r in rows] == [f"long#{i}" for i in range(len(rows))]
    assert all(r["n_tokens"] <= 32 for r in rows)
    for prev, nxt in zip(rows, rows[1:]):
        assert nxt["char_start"] < prev["char_end"]  # stride > 0: consecutive passages share text
    assert rows[0]["char_start"] == 0 and rows[-1]["char_end"] == len(LONG_TEXT)
    _check_offsets(doc, rows)
    # Each token count is the true count of the passage's tokens.
    for r in rows:
        assert len(chunker.tokenizer.encode(r["text"], add_special_tokens=False).ids) == r["n_tokens"]


def test_passages_end_on_sentence_ends(chunker: Chunker) -> None:
    rows = chunker.split([Document("long", "", LONG_TEXT)])
    assert all(r["text"].endswith("universe.") for r in rows)


def test_overlap_snaps_to_a_sentence_start(tokenizer_json: Path) -> None:
    # Sentences are 12 tokens; with a 16-token overlap a sentence start always lies inside it.
    rows = Chunker(tokenizer_json, max_tokens=32, stride=16).split([Document("long", "", LONG_TEXT)])
    assert len(rows) > 3
    assert all(r["text"].startswith("Quasars number") and r["text"].endswith("universe.") for r in rows)


def test_sentence_longer_than_max_tokens_is_cut_between_words(tokenizer_json: Path) -> None:
    # One sentence, no punctuation; several words split into sub-word tokens (aerodynamics, brûlée).
    text = " ".join(["aerodynamics of crème brûlée hypersonic flows"] * 8)
    doc = Document("s", "", text)
    rows = Chunker(tokenizer_json, max_tokens=8, stride=3).split([doc])
    assert len(rows) > 4
    assert all(r["n_tokens"] <= 8 for r in rows)
    _check_offsets(doc, rows)
    for r in rows:
        assert r["char_start"] == 0 or text[r["char_start"] - 1] == " ", r
        assert r["char_end"] == len(text) or text[r["char_end"]] == " ", r


def test_offsets_are_exact_with_accents_and_emoji(tokenizer_json: Path) -> None:
    doc = Document("u", "", "Café naïve 😀 crème brûlée. Ünïcödé text here is long enough to split. Another one.")
    rows = Chunker(tokenizer_json, max_tokens=8, stride=2).split([doc])
    assert len(rows) > 2
    _check_offsets(doc, rows)


def test_variation_selectors_are_kept_and_count_as_no_token(tokenizer_json: Path) -> None:
    """U+FE0F (emoji presentation) stays in the passage as written; the tokenizer treats it as the format
    character it is, so "\u26a0\ufe0f" and "\u26a0" are the same tokens and search alike."""
    from tokenizers import Tokenizer

    text = "Caution \u26a0\ufe0f hot surface. Keep hands away \u2764\ufe0f from the flat plate in the tunnel."
    doc = Document("vs", "", text)
    rows = [r for n in (3, 4, 5, 8) for r in Chunker(tokenizer_json, max_tokens=n, stride=1).split([doc])]
    _check_offsets(doc, rows)
    assert all(not r["text"].startswith("\ufe0f") for r in rows)  # a window never ends between a symbol and its mark
    assert ["\u2764\ufe0f" in r["text"] for r in rows if "\u2764" in r["text"]] == [True] * sum("\u2764" in r["text"] for r in rows)
    tokens = Tokenizer.from_file(str(tokenizer_json))
    assert tokens.encode(text).tokens == tokens.encode(text.replace("\ufe0f", "")).tokens


def test_ids_and_hashes_are_stable(chunker: Chunker) -> None:
    doc = Document("long", "Bright objects", LONG_TEXT)
    first, again = chunker.split([doc]), chunker.split([Document("long", "Bright objects", LONG_TEXT)])
    assert first == again
    assert all(r["content_hash"] == sha256_text("Bright objects", r["text"]) for r in first)
    assert len({r["content_hash"] for r in first}) == len(first)
    assert {r["doc_hash"] for r in first} == {sha256_text("long", "Bright objects", LONG_TEXT)}
    # Editing the end of the document keeps the earlier passages (and their hashes); the doc hash changes.
    edited = chunker.split([Document("long", "Bright objects", LONG_TEXT + " Pulsars too.")])
    assert [r["content_hash"] for r in edited[:3]] == [r["content_hash"] for r in first[:3]]
    assert edited[0]["doc_hash"] != first[0]["doc_hash"]


def test_document_without_tokens_gives_no_chunk(chunker: Chunker) -> None:
    assert chunker.split([Document("z", "", "\u200b\u200b")]) == []


def test_a_title_only_document_is_one_passage_holding_its_title_once(project: Project) -> None:
    """A document with a title and no text is a document (its title is its text); one with neither is empty. The
    passage keeps the document's id, so judgments on it still match."""
    docs = [{"_id": "t1", "title": "  Shock waves on slender cones  ", "text": ""},
            {"_id": "t2", "title": "Boundary layers", "text": " \n "},
            {"_id": "e1", "title": "", "text": ""},
            {"_id": "d1", "title": "Aardvarks", "text": "Aardvarks dig burrows."}]
    (project.corpus / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    _set_chunk(project, max_bad_fraction=0.5)
    assert project.run("chunk")["documents"] == 3
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert [(c["chunk_id"], c["doc_id"], c["title"], c["text"]) for c in chunks] == [
        ("t1#0", "t1", "", "Shock waves on slender cones"), ("t2#0", "t2", "", "Boundary layers"),
        ("d1#0", "d1", "Aardvarks", "Aardvarks dig burrows.")]
    assert passage_text(chunks[0]["title"], chunks[0]["text"]) == "Shock waves on slender cones"  # said once
    assert chunks[0]["doc_hash"] == sha256_text("t1", "", "Shock waves on slender cones")  # what re-indexing computes
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["line"], b["doc_id"], b["field"], b["reason"]) for b in bad] == [
        (3, "e1", "text", "empty document: no title ('title') and no text ('text')")]
    # The judgments name the title-only document by its id, which its passage carries.
    (project.corpus / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tt1\t2\n")
    project.run("judgments")
    qrels = pq.read_table(project.root / paths.QRELS).to_pylist()
    assert [(q["query_id"], q["doc_id"]) for q in qrels] == [("q1", "t1")]
    assert {q["doc_id"] for q in qrels} <= {c["doc_id"] for c in chunks}


# ---------------------------------------------------------------- the stage: bad input and quarantine

BAD_LINES: list[tuple[bytes, str | None, str]] = [  # raw line, field blamed, reason (start)
    (b"\xff\xfe not utf-8", None, "invalid UTF-8 at byte 0"),
    (b'{"_id": "x", "text": ', None, "invalid JSON (Expecting value at character 23)"),
    (b"[1, 2]", None, "not a JSON object (found list)"),
    (b'{"title": "t", "text": "no id"}', "_id", "missing id"),
    (b'{"_id": "m1", "title": "t"}', "text", "missing text"),
    (b'{"_id": "e1", "title": " ", "text": "   "}', "text", "empty document: no title ('title') and no text ('text')"),
    (b'{"_id": "d1", "text": "a second d1"}', "_id", "duplicate id (first seen at line 1)"),
    (b'{"_id": "big", "text": "' + b"x" * 200 + b'"}', "text", "oversize document (200 chars > chunk.max_doc_chars=100)"),
    (b'{"_id": "z", "text": "\\u200b\\u200b"}', "text", "no tokens"),
    (b'{"_id": 3.5, "text": "float id"}', "_id", "id must be a string or integer, found float"),
    (b'{"_id": "n1", "text": ["a", "list"]}', "text", "text must be a string, found list"),
]
GOOD = [b'{"_id": "d1", "title": "One", "text": "Aardvarks dig burrows."}',
        b'{"_id": "d2", "title": "Two", "text": "Penguins swim fast."}']


def _bad_corpus(project: Project) -> None:
    lines = [GOOD[0], b"", *[line for line, _, _ in BAD_LINES], GOOD[1]]
    (project.corpus / "corpus.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def _set_chunk(project: Project, **values) -> None:
    project.set_params(chunk={**project.params.section("chunk"), **values})


def test_every_bad_row_is_quarantined_with_file_line_field_reason(project: Project) -> None:
    _bad_corpus(project)
    _set_chunk(project, max_doc_chars=100, max_bad_fraction=1.0)
    summary = project.run("chunk")
    assert summary == {"documents": 2, "quarantined": len(BAD_LINES), "skipped": 0, "chunks": 2}
    rows = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert len(rows) == len(BAD_LINES)
    for row, (line, field, reason) in zip(rows, BAD_LINES):
        assert row["source"] == "corpus.jsonl"
        assert row["line"] == BAD_LINES.index((line, field, reason)) + 3  # good line, blank line, then these
        assert row["field"] == field
        assert row["reason"].startswith(reason), row
        assert row["raw"]
    # rows that failed to parse keep the line; documents rejected after parsing keep their text
    assert [r["raw"][:8] for r in rows[:4]] == [line[:8].decode("utf-8", errors="replace") for line, _, _ in BAD_LINES[:4]]
    assert [(r["doc_id"], r["raw"][:6]) for r in rows[6:9]] == [("d1", "a seco"), ("big", "xxxxxx"), ("z", "\u200b\u200b")]
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert [c["doc_id"] for c in chunks] == ["d1", "d2"]
    assert chunks[0]["text"] == "Aardvarks dig burrows."  # the first d1 wins


def test_too_many_bad_rows_fail_and_keep_the_previous_chunks(project: Project) -> None:
    project.run("chunk")
    before = (project.root / paths.CHUNKS).read_bytes()
    _bad_corpus(project)
    _set_chunk(project, max_doc_chars=100)
    with pytest.raises(CorpusError) as err:
        project.run("chunk")
    n = len(BAD_LINES)
    assert str(err.value) == (
        f"{project.corpus}: {n - 1} of {n + 2} rows ({(n - 1) / (n + 2):.1%}) are bad, above chunk.max_bad_fraction=0.01;"
        " the reasons are in artifacts/chunk/quarantine.parquet (nothing else was written)"
    )  # the tokenless document is only found when chunking, which a failed validation never reaches
    assert (project.root / paths.CHUNKS).read_bytes() == before
    assert pq.read_table(project.root / paths.QUARANTINE).num_rows == n - 1


def test_tokenless_documents_count_against_the_bad_fraction(project: Project) -> None:
    docs = [{"_id": f"d{i}", "text": "Plain words."} for i in range(3)] + [{"_id": "z", "text": "\u200b"}]
    (project.corpus / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    _set_chunk(project, max_bad_fraction=0.2)
    with pytest.raises(CorpusError, match="1 of 4 rows"):
        project.run("chunk")
    assert not (project.root / paths.CHUNKS).exists()
    assert pq.read_table(project.root / paths.QUARANTINE).column("doc_id").to_pylist() == ["z"]


def test_missing_corpus_and_empty_corpus_are_clear_errors(project: Project) -> None:
    (project.corpus / "corpus.jsonl").write_text("\n\n")
    with pytest.raises(CorpusError, match="the corpus has no rows"):
        project.run("chunk")
    corpus = project.params.section("corpus")
    project.set_params(corpus={**corpus, "path": "data/nowhere"})
    with pytest.raises(CorpusError, match=r"data/nowhere: corpus not found \(corpus.path in params.yaml\)"):
        project.run("chunk")
    (project.root / "data" / "corpus.xml").write_text("<docs/>\n")
    project.set_params(corpus={**corpus, "path": "data/corpus.xml"})
    with pytest.raises(CorpusError, match="cannot tell the corpus format from the name; set corpus.format"):
        project.run("chunk")


# ---------------------------------------------------------------- the stage: other corpus formats


def _point_at(project: Project, path: str, **fields) -> None:
    corpus = project.params.section("corpus")
    project.set_params(corpus={**corpus, "path": path, "format": "auto", "queries": None, "qrels": None, **fields})


def test_generic_jsonl_with_custom_field_names(project: Project) -> None:
    rows = [
        {"doc": "a1", "heading": "First", "body": "Aardvarks dig burrows."},
        {"doc": 7, "body": "An integer id and no heading."},
        {"doc": "a3", "heading": "No body"},
        {"doc": "a1", "body": "Duplicate."},
    ]
    (project.root / "data" / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _point_at(project, "data/docs.jsonl", id_field="doc", title_field="heading", text_field="body")
    _set_chunk(project, max_bad_fraction=0.5)
    assert project.run("chunk")["documents"] == 2
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert [(c["chunk_id"], c["title"], c["text"]) for c in chunks] == [
        ("a1#0", "First", "Aardvarks dig burrows."), ("7#0", "", "An integer id and no heading.")]
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["source"], b["line"], b["field"], b["reason"]) for b in bad] == [
        ("docs.jsonl", 3, "body", "missing text"),
        ("docs.jsonl", 4, "doc", "duplicate id (first seen at line 1)"),
    ]


def test_parquet_corpus(project: Project) -> None:
    table = pa.table({
        "id": ["p1", "p2", "p3"],
        "name": ["Alpha", None, "Gamma"],
        "content": ["Alpha particles.", "Beta decay.", None],
    })
    pq.write_table(table, project.root / "data" / "docs.parquet")
    _point_at(project, "data/docs.parquet", id_field="id", title_field="name", text_field="content")
    _set_chunk(project, max_bad_fraction=0.5)
    project.run("chunk")
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert [(c["doc_id"], c["title"], c["text"]) for c in chunks] == [("p1", "Alpha", "Alpha particles."),
                                                                     ("p2", "", "Beta decay.")]
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["source"], b["line"], b["doc_id"], b["field"], b["reason"]) for b in bad] == [
        ("docs.parquet", 3, "p3", "content", "missing text")]


def test_parquet_corpus_without_the_text_column(project: Project) -> None:
    pq.write_table(pa.table({"id": ["p1"], "body": ["x"]}), project.root / "data" / "docs.parquet")
    _point_at(project, "data/docs.parquet", id_field="id", text_field="content")
    with pytest.raises(CorpusError, match=r"docs.parquet: no column 'content' \(columns: id, body\)"):
        project.run("chunk")


def test_folder_of_text_and_markdown_files(project: Project) -> None:
    folder = project.root / "data" / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Plain text about aardvarks.")
    (folder / "sub" / "b.md").write_text("# Penguins\n\nPenguins swim fast.")
    (folder / "ignored.csv").write_text("not,a,document")
    (folder / "broken.txt").write_bytes(b"caf\xe9")
    _point_at(project, "data/notes")
    _set_chunk(project, max_bad_fraction=0.5)
    summary = project.run("chunk")
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert [(c["doc_id"], c["title"], c["text"], c["section"]) for c in chunks] == [
        ("a.txt", "a", "Plain text about aardvarks.", None), ("sub/b.md", "Penguins", "Penguins swim fast.", "Penguins")]
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["source"], b["line"], b["field"], b["reason"]) for b in bad] == [
        ("broken.txt", 0, "text", "invalid UTF-8 at byte 3"),
        ("ignored.csv", 0, None, "skipped: not matched by corpus.include (**/*.md, **/*.markdown, **/*.txt, "
                                 "**/*.html, **/*.htm, **/*.pdf, **/*.docx)")]
    assert summary["quarantined"] == 1 and summary["skipped"] == 1  # a skipped file is listed, not counted as bad


MARKDOWN = """---
title: Behind a Proxy
tags: [deploy]
---
Intro before any heading, see [the guide](https://example.com/guide) and <b>bold</b> text.

# Proxies { #behind-a-proxy }

!!! note "Technical details"
    The proxy sets `X-Forwarded-For`.

## Stripped prefix { #stripped }

```python
def read_main():
    return {"message": "Hello World"}
```

{* ../../docs_src/tutorial001.py hl[8] *}

| Option | Meaning |
|---|---|
| root-path | the prefix |
"""


def test_markdown_is_read_by_structure(tmp_path) -> None:
    from irforge.corpus.markdown import parse_markdown

    doc = parse_markdown(MARKDOWN, "fallback")
    assert doc.title == "Behind a Proxy"  # front matter first, even before the first heading
    assert doc.front_matter["tags"] == ["deploy"] and doc.links == ["https://example.com/guide"]
    assert [(b.text, b.section, b.code) for b in doc.blocks] == [
        ("Intro before any heading, see the guide and bold text.", "", False),
        ("Technical details: The proxy sets X-Forwarded-For.", "Proxies", False),
        ('def read_main():\n    return {"message": "Hello World"}', "Proxies > Stripped prefix", True),
        ("Option | Meaning\nroot-path | the prefix", "Proxies > Stripped prefix", False)]
    assert [b.code for b in parse_markdown(MARKDOWN, "x", code="drop").blocks] == [False, False, False]
    assert parse_markdown("Text first.\n\n## Later heading\n\nMore.", "file").title == "Later heading"
    assert parse_markdown("No heading at all.", "file").title == "file"


def test_markdown_passages_keep_code_whole_and_carry_their_section(project: Project) -> None:
    folder = project.root / "data" / "docs"
    folder.mkdir(parents=True)
    code = "\n".join(f"value_{i} = compute_something({i}, option=True)" for i in range(12))  # > one window
    (folder / "guide.md").write_text(f"# Guide\n\n## Setup\n\nInstall it first. Then run it.\n\n```python\n{code}\n```\n\n"
                                     "## Usage\n\nCall the function with care.\n", encoding="utf-8")
    (folder / "CHANGELOG.md").write_text("# Changes\n\nMany lines.\n", encoding="utf-8")
    _point_at(project, "data/docs", exclude=["CHANGELOG.md"])
    _set_chunk(project, max_tokens=32, stride=4)
    project.run("chunk")
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    assert {c["doc_id"] for c in chunks} == {"guide.md"}
    assert any(c["text"] == code and c["section"] == "Guide > Setup" for c in chunks)  # one piece, never cut
    assert all(c["text"].count("value_0") <= 1 and ("value_11" in c["text"]) == ("value_0" in c["text"])
               for c in chunks)
    usage = next(c for c in chunks if "Call the function" in c["text"])
    assert usage["section"] == "Guide > Usage" and usage["title"] == "Guide > Usage"  # the title is not repeated
    assert "#" not in "".join(c["text"] for c in chunks)
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["source"], b["reason"]) for b in bad] == [("CHANGELOG.md", "skipped: matched by corpus.exclude")]


def test_folder_without_documents_is_an_error(project: Project) -> None:
    (project.root / "data" / "empty").mkdir()
    (project.root / "data" / "empty" / "x.csv").write_text("a")
    _point_at(project, "data/empty")
    with pytest.raises(CorpusError, match=r"no readable file \(.md, .markdown, .txt, .html, .htm, .pdf, .docx\) matches"):
        project.run("chunk")


def _pdf(lines_per_page: list[list[str]], title: str = "") -> bytes:
    """A minimal PDF (standard Helvetica, one text line per entry) with a correct cross-reference table."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]  # 2: the page tree, filled in below
    kids = []
    for lines in lines_per_page:
        stream = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R "
                       "/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    objects.append(f"<< /Title ({title}) >>")
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info {len(objects)} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return out


def test_html_pdf_and_docx_folders_are_read_by_structure(project: Project) -> None:
    import docx

    folder = project.root / "data" / "mixed"
    folder.mkdir(parents=True)
    (folder / "page.html").write_text(
        "<html><head><title>Wing Guide</title><script>var x = 1;</script></head><body><nav>Home | About</nav>"
        "<h1>Wings</h1><p>Wings make <a href='https://x.org'>lift</a>.</p><h2>Flutter</h2><ul><li>Panels flutter."
        "</li></ul><pre>def f():\n    return 1</pre><table><tr><th>Mach</th><th>Load</th></tr></table>"
        "<footer>Copyright</footer></body></html>", encoding="utf-8")
    (folder / "report.pdf").write_bytes(_pdf([["Shock waves on cones."], ["Boundary layers transition."]],
                                             title="Cone Report"))
    (folder / "scan.pdf").write_bytes(_pdf([[]]))  # no text layer
    document = docx.Document()
    document.add_heading("Nozzles", level=1)
    document.add_paragraph("Nozzle flow expands.")
    document.add_heading("Throat", level=2)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "area", "ratio"
    document.save(folder / "notes.docx")
    _point_at(project, "data/mixed")
    _set_chunk(project, max_bad_fraction=0.5)
    project.run("chunk")
    chunks = pq.read_table(project.root / paths.CHUNKS).to_pylist()
    by_doc = {d: [(c["title"], c["section"], c["text"]) for c in chunks if c["doc_id"] == d] for d in
              ("page.html", "report.pdf", "notes.docx")}
    assert by_doc["page.html"] == [("Wing Guide > Wings", "Wings",
                                    "Wings make lift.\n\nPanels flutter.\n\ndef f():\n    return 1\n\nMach | Load")]
    text = "".join(t for _, _, t in by_doc["page.html"])
    assert "var x" not in text and "Home" not in text and "Copyright" not in text and "https" not in text
    assert "def f():\n    return 1" in text and "Mach | Load" in text
    assert by_doc["report.pdf"] == [("Cone Report", None, "Shock waves on cones.\n\nBoundary layers transition.")]
    assert by_doc["notes.docx"][0][0] == "Nozzles" and "Nozzle flow expands.\n\narea | ratio" in by_doc["notes.docx"][0][2]
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["source"], b["reason"]) for b in bad] == [
        ("scan.pdf", "no extractable text (a scanned PDF needs OCR first)")]


def test_ids_with_whitespace_never_reach_a_run_file(project: Project) -> None:
    """A JSONL id with whitespace is quarantined (TREC run lines split on it); a file name with spaces is
    percent-encoded into its id, the same way every time."""
    rows = [{"_id": "a b", "title": "", "text": "Spaced id."}, {"_id": "ok", "title": "", "text": "Fine id."}]
    (project.root / "data" / "ids.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _point_at(project, "data/ids.jsonl")
    _set_chunk(project, max_bad_fraction=0.5)
    project.run("chunk")
    bad = pq.read_table(project.root / paths.QUARANTINE).to_pylist()
    assert [(b["line"], b["doc_id"], b["field"], b["reason"]) for b in bad] == [
        (1, "a b", "_id", "id contains whitespace, which run files (TREC format) cannot hold")]
    folder = project.root / "data" / "named"
    folder.mkdir()
    (folder / "My Notes.md").write_text("# Notes\n\nWings flutter.", encoding="utf-8")
    _point_at(project, "data/named")
    project.run("chunk")
    assert pq.read_table(project.root / paths.CHUNKS).column("doc_id").to_pylist() == ["My%20Notes.md"]
