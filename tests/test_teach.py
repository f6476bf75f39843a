"""The teach stage: every teacher's score of every (query, candidate) pair, their z-normalised weighted mixture,
teacher agreement; and BM25 pair scores equal to what a search returns."""

from __future__ import annotations

import json

import numpy as np
import pytest

import paths
from irforge import retrieval
from irforge.contract import read_artifact
from irforge.corpus import passage_text
from irforge.engine import run_stage, validate
from irforge.models.dense import DenseEncoder
from irforge.training.teachers import TeacherConfig, agreement, combine, zscore
from trainkit import _config, _tokenizer_files, make_project


def test_zscore_combine_and_agreement() -> None:
    np.testing.assert_allclose(zscore(np.array([1.0, 2.0, 3.0])), [-1.2247449, 0.0, 1.2247449], atol=1e-6)
    assert zscore(np.array([4.0, 4.0])).tolist() == [0.0, 0.0]  # a teacher that cannot tell them apart says nothing
    raw = {"a": {"q": np.array([3.0, 1.0, 2.0])}, "b": {"q": np.array([10.0, 30.0, 20.0])}}
    mixed = combine(raw, {"a": 3.0, "b": 1.0})["q"]
    np.testing.assert_allclose(mixed, 0.75 * zscore(raw["a"]["q"]) + 0.25 * zscore(raw["b"]["q"]))
    assert agreement(raw["a"]) == 1.0 and agreement(raw["b"]) == 0.0
    assert agreement({"q": np.array([1.0, 1.0])}) == 0.0  # a tie is not agreement
    with pytest.raises(ValueError, match="needs a weight above 0"):
        combine(raw, {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match="a bi-encoder teacher needs a model"):
        TeacherConfig(kind="bi-encoder")


def test_bm25_pair_scores_equal_search_scores(evaluated_project) -> None:
    index = evaluated_project.root / paths.index_dir("bm25")
    hits = retrieval.bm25_search(index, {"q": "lava basalt volcanoes"}, k=3, k1=0.9, b=0.4)["q"]
    scores = retrieval.bm25_pair_scores(index, {"q": "lava basalt volcanoes"}, {"q": [h for h, _ in hits]}, 0.9, 0.4)
    np.testing.assert_allclose(scores["q"], [s for _, s in hits], rtol=1e-5)
    unranked = retrieval.bm25_pair_scores(index, {"q": "lava"}, {"q": ["d2#0"]}, 0.9, 0.4)["q"]
    assert unranked.tolist() == [0.0]  # no shared term


def test_teach_stage_scores_every_candidate_with_every_teacher(tmp_path, tiny_models) -> None:
    params = make_project(tmp_path, tiny_models, **{"teach.teachers": {
        "dense": {"kind": "bi-encoder", "model": str(tiny_models["dense"]), "max_length": 32},
        "splade": {"kind": "splade", "model": str(tiny_models["splade"]), "weight": 0.5, "max_length": 32},
        "bm25": {"kind": "bm25", "weight": 0.25},
    }})
    chunks = read_artifact(tmp_path / paths.CHUNKS, "chunks").to_pylist()
    index = tmp_path / paths.index_dir("bm25")
    retrieval.build_lucene_index(((c["chunk_id"], passage_text(c["title"], c["text"])) for c in chunks), index, 1)
    retrieval.write_system(index, {"kind": "bm25"})
    summary = run_stage("teach", tmp_path, params)

    triples = read_artifact(tmp_path / paths.TRIPLES, "triples").to_pylist()
    rows = read_artifact(tmp_path / paths.TEACHER_SCORES, "teacher_scores").to_pylist()
    n_pairs = sum(1 + len(t["negatives"]) for t in triples)
    assert summary["pairs"] == n_pairs and len(rows) == n_pairs * 4  # three teachers + combined
    by = {(r["teacher"], r["query_id"], r["chunk_id"]): r for r in rows}
    first = triples[0]
    assert by[("dense", first["query_id"], first["positive_id"])]["role"] == "positive"
    # A bi-encoder score is the cosine of the query and the passage.
    encoder = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=32, use_cache=False)
    text = {c["chunk_id"]: passage_text(c["title"], c["text"]) for c in chunks}
    q, p = encoder.encode([first["query"], text[first["positive_id"]]])
    assert by[("dense", first["query_id"], first["positive_id"])]["score"] == pytest.approx(float(q @ p), abs=1e-4)
    # The combined score is the weighted mixture of the z-scores (weights 1, 0.5, 0.25).
    ids = [first["positive_id"], *(n["chunk_id"] for n in sorted(first["negatives"], key=lambda n: n["rank"]))]
    z = {t: np.array([by[(t, first["query_id"], c)]["normalised"] for c in ids]) for t in ("dense", "splade", "bm25")}
    expected = (z["dense"] + 0.5 * z["splade"] + 0.25 * z["bm25"]) / 1.75
    np.testing.assert_allclose([by[("combined", first["query_id"], c)]["score"] for c in ids], expected, atol=1e-9)
    # Agreement: the share of queries whose positive the teacher scores above every negative.
    metrics = json.loads((tmp_path / "artifacts/teach/metrics.json").read_text())["teach"]
    mine = np.mean([by[("bm25", t["query_id"], t["positive_id"])]["score"] >
                    max(by[("bm25", t["query_id"], n["chunk_id"])]["score"] for n in t["negatives"]) for t in triples])
    assert metrics["agreement"]["bm25"] == pytest.approx(mine, abs=1e-4)
    assert set(metrics["agreement"]) == {"dense", "splade", "bm25", "combined"}


