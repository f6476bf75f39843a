"""Every cleaning rule, on hand-written generator outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irforge.config import Params, ParamsError
from irforge.engine import validate
from irforge.generation.cleaning import CleaningRules, clean_chunk, judge, ngram_overlap, strip_echo

PASSAGE = ("experimental investigation of the aerodynamics of a wing in a slipstream . an experimental study of a "
           "wing in a propeller slipstream was made in order to determine the spanwise distribution of the lift increase")


@pytest.mark.parametrize("raw, clean", [
    ("Query: wing lift in slipstream", "wing lift in slipstream"),
    ("Relevant Query: wing lift", "wing lift"),
    ("Good Question: why does lift rise?", "why does lift rise?"),
    ("question 2: lift rise", "lift rise"),
    ('"propeller wash lift"', "propeller wash lift"),
    ("\u201cpropeller wash lift\u201d", "propeller wash lift"),
    ("1. propeller wash lift", "propeller wash lift"),
    ("2) propeller wash lift", "propeller wash lift"),
    ("- propeller wash lift", "propeller wash lift"),
    ("* propeller wash lift", "propeller wash lift"),
    ("Query: \"1. propeller wash lift\"", "propeller wash lift"),
    ("propeller wash lift\nExample 5:\nDocument: ...", "propeller wash lift"),
    ("  spaced out  ", "spaced out"),
    ("2.5 mach inlet", "2.5 mach inlet"),  # a number that is not a list marker stays
])
def test_strip_echo_removes_labels_numbering_bullets_quotes(raw, clean):
    assert strip_echo(raw) == clean


def test_each_rule_names_its_reason():
    rules = CleaningRules(min_words=2, max_words=6, max_chars=60, ngram=3, max_overlap=0.75)
    seen: set[str] = set()
    assert judge("", PASSAGE, rules, seen) == "empty"
    assert judge("lift", PASSAGE, rules, seen) == "too_short"
    assert judge("one two three four five six seven", PASSAGE, rules, seen) == "too_long"
    assert judge("x" * 30 + " " + "y" * 31, PASSAGE, rules, seen) == "too_long"
    assert judge("I’m glad to help", PASSAGE, rules, seen) == "chatter"
    assert judge("search query for this passage", PASSAGE, rules, seen) == "chatter"
    assert judge("aerodynamics of a wing in a slipstream", PASSAGE, rules, seen) == "too_long"
    assert judge("wing in a propeller slipstream", PASSAGE, rules, seen) == "copies_passage"
    assert judge("propeller wash raises wing lift", PASSAGE, rules, seen) is None
    assert judge("Propeller wash raises wing-lift!", PASSAGE, rules, seen) == "duplicate"


def test_ngram_overlap():
    assert ngram_overlap("wing in a propeller slipstream", PASSAGE, 3) == 1.0
    assert ngram_overlap("propeller wash wing lift", PASSAGE, 3) == 0.0
    assert ngram_overlap("propeller slipstream", PASSAGE, 3) == 1.0  # shorter than n: its own length (bigrams)
    assert ngram_overlap("slipstream lift", PASSAGE, 3) == 0.0
    assert ngram_overlap("", PASSAGE, 3) == 0.0


def test_clean_chunk_deduplicates_within_the_chunk_only():
    rules = CleaningRules()
    raw = ["Query: lift from propeller wash", "lift from propeller wash", "spanwise load with running propellers"]
    out = clean_chunk(raw, PASSAGE, rules)
    assert [r for _, r in out] == [None, "duplicate", None]
    assert clean_chunk(raw[1:2], PASSAGE, rules) == [("lift from propeller wash", None)]


def test_rules_from_params_reject_unknown_keys():
    assert CleaningRules(**{"max_words": 9, "chatter": ["foo"]}).chatter == ["foo"]
    with pytest.raises(ValueError, match=r"max_word\s+Extra inputs are not permitted"):
        CleaningRules(**{"max_word": 9})
    # Through params (a stage section's `cleaning` block), the key is named with a hint.
    repo = Path(__file__).resolve().parents[1]
    for stage in ("doc2query", "synthesize"):
        assert validate(Params.load(repo / "params.yaml", {f"{stage}.cleaning": {"max_words": 9, "chatter": ["foo"]}})
                        ).section(stage).cleaning.chatter == ["foo"]
        with pytest.raises(ParamsError, match=rf"{stage}\.cleaning\.max_word: unknown key"):
            validate(Params.load(repo / "params.yaml", {f"{stage}.cleaning.max_word": 9}))


def test_chatter_is_talk_about_the_task_not_a_domain_s_vocabulary():
    """The default phrases catch a model talking about the task, and no human query of the bundled collection
    (nor queries whose domain is queries, help desks or answers) trips them."""
    rules = CleaningRules()
    seen: set[str] = set()
    for talk in ("Sure! Here is a query about wings", "I'm happy to help with that", "The answer is: lift",
                 "a search query for the wing", "what does this passage say about flutter", "As an AI, I think"):
        assert judge(talk, PASSAGE, rules, seen) == "chatter", talk
    for domain in ("forbid extra query parameters", "help desk ticket routing", "answer set programming solvers",
                   "sentence embeddings for retrieval", "passage of air through a nozzle", "i am interested in flutter"):
        assert judge(domain, PASSAGE, rules, seen) is None, domain
    repo = Path(__file__).resolve().parents[1]
    human = [json.loads(line)["text"] for line in (repo / "data/cranfield/queries.jsonl").open(encoding="utf-8")]
    assert len(human) == 225
    tripped = [q for q in human if judge(strip_echo(q), "", CleaningRules(max_words=200, max_chars=2000), set())
               == "chatter"]
    assert tripped == []
