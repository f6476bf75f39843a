"""Reranking: query likelihood under a causal LM, the rerank of a run's top documents, rerank systems in the
evaluate stage, and the query-likelihood teacher."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import paths
from conftest import Project
from irforge.contract import read_artifact
from irforge.corpus import passage_text
from irforge.engine import run_stage
from irforge.evaluation import choose_passages, rerank_query
from stages.evaluate import EvaluateConfig
from tiny_llm import build_tiny_llama
from trainkit import make_project


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    return str(build_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama"))


def _likelihood(model: str, max_passage_tokens: int = 24, batch_size: int = 2):
    from irforge.generation import Generator, QueryLikelihood

    return QueryLikelihood(Generator(model, dtype="float32"), max_passage_tokens, batch_size)


def test_query_likelihood_equals_the_unpadded_forward_pass_of_each_pair(tiny_llama) -> None:
    """Batched, left-padded scoring gives each passage the mean log-prob a lone forward pass gives it."""
    import torch

    ql = _likelihood(tiny_llama)
    passages = ["lava cools into basalt", "penguins are flightless birds of the southern hemisphere and swim fast",
                "ice", "telescopes collect light from distant galaxies and stars " * 6]  # the last one is cut
    query = "where does basalt come from"
    scores = ql.score(query, passages)
    query_ids = ql._ids(" " + query)
    for passage, got in zip(passages, scores, strict=True):
        prompt = ql.prompt_ids(passage)
        ids = torch.tensor([prompt + query_ids])
        with torch.inference_mode():
            logprobs = torch.log_softmax(ql.generator.model(input_ids=ids).logits[0].float(), -1)
        expected = np.mean([float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(query_ids)])
        assert got == pytest.approx(expected, abs=1e-4)
    assert len(ql.prompt_ids(passages[3])) == len(ql._start) + 24 + len(ql._end)
    # A passage's score does not depend on its batch-mates.
    assert ql.score(query, passages[2:3])[0] == pytest.approx(scores[2], abs=1e-4)


def _overlap_scorer(query: str, chunks) -> np.ndarray:
    terms = set(query.split())
    return np.array([float(len(terms & set(c["text"].split()))) for c in chunks])


def test_rerank_query_reorders_the_top_depth_and_keeps_the_tail() -> None:
    passages = {d: [{"text": t}] for d, t in
                {"a": "x", "b": "lava", "c": "lava basalt", "d": "nothing", "e": "lava basalt cone"}.items()}
    hits = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 6.0), ("e", 5.0)]
    ranked = rerank_query("lava basalt cone", hits, passages, _overlap_scorer, depth=3, max_passages=2)
    assert [d for d, _ in ranked] == ["c", "b", "a", "d", "e"]  # e is below the depth: never promoted
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    # RRF with the first stage: c (1st by the reranker, 3rd first) ties a (3rd, 1st), the first stage breaks the
    # tie; b (2nd, 2nd) is just below them: 2 / 62 < 1 / 61 + 1 / 63.
    fused = rerank_query("lava basalt cone", hits, passages, _overlap_scorer, depth=3, max_passages=2, fusion="rrf")
    assert [d for d, _ in fused] == ["a", "c", "b", "d", "e"]
    with pytest.raises(ValueError, match="fusion must be none or rrf"):
        rerank_query("q", hits, passages, _overlap_scorer, depth=3, max_passages=1, fusion="mean")


def test_a_document_counts_by_its_best_passage_among_those_sharing_most_words() -> None:
    chunks = [{"text": "intro words"}, {"text": "lava flows"}, {"text": "other"}, {"text": "lava basalt"}]
    assert choose_passages("lava basalt", chunks, 2) == [chunks[1], chunks[3]]  # in passage order
    assert choose_passages("lava basalt", chunks, 9) == chunks
    passages = {"a": [{"text": "x"}, {"text": "lava basalt"}], "b": [{"text": "lava"}]}
    ranked = rerank_query("lava basalt", [("b", 2.0), ("a", 1.0)], passages, _overlap_scorer, depth=2, max_passages=1)
    assert [d for d, _ in ranked] == ["a", "b"]


@pytest.mark.parametrize(("rerank", "error"), [
    ({"x": {"system": "nope", "kind": "qlm", "model": "m"}}, "evaluate.rerank.x.system: 'nope' must be another run"),
    ({"bm25": {"system": "bm25", "kind": "qlm", "model": "m"}}, "evaluate.rerank: 'bm25' is already a system"),
    ({"x": {"system": "bm25", "kind": "t5", "model": "m"}}, "t5"),
    ({"x": {"system": "bm25", "kind": "qlm", "model": "m", "depth": 0}}, "depth"),
])
def test_rerank_config_errors_name_the_key(rerank, error) -> None:
    with pytest.raises(ValueError, match=error):
        EvaluateConfig(systems=["bm25"], feedback={}, rerank=rerank, fusions=[], compare=[])


def test_a_rerank_can_rerank_a_fusion_and_be_fused_in_order() -> None:
    cfg = EvaluateConfig(systems=["bm25", "dense"], feedback={}, fusions=[["bm25", "dense"], ["bm25", "r"]],
                         rerank={"r": {"system": "rrf(bm25+dense)", "kind": "qlm", "model": "m"}}, compare=[["r", "bm25"]])
    assert cfg.derived_order() == ["rrf(bm25+dense)", "r", "rrf(bm25+r)"]


def test_rerank_system_is_evaluated_like_any_other(evaluated_copy: Project, tiny_llama: str) -> None:
    evaluate = evaluated_copy.params.section("evaluate")
    evaluated_copy.set_params(evaluate={**evaluate, "rerank": {"bm25-qlm": {
        "system": "bm25", "kind": "qlm", "model": tiny_llama, "depth": 3, "dtype": "float32", "max_length": 32}},
        "fusions": [["bm25", "bm25-qlm"]], "compare": [["bm25-qlm", "bm25"]]})
    result = evaluated_copy.run("evaluate")
    assert result["systems"] == ["bm25", "bm25-qlm", "rrf(bm25+bm25-qlm)"]
    metrics = result["metrics"]
    assert metrics["bm25-qlm"]["latency_mean_ms"] > metrics["bm25"]["latency_mean_ms"]  # first stage + rerank
    assert "delta_vs_bm25" in metrics["bm25-qlm"]["test"]
    runs = pq.read_table(evaluated_copy.root / paths.RUNS).to_pylist()
    ranked = {s: {} for s in ("bm25", "bm25-qlm")}
    for row in sorted(runs, key=lambda r: r["rank"]):
        if row["system"] in ranked:
            ranked[row["system"]].setdefault(row["query_id"], []).append(row["doc_id"])
    chunks = {}
    for c in pq.read_table(evaluated_copy.root / paths.CHUNKS).to_pylist():
        chunks.setdefault(c["doc_id"], []).append(c)
    queries = {r["query_id"]: r["text"] for r in pq.read_table(evaluated_copy.root / paths.QUERIES).to_pylist()}
    ql = _likelihood(tiny_llama, max_passage_tokens=32)
    for qid, first in ranked["bm25"].items():
        got = ranked["bm25-qlm"][qid]
        assert got[3:] == first[3:]  # below the depth, the first stage's order
        best = {d: max(ql.score(queries[qid], [passage_text(c["title"], c["text"])
                                               for c in choose_passages(queries[qid], chunks[d], 2)]))
                for d in first[:3]}
        assert got[:3] == sorted(first[:3], key=lambda d: (-best[d], first.index(d)))


def test_query_likelihood_teacher_scores_pairs_with_the_lm(tmp_path, tiny_models, tiny_llama) -> None:
    params = make_project(tmp_path / "p", tiny_models, **{"teach.teachers": {
        "qlm": {"kind": "qlm", "model": tiny_llama, "max_length": 24, "dtype": "float32"}}})
    metrics = run_stage("teach", tmp_path / "p", params)
    rows = read_artifact(tmp_path / "p" / paths.TEACHER_SCORES, "teacher_scores").to_pylist()
    first = read_artifact(tmp_path / "p" / paths.TRIPLES, "triples").to_pylist()[0]
    chunks = {c["chunk_id"]: c for c in read_artifact(tmp_path / "p" / paths.CHUNKS, "chunks").to_pylist()}
    ids = [first["positive_id"], *(n["chunk_id"] for n in sorted(first["negatives"], key=lambda n: n["rank"]))]
    expected = _likelihood(tiny_llama).score(first["query"], [passage_text(chunks[c]["title"], chunks[c]["text"])
                                                             for c in ids])
    got = {r["chunk_id"]: r["score"] for r in rows if r["teacher"] == "qlm" and r["query_id"] == first["query_id"]}
    np.testing.assert_allclose([got[c] for c in ids], expected, atol=1e-4)
    assert set(metrics["agreement"]) == {"qlm", "combined"}


def test_preset_runs_only_what_its_keys_touch_in_its_own_folder(evaluated_copy: Project) -> None:
    import json

    from typer.testing import CliRunner

    from irforge.cli import app

    root = evaluated_copy.root
    (root / "params-fast.yaml").write_text(
        "evaluate.feedback.bm25-rm3: {system: bm25, method: rm3, docs: 2, terms: 5}\n"
        "evaluate.compare: [[bm25-rm3, bm25]]\n", encoding="utf-8")
    before = (root / paths.METRICS).read_bytes()
    result = CliRunner().invoke(app, ["preset", str(root / "params-fast.yaml"), "--root", str(root),
                                      "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    row = json.loads((root / "runs/fast/preset.json").read_text())
    assert list(row["stage_seconds"]) == ["evaluate", "report"]  # chunk, judgments and the index are linked
    assert (root / "runs/fast" / paths.CHUNKS).is_symlink()
    metrics = json.loads((root / "runs/fast" / paths.METRICS).read_text())
    assert "delta_vs_bm25" in metrics["bm25-rm3"] and "bm25-rm3" in result.output
    assert (root / paths.METRICS).read_bytes() == before  # the base project is left as it was
    # Run again with a preset that no longer touches evaluate's params: its outputs are the base's again (links),
    # not the first run's left behind in the folder.
    (root / "params-fast.yaml").write_text("report.examples: 3\n", encoding="utf-8")
    again = CliRunner().invoke(app, ["preset", str(root / "params-fast.yaml"), "--root", str(root),
                                     "--params", str(root / "params.yaml")])
    assert again.exit_code == 0, again.output
    assert (root / "runs/fast" / paths.METRICS).is_symlink()
    assert "bm25-rm3" not in json.loads((root / "runs/fast" / paths.METRICS).read_text())
    (root / "params-bad.yaml").write_text("- just a list\n", encoding="utf-8")
    bad = CliRunner().invoke(app, ["preset", str(root / "params-bad.yaml"), "--root", str(root)])
    assert "expected a YAML mapping of dotted params keys" in str(bad.exception)  # main() prints it on one line
