"""Tiny random models and a toy project (chunks + triples) shared by the train, index and evaluate tests."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import paths
from irforge.config import Params
from irforge.contract import SCHEMAS, owned, write_artifact
from irforge.models import DenseEncoder, SpladeEncoder, resolve_model

REPO = Path(__file__).resolve().parents[1]
TOPICS = [
    "wing lift slipstream propeller", "boundary layer viscous flow", "shock wave hypersonic nose",
    "heat transfer conduction slab", "buckling cylinder shell pressure", "flutter panel supersonic",
    "turbulent jet noise mixing", "orbit satellite drag atmosphere", "nozzle exhaust rocket thrust",
    "stagnation point ablation heating", "cone pressure distribution yaw", "airfoil cascade compressor blade",
]
SYSTEMS = ["bm25", "dense-zs", "dense", "splade-zs", "splade"]  # the systems make_project declares
PROVENANCE = {"stage": "test", "stage_version": "0", "params": {}, "params_hash": "", "inputs": [], "created_at": ""}


def _tokenizer_files(target: Path) -> None:
    source = resolve_model("pkg:all-minilm-l6-v2").path
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)


def _config():
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128)


@functools.lru_cache(maxsize=1)
def _build_tiny_models() -> dict[str, Path]:
    """Built once per test process, however many test modules use the fixture."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertForMaskedLM, BertModel

    root = Path(tempfile.mkdtemp(prefix="irforge-tiny-models-"))
    torch.manual_seed(0)
    bert = root / "bert"
    BertModel(_config()).save_pretrained(bert, safe_serialization=True)
    _tokenizer_files(bert)
    dense = root / "dense"
    SentenceTransformer(str(bert), device="cpu").save(str(dense), create_model_card=False, safe_serialization=True)
    splade = root / "splade"
    BertForMaskedLM(_config()).save_pretrained(splade, safe_serialization=True)
    _tokenizer_files(splade)
    return {"dense": dense, "splade": splade}


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """A random sentence-transformers bi-encoder and a random BERT MLM, both with a real BERT tokenizer."""
    return _build_tiny_models()


def make_project(root: Path, models: dict[str, Path], queries_per_chunk: int = 3, **overrides) -> Params:
    """A project folder with toy chunks and triples, and params pointing at the tiny models."""
    owned.claim_project(root)  # this helper writes the artifacts the pipeline would
    rng = np.random.default_rng(0)
    chunks, triples = [], []
    for i, topic in enumerate(TOPICS):
        words = topic.split()
        text = f"{topic} . " + " ".join(rng.choice(words, 12)) + f" experiment {i} ."
        chunks.append({"chunk_id": f"{i}#0", "doc_id": str(i), "passage_index": 0, "title": "", "text": text,
                       "char_start": 0, "char_end": len(text), "n_tokens": 20, "content_hash": f"h{i}",
                       "doc_hash": f"d{i}"})
        for j in range(queries_per_chunk):
            query = " ".join(rng.choice(words, 2, replace=False))
            negs = [{"chunk_id": f"{(i + k) % len(TOPICS)}#0", "rank": k, "score": 1.0 / k, "source": "bm25"}
                    for k in (1, 2, 3)]
            triples.append({"query_id": f"q{i}-{j}", "query": query, "positive_id": f"{i}#0", "generator": "toy",
                            "template": "toy", "negatives": negs})
    write_artifact(pa.Table.from_pylist(chunks, SCHEMAS["chunks"]), root / paths.CHUNKS, "chunks", PROVENANCE)
    write_artifact(pa.Table.from_pylist(triples, SCHEMAS["triples"]), root / paths.TRIPLES, "triples", PROVENANCE)
    # A toy teacher (what the teach stage writes): the positive first, then the negatives by their mined rank.
    scores = [{"query_id": t["query_id"], "chunk_id": c, "role": "positive" if k == 0 else "negative",
               "teacher": "combined", "score": 2.0 - k, "normalised": 2.0 - k}
              for t in triples for k, c in enumerate([t["positive_id"], *(n["chunk_id"] for n in t["negatives"])])]
    write_artifact(pa.Table.from_pylist(scores, SCHEMAS["teacher_scores"]), root / paths.TEACHER_SCORES,
                   "teacher_scores", PROVENANCE)
    base = Params.load(REPO / "params.yaml")
    evaluate = base.section("evaluate")
    # The repository's fusions and paired tests, less those of legs the toy project has not (gemma-zs).
    runs = {*SYSTEMS, *evaluate["feedback"]}
    fusions = [f for f in evaluate["fusions"] if set(f) <= runs]
    known = runs | {"rrf(" + "+".join(f) + ")" for f in fusions}
    tiny = {
        "train.dense.base": str(models["dense"]), "train.splade.base": str(models["splade"]),
        "train.dense.batch_size": 6, "train.splade.batch_size": 6,
        "train.dense.epochs": 4, "train.splade.epochs": 4,
        "train.dense.lr": 1e-3, "train.splade.lr": 1e-3,
        "train.dense.max_doc_length": 32, "train.splade.max_doc_length": 32,
        "index.max_length": 32,
        # Every system is declared, bm25 too; the trained ones read the train stage's model folders.
        "index.systems": {
            "bm25": {"kind": "bm25"},
            "dense-zs": {"kind": "faiss", "model": str(models["dense"])},
            "dense": {"kind": "faiss", "model": paths.model_dir("dense")},
            "splade-zs": {"kind": "impact", "model": str(models["splade"])},
            "splade": {"kind": "impact", "model": paths.model_dir("splade")},
        },
        # evaluate.systems must name systems of index.systems (the repository's lists bm25-d2q).
        "evaluate.systems": SYSTEMS,
        "evaluate.fusions": fusions,
        "evaluate.compare": [pair for pair in evaluate["compare"] if set(pair) <= known],
        # How to run (untracked): one thread, small encoder batches.
        "runtime.threads": 1, "runtime.encode_batch_size": 8,
    }
    return base.with_overrides({**tiny, **overrides})


class Encoders:
    """Query encoders for :func:`irforge.retrieval.open_system` outside a stage (what a StageContext provides),
    with the vector cache in ``cache_dir``."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)

    def dense_encoder(self, name: str, max_length: int, precision: str = "float32",
                      threads: int | None = None) -> DenseEncoder:
        return DenseEncoder(name, self.cache_dir, max_length=max_length, precision=precision, threads=threads)

    def splade_encoder(self, name: str, max_length: int, threads: int | None = None) -> SpladeEncoder:
        return SpladeEncoder(name, self.cache_dir, max_length=max_length, threads=threads)


