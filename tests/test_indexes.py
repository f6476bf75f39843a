"""Neural indexes against brute force (faiss, Lucene impact), SPLADE pooling, and reciprocal-rank fusion."""

from __future__ import annotations

import numpy as np
import pytest

from irforge import retrieval
from irforge.models.splade import quantise, splade_pool
from irforge.retrieval import reciprocal_rank_fusion
from irforge.training.losses import flops_loss, quadratic_warmup
from trainkit import Encoders

BM25 = {"k1": 0.9, "b": 0.4}


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flat_faiss_matches_brute_force_and_hnsw_agrees():
    rng = np.random.default_rng(0)
    docs, queries = _unit(rng, 500, 32), _unit(rng, 20, 32)
    brute = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    _, flat = retrieval.build_faiss(docs, "flat").search(queries, 10)
    assert (flat == brute).all()
    _, hnsw = retrieval.build_faiss(docs, "hnsw", hnsw_m=16).search(queries, 10)
    recall = np.mean([len(set(h) & set(b)) / 10 for h, b in zip(hnsw, brute, strict=True)])
    assert recall >= 0.9


def test_ivfpq_builds_reproducibly_and_refuses_too_few_vectors():
    rng = np.random.default_rng(1)
    docs = _unit(rng, 400, 32)
    a = retrieval.build_faiss(docs, "ivfpq", ivf_lists=8, pq_m=8, pq_bits=4, seed=3, threads=1)
    b = retrieval.build_faiss(docs, "ivfpq", ivf_lists=8, pq_m=8, pq_bits=4, seed=3, threads=1)
    a.nprobe = b.nprobe = 8
    assert (a.search(docs[:5], 5)[1] == b.search(docs[:5], 5)[1]).all()
    with pytest.raises(ValueError, match="too few"):
        retrieval.build_faiss(docs[:50], "ivfpq", ivf_lists=8, pq_m=8)
    with pytest.raises(ValueError, match="unknown faiss index type"):
        retrieval.build_faiss(docs, "lsh")


def test_faiss_retriever_returns_chunk_ids_by_brute_force_order(tmp_path, tiny_models):
    from irforge.models.dense import DenseEncoder

    texts = [f"passage about topic {w}" for w in ("wing", "shock", "heat", "orbit", "nozzle", "flutter")]
    ids = [f"{i}#0" for i in range(len(texts))]
    vectors = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=16).encode(texts)
    index = tmp_path / "faiss"
    index.mkdir()
    retrieval.save_faiss(retrieval.build_faiss(vectors), ids, index)
    retrieval.write_system(index, {"kind": "faiss", "model": str(tiny_models["dense"]), "query_max_length": 16})
    retriever = retrieval.open_system(index, Encoders(tmp_path / "cache"), **BM25)
    assert isinstance(retriever, retrieval.FaissRetriever)
    run = retriever.search({"q": "topic heat"}, k=3)
    query = retriever.encoder.encode(["topic heat"])[0]
    expected = [ids[i] for i in np.argsort(-(vectors @ query))[:3]]
    assert [doc for doc, _ in run["q"]] == expected


def test_impact_index_returns_the_brute_force_dot_product_ranking(tmp_path, tiny_models):
    rng = np.random.default_rng(0)
    vocab = [f"term{i}" for i in range(40)] + ["##ing", "lift"]
    docs = {}
    for i in range(30):
        terms = rng.choice(len(vocab), 8, replace=False)
        docs[f"d{i}"] = {vocab[t]: int(rng.integers(1, 200)) for t in terms}
    index = tmp_path / "impact"
    assert retrieval.build_impact_index(docs.items(), index, threads=2) == 30
    retrieval.write_system(index, {"kind": "impact", "model": str(tiny_models["splade"]), "scale": 100,
                                   "query_max_length": 16})
    retriever = retrieval.open_system(index, Encoders(tmp_path / "cache"), **BM25)
    assert isinstance(retriever, retrieval.ImpactRetriever)
    queries = [{vocab[t]: int(rng.integers(1, 50)) for t in rng.choice(len(vocab), 5, replace=False)} for _ in range(6)]
    run = retriever.search_vectors(queries, [f"q{j}" for j in range(6)], k=5)
    for j, query in enumerate(queries):
        brute = sorted(((sum(w * d.get(t, 0) for t, w in query.items()), doc) for doc, d in docs.items()), reverse=True)
        got = run[f"q{j}"]
        assert [s for _, s in got] == pytest.approx([float(s) for s, _ in brute[: len(got)]])
        for doc, score in got:  # every returned score is that document's exact dot product
            assert score == pytest.approx(sum(w * docs[doc].get(t, 0) for t, w in query.items()))
    retriever.close()


def test_impact_retriever_encodes_queries_with_the_splade_model(tmp_path, tiny_models):
    from irforge.models.splade import SpladeEncoder

    encoder = SpladeEncoder(str(tiny_models["splade"]), tmp_path / "cache", max_length=16)
    texts = ["wing lift slipstream", "shock wave nose", "heat conduction slab", "orbit drag satellite"]
    vectors = encoder.encode(texts, scale=100)
    index = tmp_path / "impact"
    retrieval.build_impact_index(zip(["a", "b", "c", "d"], vectors, strict=True), index, threads=1)
    retrieval.write_system(index, {"kind": "impact", "model": str(tiny_models["splade"]), "scale": 100,
                                   "query_max_length": 16})
    retriever = retrieval.open_system(index, Encoders(tmp_path / "cache"), **BM25)
    query = retriever.encode_queries(["shock wave"])[0]
    assert 0 < len(query) <= retrieval.MAX_QUERY_TERMS  # a random model activates most of the vocabulary
    brute = max(zip("abcd", vectors, strict=True), key=lambda kv: sum(w * kv[1].get(t, 0) for t, w in query.items()))
    assert retriever.search({"q": "shock wave"}, k=4)["q"][0][0] == brute[0]
    retriever.close()


