"""The train stage on tiny random models: the loss goes down, FLOPS regularisation sparsifies, runs repeat exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import paths
from irforge.contract import SCHEMAS, read_artifact, read_provenance, sha256_path, write_artifact
from irforge.engine import run_stage
from irforge.models import resolve_model
from trainkit import PROVENANCE, TOPICS, make_project


def _log(root: Path, model: str) -> list[dict]:
    """One trainer's log (train runs once per trainer, each writing its own log)."""
    rows = read_artifact(root / paths.train_log(model), "train_log").to_pylist()
    assert all(r["model"] == model for r in rows)
    return rows


def test_dense_and_splade_losses_go_down_and_models_load(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    params = make_project(tmp_path, tiny_models)
    for model in ("dense", "splade"):
        summary = run_stage("train", tmp_path, params, model)
        assert summary["examples"] == len(TOPICS) * 3
        rows = _log(tmp_path, model)
        assert summary[model]["steps"] == len(rows)
        metrics = json.loads((tmp_path / paths.train_metrics(model)).read_text())
        assert metrics["train"]["examples"] == len(TOPICS) * 3 and metrics["train"][model]["steps"] == len(rows)
        assert read_provenance(tmp_path / paths.train_log(model))["variant"] == model
        assert [r["step"] for r in rows] == list(range(len(rows))) and len(rows) >= 4 * 6  # 4 epochs of 6+ batches
        assert rows[-1]["epoch"] == 3
        first, last = np.mean([r["loss"] for r in rows[:6]]), np.mean([r["loss"] for r in rows[-6:]])
        assert last < 0.8 * first, (model, first, last)
    splade_rows = _log(tmp_path, "splade")
    assert all(r["nnz_query"] > 0 and r["nnz_doc"] > 0 and r["flops"] > 0 for r in splade_rows)
    assert all(r["nnz_query"] is None for r in _log(tmp_path, "dense"))
    csv_lines = (tmp_path / paths.train_log_csv("splade")).read_text().splitlines()
    assert csv_lines[0].startswith("model,step,epoch,loss") and len(csv_lines) == 1 + len(splade_rows)
    assert not (tmp_path / "artifacts/train/log.parquet").exists()  # no combined log: one per trainer

    from sentence_transformers import SentenceTransformer

    dense = tmp_path / paths.model_dir("dense")
    assert list(dense.glob("*.safetensors")) and not list(dense.glob("*.bin"))
    vectors = SentenceTransformer(str(dense), device="cpu").encode(["wing lift"])
    assert vectors.shape == (1, 32)
    assert resolve_model(str(dense)).source == "local"
    assert json.loads((dense / "_provenance.json").read_text())["stage"] == "train"

    from irforge.models.splade import SpladeEncoder

    encoder = SpladeEncoder(str(tmp_path / paths.model_dir("splade")), tmp_path / ".irforge-cache")
    assert encoder.encode_dense(["wing lift"]).shape == (1, 30522)


def test_training_is_deterministic_given_the_seed(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    hashes = []
    for name in ("a", "b"):
        root = tmp_path / name
        params = make_project(root, tiny_models, **{"train.dense.epochs": 1})
        run_stage("train", root, params, "dense")
        hashes.append((sha256_path(root / paths.model_dir("dense") / "model.safetensors"),
                       [r["loss"] for r in _log(root, "dense")]))
    assert hashes[0] == hashes[1]


def test_flops_regularisation_lowers_non_zeros(tmp_path, tiny_models):
    from irforge.models.splade import SpladeEncoder

    nnz = {}
    for lam in (0.0, 1.0):
        root = tmp_path / f"lambda-{lam}"
        params = make_project(root, tiny_models, **{
            "train.splade.lambda_q": lam, "train.splade.lambda_d": lam,
            "train.splade.lambda_warmup": 0.0, "train.splade.epochs": 2})
        run_stage("train", root, params, "splade")
        encoder = SpladeEncoder(str(root / paths.model_dir("splade")), root / ".irforge-cache", max_length=32)
        nnz[lam] = float((encoder.encode_dense([f"{t} experiment" for t in TOPICS]) > 0).sum(1).mean())
        logged = _log(root, "splade")
        assert (logged[-1]["loss_reg"] > 0) == (lam > 0)
    assert nnz[1.0] < 0.5 * nnz[0.0], nnz


def test_unknown_chunk_in_triples_is_an_error_naming_row_and_field(tmp_path, tiny_models):
    params = make_project(tmp_path, tiny_models)
    table = read_artifact(tmp_path / paths.TRIPLES, "triples").to_pylist()
    table[4]["positive_id"] = "nope#0"
    write_artifact(pa.Table.from_pylist(table, SCHEMAS["triples"]), tmp_path / paths.TRIPLES, "triples", PROVENANCE)
    for model in ("dense", "splade"):  # every trainer reads the same examples
        with pytest.raises(ValueError, match=r"row 4 .*field 'positive_id'.*nope#0"):
            run_stage("train", tmp_path, params, model)
        assert not (tmp_path / paths.model_dir(model)).exists()  # nothing published


def test_batches_never_repeat_a_positive_and_cover_every_example():
    from irforge.training import Example, make_batches

    examples = [Example(f"q{i}", f"c{i % 3}", "p", ()) for i in range(12)]
    batches = make_batches(examples, 4, np.random.default_rng(0))
    assert sorted(e.query for b in batches for e in b) == sorted(e.query for e in examples)
    for batch in batches:
        assert len({e.positive_id for e in batch}) == len(batch)


def test_queries_per_chunk_and_negatives_params_shape_the_examples(tmp_path, tiny_models):
    from irforge.corpus import passage_text
    from irforge.engine import StageContext, nodes, validate
    from irforge.training import build_examples

    config = validate(make_project(tmp_path, tiny_models, **{"train.queries_per_chunk": 1, "train.negatives": 5}))
    for model in ("dense", "splade"):
        ctx = StageContext(next(n for n in nodes(config) if n.key == f"train-{model}"), tmp_path, config)
        cfg = ctx.section("train")
        texts = {c["chunk_id"]: passage_text(c["title"], c["text"]) for c in ctx.read("chunks").to_pylist()}
        examples = build_examples(ctx.read("triples").to_pylist(), texts, cfg.negatives, cfg.negative_pick,
                                  cfg.queries_per_chunk, cfg.max_triples, np.random.default_rng(0))
        assert len(examples) == len(TOPICS)
        assert all(len(e.negatives) == 5 and e.positive not in e.negatives for e in examples)  # 3 mined + 2 fillers
    summary = run_stage("train", tmp_path, config.params.with_overrides({"train.dense.epochs": 1}), "dense")
    assert summary["examples"] == len(TOPICS) and summary["positives"] == len(TOPICS)  # what the stage trains on
