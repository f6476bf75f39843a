"""Dev/test splits of the judged queries, pseudo-relevance feedback systems (RM3, vector Rocchio), and the
count of queries a system's query length cuts."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import paths
from conftest import QRELS, Project
from irforge import retrieval
from irforge.config import ParamsError
from irforge.corpus import split_queries
from irforge.retrieval import VectorRocchio
from stages.evaluate import EvaluateConfig
from trainkit import Encoders

# ---------------------------------------------------------------- splits


def test_split_is_seeded_sized_and_stable_when_queries_are_added() -> None:
    ids = [str(i) for i in range(100)]
    split = split_queries(ids, 25, seed=13)
    assert sum(s == "dev" for s in split.values()) == 25 and set(split.values()) == {"dev", "test"}
    assert split == split_queries(list(reversed(ids)), 25, seed=13)  # order of the input does not matter
    assert split != split_queries(ids, 25, seed=14)
    # A new query can take a dev place, but no old query moves from dev to test except the one it displaced.
    grown = split_queries([*ids, "new"], 25, seed=13)
    moved = [q for q in ids if grown[q] != split[q]]
    assert len(moved) <= 1


def test_queries_artifact_carries_the_split_and_metrics_report_each_split(evaluated_project: Project) -> None:
    root = evaluated_project.root
    rows = pq.read_table(root / paths.QUERIES).to_pylist()
    splits = {r["query_id"]: r["split"] for r in rows}
    assert splits["q6"] == "unjudged"  # no judgments
    judged = sorted({q for q, _, _ in QRELS})
    assert sorted(splits[q] for q in judged) == ["dev", "test", "test", "test", "test"]  # at most a third is dev
    metrics = json.loads((root / paths.METRICS).read_text())["bm25"]
    per_query = [r for r in pq.read_table(root / paths.PER_QUERY).to_pylist() if r["measure"] == "nDCG@10"]
    for split in ("dev", "test"):
        values = [r["value"] for r in per_query if splits[r["query_id"]] == split]
        assert metrics[split]["nDCG@10"] == pytest.approx(np.mean(values), abs=1e-4)
    assert metrics["nDCG@10"] == pytest.approx(np.mean([r["value"] for r in per_query]), abs=1e-4)


def test_dev_queries_is_capped_at_a_third_of_the_judged_queries(evaluated_copy: Project) -> None:
    evaluated_copy.set_params(judgments={"dev_queries": 0})
    assert evaluated_copy.run("judgments")["dev"] == 0
    evaluated_copy.set_params(judgments={"dev_queries": 100})
    assert evaluated_copy.run("judgments") | {} == {"queries": 6, "judged_queries": 5, "judgments": 6, "dev": 1,
                                                    "test": 4, "unknown_dropped": 0}


# ---------------------------------------------------------------- feedback systems


def test_rm3_feedback_system_is_evaluated_and_can_be_fused(evaluated_copy: Project) -> None:
    evaluate = evaluated_copy.params.section("evaluate")
    evaluated_copy.set_params(evaluate={**evaluate, "feedback": {"bm25-rm3": {"system": "bm25", "method": "rm3",
                                                                              "docs": 2, "terms": 5}},
                                        "fusions": [["bm25", "bm25-rm3"]],
                                        "compare": [["bm25-rm3", "bm25"]]})
    result = evaluated_copy.run("evaluate")
    assert result["systems"] == ["bm25", "bm25-rm3", "rrf(bm25+bm25-rm3)"]
    metrics = result["metrics"]
    assert "delta_vs_bm25" in metrics["bm25-rm3"] and "delta_vs_bm25" in metrics["bm25-rm3"]["test"]
    assert metrics["bm25-rm3"]["latency_mean_ms"] > 0
    # RM3 searches an expanded, re-weighted query: same documents here, other scores.
    runs = pq.read_table(evaluated_copy.root / paths.RUNS).to_pylist()
    by_system = {s: {(r["query_id"], r["doc_id"]): r["score"] for r in runs if r["system"] == s}
                 for s in ("bm25", "bm25-rm3")}
    assert by_system["bm25"].keys() == by_system["bm25-rm3"].keys()
    assert all(abs(by_system["bm25"][k] - by_system["bm25-rm3"][k]) > 1e-6 for k in by_system["bm25"])


@pytest.mark.parametrize(("feedback", "error"), [
    ({"x": {"system": "nope"}}, "evaluate.feedback.x.system: 'nope' is not in evaluate.systems"),
    ({"x": {"system": "bm25", "feedback": "elsewhere"}}, "evaluate.feedback.x.feedback: 'elsewhere' must be self"),
    ({"bm25": {"system": "bm25"}}, "'bm25' is already a system"),
    ({"x": {"system": "bm25", "method": "rm4"}}, "rm4"),
])
def test_feedback_config_errors_name_the_key(feedback, error) -> None:
    with pytest.raises(ValueError, match=error):
        EvaluateConfig(systems=["bm25", "dense"], feedback=feedback, fusions=[], compare=[])


def test_a_fusion_feeding_a_feedback_system_it_contains_is_a_cycle() -> None:
    with pytest.raises(ValueError, match=r"cycle: rrf\(bm25\+x\), x"):
        EvaluateConfig(systems=["bm25", "dense"], feedback={"x": {"system": "dense", "feedback": "rrf(bm25+x)"}},
                       fusions=[["bm25", "x"]], compare=[])
    ok = EvaluateConfig(systems=["bm25", "dense"], feedback={"x": {"system": "dense", "feedback": "rrf(bm25+dense)"}},
                        fusions=[["bm25", "dense"], ["bm25", "x"]], compare=[["x", "dense"]])
    assert ok.derived_order() == ["rrf(bm25+dense)", "x", "rrf(bm25+x)"]


def test_bm25_feedback_from_another_run_is_refused_at_search_time(evaluated_copy: Project) -> None:
    evaluate = evaluated_copy.params.section("evaluate")
    evaluated_copy.set_params(evaluate={**evaluate, "systems": ["bm25"], "fusions": [], "compare": [],
                                        "feedback": {"a": {"system": "bm25"},
                                                     "b": {"system": "bm25", "method": "rm3", "feedback": "a"}}})
    with pytest.raises((ValueError, ParamsError), match="BM25 feedback .* comes from the system's own top documents"):
        evaluated_copy.run("evaluate")


def _tiny_faiss(tmp_path, tiny_models, texts: list[str], ids: list[str]):
    from irforge.models.dense import DenseEncoder

    vectors = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=16).encode(texts)
    index = tmp_path / "faiss"
    index.mkdir()
    retrieval.save_faiss(retrieval.build_faiss(vectors), ids, index)
    retrieval.write_system(index, {"kind": "faiss", "model": str(tiny_models["dense"]), "query_max_length": 16})
    return retrieval.open_system(index, Encoders(tmp_path / "cache"), k1=0.9, b=0.4), vectors


def test_vector_rocchio_moves_the_query_to_the_closest_passage_of_each_feedback_document(tmp_path, tiny_models):
    texts = ["wing flutter at speed", "shock waves on a cone", "heat transfer in a boundary layer",
             "orbit of a satellite", "nozzle flow expansion", "flutter of panels"]
    ids = ["a#0", "a#1", "b#0", "c#0", "d#0", "e#0"]
    retriever, vectors = _tiny_faiss(tmp_path, tiny_models, texts, ids)
    query = retriever.encoder.encode(["heat"])[0]
    rocchio = VectorRocchio(retriever, docs=2, alpha=1.0, beta=0.5)
    moved = rocchio.query_vectors({"q": "heat"}, {"q": [("a", 3.0), ("c", 2.0), ("b", 1.0)]})[0]
    closest_a = vectors[int(np.argmax(vectors[:2] @ query))]  # document a has two passages: the closer one counts
    expected = query + 0.5 * (closest_a + vectors[3]) / 2
    np.testing.assert_allclose(moved, expected / np.linalg.norm(expected), atol=1e-5)
    # No feedback documents: the query is searched as it is.
    np.testing.assert_allclose(rocchio.query_vectors({"q": "heat"}, {"q": []})[0], query, atol=1e-6)
    # A heavy beta pulls the feedback document to the top.
    pulled = VectorRocchio(retriever, docs=1, alpha=0.0, beta=1.0).given({"q": [("d", 1.0)]}).search({"q": "heat"}, 2)
    assert pulled["q"][0][0] == "d#0"


def test_truncated_counts_queries_longer_than_the_query_length(tmp_path, tiny_models) -> None:
    from irforge.models.dense import DenseEncoder

    encoder = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=8)
    assert encoder.truncated(["short query", " ".join(["word"] * 20), "a b c d e f"]) == 1


def test_sparse_rocchio_moves_a_splade_query_to_the_closest_passage_of_each_feedback_document(tmp_path, tiny_models):
    from irforge.models.splade import SpladeEncoder
    from irforge.retrieval import SparseRocchio
    from irforge.retrieval.feedback import sparse_dot
    from irforge.retrieval.lucene import MAX_QUERY_TERMS

    texts = ["wing flutter at speed", "shock waves on a cone", "heat transfer in a boundary layer",
             "orbit of a satellite", "nozzle flow expansion", "flutter of panels"]
    ids = ["a#0", "a#1", "b#0", "c#0", "d#0", "e#0"]
    rows = [{"chunk_id": c, "doc_id": c.split("#")[0], "title": "", "text": t, "content_hash": f"h{i}"}
            for i, (c, t) in enumerate(zip(ids, texts, strict=True))]
    encoder = SpladeEncoder(str(tiny_models["splade"]), tmp_path / "cache", max_length=16)
    vectors = encoder.encode_chunks(rows, 100.0)
    index = tmp_path / "impact"
    retrieval.build_impact_index(zip(ids, vectors, strict=True), index, threads=1)
    retrieval.write_system(index, {"kind": "impact", "model": str(tiny_models["splade"]), "scale": 100.0,
                                   "query_max_length": 16})
    retriever = retrieval.open_system(index, Encoders(tmp_path / "cache"), k1=0.9, b=0.4)
    passages = {}
    for row in rows:
        passages.setdefault(row["doc_id"], []).append(row)
    query = retriever.encode_queries(["heat"])[0]
    rocchio = SparseRocchio(retriever, passages, docs=2, alpha=1.0, beta=0.5)
    moved = rocchio.query_vectors({"q": "heat"}, {"q": [("a", 3.0), ("c", 2.0), ("b", 1.0)]})[0]
    closest_a = max(vectors[:2], key=lambda v: sparse_dot(query, v))  # document a has two passages: the closer counts
    terms = set(query) | set(closest_a) | set(vectors[3])
    expected = {t: round(query.get(t, 0) + 0.5 * (closest_a.get(t, 0) + vectors[3].get(t, 0)) / 2) for t in terms}
    heaviest = sorted(((t, w) for t, w in expected.items() if w > 0), key=lambda tw: (-tw[1], tw[0]))
    assert len(expected) > MAX_QUERY_TERMS and moved == dict(heaviest[:MAX_QUERY_TERMS])  # random weights: every term
    assert rocchio.query_vectors({"q": "heat"}, {"q": []})[0] == query  # no feedback documents: as it is
    pulled = SparseRocchio(retriever, passages, docs=1, alpha=0.0, beta=1.0).given({"q": [("d", 1.0)]})
    assert pulled.search({"q": "heat"}, 2)["q"][0][0] == "d#0"
    with pytest.raises(ValueError, match="needs the chunks"):
        SparseRocchio(retriever, {}, docs=1)
    retriever.close()


def test_splade_feedback_makes_evaluate_read_the_chunks() -> None:
    from irforge.config import Params
    from irforge.engine import validate
    from irforge.engine.dag import nodes
    from stages.evaluate import reads_passages

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    base = Params.load(repo / "params.yaml")
    assert not reads_passages(validate(base))
    config = validate(base.with_overrides({"evaluate.feedback.splade-zs-prf": {
        "system": "splade-zs", "feedback": "rrf(bm25+splade-zs)", "docs": 3, "beta": 1.0}}))
    assert reads_passages(config)
    evaluate = next(n for n in nodes(config) if n.key == "evaluate")
    assert "artifacts/chunk/chunks.parquet" in [str(i.path) for i in evaluate.inputs]