def test_missing_index_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="system.json"):
        retrieval.open_system(tmp_path, Encoders(tmp_path / "cache"), **BM25)


def test_splade_pooling_is_masked_log_saturated_max():
    import torch

    logits = torch.tensor([[[1.0, -2.0, 0.0], [3.0, 0.5, -1.0], [100.0, 100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third position is padding and must not count
    pooled = splade_pool(logits, mask)
    assert pooled.tolist()[0] == pytest.approx([np.log1p(3.0), np.log1p(0.5), 0.0])
    reps = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    assert float(flops_loss(reps)) == pytest.approx(2.0**2 + 1.0**2)
    assert quadratic_warmup(5, 10) == pytest.approx(0.25) and quadratic_warmup(20, 10) == 1.0


def test_quantise_drops_zeros_and_rounds():
    weights = np.array([[0.0, 0.004, 1.234, 0.5]], dtype=np.float32)
    assert quantise(weights, ["a", "b", "c", "d"], 100) == [{"c": 123, "d": 50}]


def test_reciprocal_rank_fusion_on_hand_made_runs():
    a = {"q": [("d1", 9.0), ("d2", 8.0), ("d3", 7.0)]}
    b = {"q": [("d3", 0.9), ("d1", 0.8)], "r": [("d9", 1.0)]}
    fused = reciprocal_rank_fusion([a, b], k=60)
    expected = {"d1": 1 / 61 + 1 / 62, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61}
    assert [d for d, _ in fused["q"]] == ["d1", "d3", "d2"]
    assert dict(fused["q"]) == pytest.approx(expected)
    assert fused["r"] == [("d9", pytest.approx(1 / 61))]
    assert len(reciprocal_rank_fusion([a, b], k=60, depth=2)["q"]) == 2


def test_auto_faiss_is_exact_for_small_corpora_and_reports_the_recall_an_approximation_costs():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(300, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    assert retrieval.choose_faiss_type("auto", 300, flat_max=1000) == "flat"
    assert retrieval.choose_faiss_type("auto", 3000, flat_max=1000) == "hnsw"
    assert retrieval.choose_faiss_type("ivfpq", 3, flat_max=1000) == "ivfpq"
    assert retrieval.recall_vs_exact(retrieval.build_faiss(docs, "flat"), docs) == 1.0
    coarse = retrieval.build_faiss(docs, "ivfpq", ivf_lists=4, pq_m=4, pq_bits=4, seed=1, threads=1)
    recall = retrieval.recall_vs_exact(coarse, docs)
    assert 0.0 < recall < 1.0  # 4-bit codes lose neighbours, and the measure says how many


def test_splade_passages_are_encoded_once_and_a_changed_passage_only(tmp_path, tiny_models, monkeypatch):
    """The impact index stage's SPLADE vectors go through a row cache by content hash, like the dense ones:
    a re-run encodes nothing, a changed passage is encoded alone, another scale or model reads other rows."""
    from irforge.corpus import sha256_text
    from irforge.models import ImpactCache
    from irforge.models.splade import SpladeEncoder

    texts = ["wing lift slipstream", "shock wave nose", "heat conduction slab", "orbit drag satellite"]
    chunks = [{"chunk_id": f"d{i}#0", "title": "", "text": t, "content_hash": sha256_text(t)} for i, t in enumerate(texts)]
    cache = tmp_path / "cache"
    first = SpladeEncoder(str(tiny_models["splade"]), cache, max_length=16)
    vectors = first.encode_chunks(chunks, scale=100)
    assert vectors == first.encode(texts, scale=100) and (first.cache_hits, first.cache_misses) == (0, 4)

    encoded: list[int] = []
    again = SpladeEncoder(str(tiny_models["splade"]), cache, max_length=16)
    real = again.encode
    monkeypatch.setattr(again, "encode", lambda t, scale, desc="": encoded.append(len(t)) or real(t, scale, desc))
    assert again.encode_chunks(chunks, scale=100) == vectors and encoded == []  # every vector from the cache
    edited = [*chunks[:3], {**chunks[3], "text": "orbit decay", "content_hash": sha256_text("orbit decay")}]
    assert again.encode_chunks(edited, scale=100)[:3] == vectors[:3] and encoded == [1]
    again.encode_chunks(chunks, scale=50)  # another quantisation: other rows
    assert encoded == [1, 4] and (again.cache_hits, again.cache_misses) == (7, 5)
    assert len(ImpactCache(cache / "impacts" / again.fingerprint(100)[:16])) == 5

    off = SpladeEncoder(str(tiny_models["splade"]), tmp_path / "off", max_length=16, use_cache=False)
    assert off.encode_chunks(chunks, scale=100) == vectors and not (tmp_path / "off").exists()
