"""A bi-encoder whose config names query and document prompts (EmbeddingGemma's) reads every query and passage
with them, the title in the prompt's title slot; bfloat16 weights are recorded in the index and used for its
queries too."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from irforge.models import DenseEncoder
from irforge.retrieval import build_faiss_folder, open_system

QUERY, DOCUMENT = "task: search result | query: ", "title: none | text: "


@pytest.fixture
def prompted(tiny_models, tmp_path):
    folder = tmp_path / "prompted"
    shutil.copytree(tiny_models["dense"], folder)
    config = folder / "config_sentence_transformers.json"
    settings = json.loads(config.read_text()) if config.exists() else {}
    settings["prompts"] = {"query": QUERY, "document": DOCUMENT, "Clustering": "task: clustering | query: "}
    config.write_text(json.dumps(settings))
    return folder


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_queries_and_passages_are_read_with_the_models_prompts(prompted, tiny_models, tmp_path) -> None:
    encoder = DenseEncoder(str(prompted), tmp_path / "cache", max_length=64)
    assert (encoder.query_prompt, encoder.document_prompt) == (QUERY, DOCUMENT)
    assert encoder.passage("Wing flutter", "panel at Mach 2") == "title: Wing flutter | text: panel at Mach 2"
    assert encoder.passage("", "panel at Mach 2") == "title: none | text: panel at Mach 2"
    plain = encoder.model.encode
    query = encoder.encode_queries({"q1": "panel flutter"})[0]
    assert np.allclose(query, _unit(plain(QUERY + "panel flutter")), atol=1e-5)
    assert not np.allclose(query, _unit(plain("panel flutter")), atol=1e-3)
    chunk = {"chunk_id": "d1#0", "title": "Wing flutter", "text": "panel at Mach 2", "content_hash": "h1"}
    assert np.allclose(encoder.encode_chunks([chunk])[0], _unit(plain("title: Wing flutter | text: panel at Mach 2")),
                       atol=1e-5)
    # The same texts through the mine/filter path (ids + texts) give the same vectors as encode_queries.
    assert np.allclose(encoder.encode_query_texts(["x"], ["panel flutter"])[0], query, atol=1e-6)

    unprompted = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=64)
    assert unprompted.passage("Wing flutter", "panel") == "Wing flutter\npanel"  # as before: title and text lines
    assert unprompted.fingerprint != encoder.fingerprint  # cached vectors of one are never read for the other


def test_bfloat16_weights_are_close_recorded_and_used_for_queries(tiny_models, tmp_path) -> None:
    texts = ["boundary layer transition", "shock wave on a cone", "heat transfer in a slab"]
    f32 = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=32, precision="float32")
    bf16 = DenseEncoder(str(tiny_models["dense"]), tmp_path / "cache", max_length=32, precision="bfloat16")
    assert {str(p.dtype) for p in bf16.model.parameters()} == {"torch.bfloat16"}  # weights, not autocast
    a, b = f32.encode(texts), bf16.encode(texts)
    assert b.dtype == np.float32 and np.all((a * b).sum(axis=1) > 0.98)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-6)  # unit length in float32, not in bfloat16
    assert f32.fingerprint != bf16.fingerprint

    asked = []

    class Encoders:
        def dense_encoder(self, name, max_length, precision="float32", threads=None):
            asked.append(precision)
            return bf16

    folder = tmp_path / "index"
    meta = build_faiss_folder(b, ["a#0", "b#0", "c#0"], folder, {"type": "flat", "auto_flat_max": 10, "hnsw_m": 8,
                              "ivf_lists": 0, "pq_m": 8, "pq_bits": 8}, str(tiny_models["dense"]), 32, 13, 1, "bfloat16")
    assert meta["precision"] == "bfloat16"
    assert json.loads((folder / "system.json").read_text())["precision"] == "bfloat16"
    retriever = open_system(folder, Encoders(), 0.9, 0.4)
    assert asked == ["bfloat16"]
    assert retriever.search({"q": "shock wave on a cone"}, 1)["q"][0][0] == "b#0"
    plain = build_faiss_folder(a, ["a#0", "b#0", "c#0"], tmp_path / "f32", {"type": "flat",
                               "auto_flat_max": 10, "hnsw_m": 8, "ivf_lists": 0, "pq_m": 8, "pq_bits": 8},
                               str(tiny_models["dense"]), 32, 13, 1)
    assert "precision" not in plain  # a float32 index's system.json is as before
