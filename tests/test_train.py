"""The train stage on tiny random models: the loss goes down, FLOPS regularisation sparsifies, runs repeat exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from irforge import layout
from irforge.artifacts import read_artifact, sha256_path, write_artifact
from irforge.models import resolve_model
from irforge.runner import run_stage
from irforge.schemas import SCHEMAS
from tests.trainkit import PROVENANCE, TOPICS, make_project, tiny_models  # noqa: F401 (fixture)


def _log(root: Path, model: str) -> list[dict]:
    rows = read_artifact(root / layout.TRAIN_LOG, "train_log").to_pylist()
    return [r for r in rows if r["model"] == model]


def test_dense_and_splade_losses_go_down_and_models_load(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    params = make_project(tmp_path, tiny_models)
    summary = run_stage("train", tmp_path, params)
    assert summary["examples"] == len(TOPICS) * 3
    for model in ("dense", "splade"):
        rows = _log(tmp_path, model)
        assert [r["step"] for r in rows] == list(range(len(rows))) and len(rows) >= 4 * 6  # 4 epochs of 6+ batches
        assert rows[-1]["epoch"] == 3
        first, last = np.mean([r["loss"] for r in rows[:6]]), np.mean([r["loss"] for r in rows[-6:]])
        assert last < 0.8 * first, (model, first, last)
    splade_rows = _log(tmp_path, "splade")
    assert all(r["nnz_query"] > 0 and r["nnz_doc"] > 0 and r["flops"] > 0 for r in splade_rows)
    assert all(r["nnz_query"] is None for r in _log(tmp_path, "dense"))
    csv_lines = (tmp_path / layout.train_log_csv("splade")).read_text().splitlines()
    assert csv_lines[0].startswith("model,step,epoch,loss") and len(csv_lines) == 1 + len(splade_rows)

    from sentence_transformers import SentenceTransformer

    dense = tmp_path / layout.MODELS / "dense"
    assert list(dense.glob("*.safetensors")) and not list(dense.glob("*.bin"))
    vectors = SentenceTransformer(str(dense), device="cpu").encode(["wing lift"])
    assert vectors.shape == (1, 32)
    assert resolve_model(str(dense)).source == "local"
    assert json.loads((dense / "_provenance.json").read_text())["stage"] == "train"

    from irforge.splade import SpladeEncoder

    encoder = SpladeEncoder(str(tmp_path / layout.MODELS / "splade"))
    assert encoder.encode_dense(["wing lift"]).shape == (1, 30522)


def test_training_is_deterministic_given_the_seed(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    hashes = []
    for name in ("a", "b"):
        root = tmp_path / name
        params = make_project(root, tiny_models, **{"train.dense.epochs": 1, "train.models": ["dense"]})
        run_stage("train", root, params)
        hashes.append((sha256_path(root / layout.MODELS / "dense" / "model.safetensors"),
                       [r["loss"] for r in _log(root, "dense")]))
    assert hashes[0] == hashes[1]


def test_flops_regularisation_lowers_non_zeros(tmp_path, tiny_models):
    from irforge.splade import SpladeEncoder

    nnz = {}
    for lam in (0.0, 1.0):
        root = tmp_path / f"lambda-{lam}"
        params = make_project(root, tiny_models, **{
            "train.models": ["splade"], "train.splade.lambda_q": lam, "train.splade.lambda_d": lam,
            "train.splade.lambda_warmup": 0.0, "train.splade.epochs": 2})
        run_stage("train", root, params)
        encoder = SpladeEncoder(str(root / layout.MODELS / "splade"), max_length=32)
        nnz[lam] = float((encoder.encode_dense([f"{t} experiment" for t in TOPICS]) > 0).sum(1).mean())
        logged = _log(root, "splade")
        assert (logged[-1]["loss_reg"] > 0) == (lam > 0)
    assert nnz[1.0] < 0.5 * nnz[0.0], nnz


def test_unknown_chunk_in_triples_is_an_error_naming_row_and_field(tmp_path, tiny_models):
    params = make_project(tmp_path, tiny_models, **{"train.models": ["dense"]})
    table = read_artifact(tmp_path / layout.TRIPLES, "triples").to_pylist()
    table[4]["positive_id"] = "nope#0"
    write_artifact(pa.Table.from_pylist(table, SCHEMAS["triples"]), tmp_path / layout.TRIPLES, "triples", PROVENANCE)
    with pytest.raises(ValueError, match=r"row 4 .*field 'positive_id'.*nope#0"):
        run_stage("train", tmp_path, params)


def test_batches_never_repeat_a_positive_and_cover_every_example():
    from stages.train import Example, make_batches

    examples = [Example(f"q{i}", f"c{i % 3}", "p", ()) for i in range(12)]
    batches = make_batches(examples, 4, np.random.default_rng(0))
    assert sorted(e.query for b in batches for e in b) == sorted(e.query for e in examples)
    for batch in batches:
        assert len({e.positive_id for e in batch}) == len(batch)


def test_queries_per_chunk_and_negatives_params_shape_the_examples(tmp_path, tiny_models):
    from irforge.stage import StageContext
    from stages import train

    params = make_project(tmp_path, tiny_models, **{"train.queries_per_chunk": 1, "train.negatives": 5})
    ctx = StageContext.for_module(train, tmp_path, params)
    examples = train.load_examples(ctx, ctx.section("train"), np.random.default_rng(0))
    assert len(examples) == len(TOPICS)
    assert all(len(e.negatives) == 5 and e.positive not in e.negatives for e in examples)  # 3 mined + 2 fillers
