"""Prompt templates render as documented, and evaluation queries never reach a prompt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from irforge.config import Params
from irforge.corpus import load_queries
from irforge.generation.prompting import (
    Example,
    LeakedTestQueryError,
    check_no_test_queries,
    generic_examples,
    load_template,
    resolve_examples,
    template_names,
)

SHIPPED = {"doc2query", "doc2query-t5", "inpars-vanilla", "inpars-gbq", "promptagator", "question", "keywords", "claim"}


def test_shipped_templates_load_and_show_the_passage():
    assert set(template_names()) >= SHIPPED
    for name in SHIPPED:
        t = load_template(name, generic_examples())
        text = t.render("A TITLE", "the passage text here")
        assert "the passage text here" in text
        assert t.prompt_id.startswith(f"{name}@")


def test_inpars_vanilla_renders_numbered_examples_then_the_document():
    examples = [Example(passage="p one", query="q one"), Example(passage="p two", query="q two")]
    text = load_template("inpars-vanilla", examples).render("t", "the doc")
    assert text == ("Example 1:\nDocument: p one\nRelevant Query: q one\n\n"
                    "Example 2:\nDocument: p two\nRelevant Query: q two\n\n"
                    "Example 3:\nDocument: the doc\nRelevant Query:")


def test_gbq_shows_good_and_bad_questions_and_chat_turns_end_with_the_document():
    examples = [Example(passage="p one", query="good one", bad_query="bad one")]
    t = load_template("inpars-gbq", examples)
    assert "Good Question: good one\nBad Question: bad one" in t.render("t", "doc")
    turns = t.messages("t", "doc")
    assert [m["role"] for m in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"] == "Example 1:\nDocument: p one\nGood Question:"
    assert turns[1]["content"] == "good one\nBad Question: bad one"
    assert turns[2]["content"] == "Example 2:\nDocument: doc\nGood Question:"


def test_promptagator_instruction_becomes_the_system_turn():
    t = load_template("promptagator", generic_examples()[:2])
    turns = t.messages("t", "doc")
    assert turns[0]["role"] == "system" and turns[0]["content"].startswith("Task:")
    assert [m["role"] for m in turns[1:]] == ["user", "assistant"] * 2 + ["user"]
    assert turns[-1]["content"] == "Abstract: doc\nQuery:"


def test_prompt_id_changes_with_examples_and_passage_cap():
    a = load_template("inpars-vanilla", generic_examples()[:2])
    assert a.prompt_id != load_template("inpars-vanilla", generic_examples()[:3]).prompt_id
    assert a.prompt_id != load_template("inpars-vanilla", generic_examples()[:2], max_passage_words=50).prompt_id
    assert a.prompt_id == load_template("inpars-vanilla", generic_examples()[:2]).prompt_id


def test_passage_is_capped_in_words():
    t = load_template("doc2query", max_passage_words=3)
    assert "Passage: one two three\n" in t.render("t", "one two three four five")


def test_bad_templates_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown prompt template"):
        load_template("nope")
    with pytest.raises(ValueError, match="few-shot but no examples"):
        load_template("inpars-vanilla", [])
    bad = tmp_path / "bad.txt"
    bad.write_text("Title: {title}\nQuery:")
    with pytest.raises(ValueError, match="never shows the passage"):
        load_template(str(bad))
    bad.write_text("{passage} {oops}")
    with pytest.raises(ValueError, match="unknown field"):
        load_template(str(bad))


def test_generic_examples_are_not_cranfield_test_queries():
    root = Path(__file__).resolve().parents[1]
    check_no_test_queries(generic_examples(), load_queries(root / "data/cranfield/queries.jsonl"))


def test_test_queries_are_refused_by_text_and_by_id():
    test = {"7": "What is the lift of a wing in a slipstream?"}
    with pytest.raises(LeakedTestQueryError, match="evaluation query"):
        check_no_test_queries([Example(passage="p", query="what is the LIFT of a wing in a slipstream")], test)
    with pytest.raises(LeakedTestQueryError, match="id '7'"):
        check_no_test_queries([Example(passage="p", query="other words", query_id="7")], test)
    check_no_test_queries([Example(passage="p", query="drag of a wing", query_id="8")], test)


def _synth_ctx(tmp_path: Path, examples):
    """A synthesize context in a copy of the project (params + Cranfield data) whose judgments stage has run:
    its ``queries`` artifact holds the Cranfield test queries (corpus.queries)."""
    from irforge.engine import StageContext, nodes, run_stage, validate

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "project"
    shutil.copytree(repo / "data" / "cranfield", root / "data" / "cranfield")
    config = validate(Params.load(repo / "params.yaml", {"synthesize.examples": examples}))
    run_stage("chunk", root, config)  # the judgments stage checks the qrels against the corpus's documents
    run_stage("judgments", root, config)
    return StageContext(next(n for n in nodes(config) if n.key == "synthesize"), root, config)


def test_synthesize_refuses_few_shot_examples_taken_from_the_test_judgments(tmp_path):
    """Pointing `examples` at the evaluation queries/qrels (as if they were training data) fails loudly."""
    from irforge.corpus import queries_of

    ctx = _synth_ctx(tmp_path, {"queries": "data/cranfield/queries.jsonl", "qrels": "data/cranfield/qrels/test.tsv"})
    passages = {str(i): ("t", f"passage {i}") for i in range(1, 1401)}
    examples, _ = resolve_examples(ctx.section("synthesize").examples, ctx.root, 3, 13, passages)
    assert len(examples) == 3
    # What the synthesize stage checks its examples against: the judgments stage's queries artifact.
    test_queries = queries_of(ctx.read("queries"))
    assert len(test_queries) == len(load_queries(ctx.root / "data/cranfield/queries.jsonl")) > 0
    with pytest.raises(LeakedTestQueryError):
        check_no_test_queries(examples, test_queries)


def test_examples_from_a_jsonl_file(tmp_path):
    f = tmp_path / "ex.jsonl"
    f.write_text(json.dumps({"passage": "p", "query": "q q", "bad_query": "b"}) + "\n")
    examples, files = resolve_examples(str(f), tmp_path, 3, 0, {})
    assert examples == [Example(passage="p", query="q q", bad_query="b")] and files == [f]
    f.write_text('{"passage": "p"}\n')
    with pytest.raises(ValueError, match=r"ex.jsonl:1"):
        resolve_examples(str(f), tmp_path, 3, 0, {})


@pytest.mark.parametrize("name", ["inpars-vanilla", "inpars-gbq", "promptagator", "question", "keywords", "claim"])
def test_no_cranfield_test_query_appears_in_any_prompt_outside_the_passage(name):
    """What the synthesize stage shows the model besides the passage (instructions, examples, chat turns) holds
    no evaluation query."""
    import re

    root = Path(__file__).resolve().parents[1]
    norm = lambda t: " ".join(re.findall(r"\w+", t.lower()))  # noqa: E731
    test = [norm(q) for q in load_queries(root / "data/cranfield/queries.jsonl").values()]
    t = load_template(name, generic_examples())
    shown = norm(t.render("", "") + " ".join(m["content"] for m in t.messages("", "")))
    assert not [q for q in test if q in shown]


def test_query_types_are_templates_spread_over_chunks_by_seed():
    from irforge.generation.prompting import load_templates
    from irforge.generation.querygen import assign_templates

    types = load_templates(["question", "keywords", "claim"], generic_examples()[:2])
    assert [t.id for t in types] == ["question", "keywords", "claim"]
    assert types[0].render("", "the doc").endswith("Document: the doc\nQuestion:")
    with pytest.raises(ValueError, match="different ones"):
        load_templates(["question", "question"], generic_examples())
    chunks = [{"chunk_id": f"d{i}#0"} for i in range(300)]
    chosen = [t.id for t in assign_templates(chunks, types, seed=13)]
    assert all(chosen.count(t.id) > 70 for t in types)  # every type used, about a third each
    assert chosen == [t.id for t in assign_templates(chunks, types, seed=13)]
    assert chosen != [t.id for t in assign_templates(chunks, types, seed=14)]
    # a chunk keeps its type when others come and go (the corpus changed)
    fewer = [t.id for t in assign_templates(chunks[::2] + [{"chunk_id": "new#0"}], types, seed=13)]
    assert fewer[:-1] == chosen[::2]
    assert {t.id for t in assign_templates(chunks, types[:1], seed=13)} == {"question"}


def test_dev_split_examples_come_with_a_judged_passage_and_test_queries_are_refused():
    dev = ({"q1": "how do wings stall", "q2": "heat flux at hypersonic speed"}, {"q1": {"d1": 1}, "q2": {"d2": 2}})
    passages = {"d1": ("Stall", "a wing stalls when ..."), "d2": ("Heat", "the heat flux ...")}
    examples, files = resolve_examples("dev", Path("."), 5, 13, passages, dev=dev)
    assert files == [] and sorted((e.query_id, e.passage) for e in examples) == \
        [("q1", "a wing stalls when ..."), ("q2", "the heat flux ...")]
    with pytest.raises(ValueError, match="dev split, but it is empty"):
        resolve_examples("dev", Path("."), 5, 13, passages, dev=({}, {}))
    check_no_test_queries(examples, {"q9": "another question"})  # dev queries checked against test ones only
    with pytest.raises(LeakedTestQueryError, match="evaluation query id 'q2'"):
        check_no_test_queries(examples, {"q2": "heat flux at hypersonic speed"})