def test_cross_encoder_teacher_scores_pairs_with_the_model(tmp_path, tiny_models) -> None:
    """A cross-encoder named by folder (a tiny random one here): its logit is each pair's score."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "cross-encoder"
    config = _config()
    config.num_labels = 1
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    _tokenizer_files(folder)
    params = make_project(tmp_path / "p", tiny_models, **{"teach.teachers": {
        "ce": {"kind": "cross-encoder", "model": str(folder), "max_length": 32}}})
    run_stage("teach", tmp_path / "p", params)
    rows = read_artifact(tmp_path / "p" / paths.TEACHER_SCORES, "teacher_scores").to_pylist()
    first = read_artifact(tmp_path / "p" / paths.TRIPLES, "triples").to_pylist()[0]
    chunk = next(c for c in read_artifact(tmp_path / "p" / paths.CHUNKS, "chunks").to_pylist()
                 if c["chunk_id"] == first["positive_id"])
    pair = (first["query"], passage_text(chunk["title"], chunk["text"]))
    expected = CrossEncoder(str(folder), device="cpu", max_length=32).predict([pair])[0]
    got = next(r["score"] for r in rows if r["teacher"] == "ce" and r["query_id"] == first["query_id"]
               and r["chunk_id"] == first["positive_id"])
    assert got == pytest.approx(float(expected), abs=1e-4)


def test_a_bi_encoder_teacher_with_feedback_scores_with_the_moved_query(tmp_path, tiny_models) -> None:
    """Rocchio feedback: the query is moved towards the top passages of its feedback ranking over the whole corpus
    before it scores its candidates; beta 0 leaves it where it was; with BM25 in the ranking, the index is an input."""
    from stages.teach import teacher_inputs

    dense = {"kind": "bi-encoder", "model": str(tiny_models["dense"]), "max_length": 32}
    params = make_project(tmp_path, tiny_models, **{"teach.teachers": {
        "plain": dense,
        "own-top1": dense | {"feedback": {"docs": 1, "alpha": 1.0, "beta": 2.0, "bm25": False}},
        "still": dense | {"feedback": {"docs": 2, "beta": 0.0, "bm25": False}},
    }})
    run_stage("teach", tmp_path, params)
    rows = read_artifact(tmp_path / paths.TEACHER_SCORES, "teacher_scores").to_pylist()
    score = {(r["teacher"], r["query_id"], r["chunk_id"]): r["score"] for r in rows}
    chunks = read_artifact(tmp_path / paths.CHUNKS, "chunks").to_pylist()
    encoder = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=32, use_cache=False)
    passages = encoder.encode([passage_text(c["title"], c["text"]) for c in chunks])
    for t in read_artifact(tmp_path / paths.TRIPLES, "triples").to_pylist()[:3]:
        (q,) = encoder.encode([t["query"]])
        top = passages[int(np.argmax(passages @ q))]  # the query's best passage in the whole corpus
        moved = (q + 2.0 * top) / np.linalg.norm(q + 2.0 * top)
        for c in [t["positive_id"], *(n["chunk_id"] for n in t["negatives"])]:
            p = passages[next(i for i, x in enumerate(chunks) if x["chunk_id"] == c)]
            assert score[("own-top1", t["query_id"], c)] == pytest.approx(float(moved @ p), abs=1e-4)
            assert score[("still", t["query_id"], c)] == pytest.approx(score[("plain", t["query_id"], c)], abs=1e-6)
    assert teacher_inputs(validate(params), None) == []  # no BM25 anywhere
    with_bm25 = params.with_overrides({"teach.teachers": {"prf": dense | {"feedback": {"docs": 3}}}})
    assert teacher_inputs(validate(with_bm25), None) == ["index/bm25"]
    with pytest.raises(ValueError, match="feedback is for bi-encoder teachers"):
        TeacherConfig(kind="bm25", feedback={"docs": 3})


def test_the_zero_shot_ensemble_teacher_takes_feedback_from_bm25(tmp_path, tiny_models) -> None:
    """With ``bm25: true`` the feedback ranking is rrf(bm25 + the model): a query whose BM25 top passage differs
    from the model's own is moved elsewhere than with the model's ranking alone."""
    dense = {"kind": "bi-encoder", "model": str(tiny_models["dense"]), "max_length": 32}
    params = make_project(tmp_path, tiny_models, **{"teach.teachers": {
        "own": dense | {"feedback": {"docs": 1, "bm25": False}},
        "fused": dense | {"feedback": {"docs": 1, "bm25": True}},
    }})
    chunks = read_artifact(tmp_path / paths.CHUNKS, "chunks").to_pylist()
    index = tmp_path / paths.index_dir("bm25")
    retrieval.build_lucene_index(((c["chunk_id"], passage_text(c["title"], c["text"])) for c in chunks), index, 1)
    retrieval.write_system(index, {"kind": "bm25"})
    metrics = run_stage("teach", tmp_path, params)
    assert metrics["teachers"][1]["feedback"]["bm25"] is True  # provenance of the teacher's settings
    rows = read_artifact(tmp_path / paths.TEACHER_SCORES, "teacher_scores").to_pylist()
    own = {(r["query_id"], r["chunk_id"]): r["score"] for r in rows if r["teacher"] == "own"}
    fused = {(r["query_id"], r["chunk_id"]): r["score"] for r in rows if r["teacher"] == "fused"}
    assert own.keys() == fused.keys() and any(abs(own[k] - fused[k]) > 1e-4 for k in own)
