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
        record = read_provenance(tmp_path / paths.train_log(model))
        assert record["variant"] == model
        assert record["runtime"] == {"training_threads": 1}  # the result depends on it: pinned by the project here
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
    model_record = json.loads((dense / "_provenance.json").read_text())
    assert model_record["stage"] == "train" and model_record["runtime"]["training_threads"] == 1

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
    # Without a teacher (mnrl), queries with too few mined negatives are topped up with random passages.
    summary = run_stage("train", tmp_path, config.params.with_overrides({"train.dense.epochs": 1,
                                                                         "train.dense.loss": "mnrl"}), "dense")
    assert summary["examples"] == len(TOPICS) and summary["positives"] == len(TOPICS)  # what the stage trains on


def test_distillation_examples_carry_teacher_scores_and_skip_unscored_queries(tmp_path, tiny_models):
    from irforge.training import build_examples

    rows = [{"query_id": "a", "query": "qa", "positive_id": "0#0", "negatives": [
                {"chunk_id": "2#0", "rank": 2, "score": 0.0, "source": "bm25"},
                {"chunk_id": "1#0", "rank": 1, "score": 0.0, "source": "bm25"}]},
            {"query_id": "b", "query": "qb", "positive_id": "1#0", "negatives": [
                {"chunk_id": "0#0", "rank": 1, "score": 0.0, "source": "bm25"}]}]
    texts = {f"{i}#0": f"passage {i}" for i in range(4)}
    teacher = {"a": {"0#0": 1.5, "1#0": 0.5, "2#0": -2.0}, "b": {"1#0": 1.0, "0#0": 0.0}}
    examples = build_examples(rows, texts, 2, "top", None, None, np.random.default_rng(0), teacher=teacher)
    assert len(examples) == 1  # b has one scored negative, not two: left out, never topped up unscored
    assert examples[0].negatives == ("passage 1", "passage 2") and examples[0].teacher == (1.5, 0.5, -2.0)
    with pytest.raises(ValueError, match="no example has 3 teacher-scored negatives"):
        build_examples(rows, texts, 3, "top", None, None, np.random.default_rng(0), teacher=teacher)


def test_distillation_loss_values() -> None:
    import torch

    from irforge.training.losses import listwise_kl, margin_mse

    student = torch.tensor([[2.0, 1.0, 0.0]])
    assert float(listwise_kl(student, student.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(listwise_kl(student, torch.tensor([[0.0, 1.0, 2.0]]))) > 0.5
    assert float(margin_mse(student, student + 5.0)) == pytest.approx(0.0)  # margins, not levels
    # student margins (1, 2), teacher margins (-1, -2): squared errors 4 and 16
    assert float(margin_mse(student, torch.tensor([[0.0, 1.0, 2.0]]))) == pytest.approx(10.0)


@pytest.mark.parametrize(("loss", "direction"), [("kl", 1), ("margin_mse", 1), ("mnrl", -1)])
def test_the_student_learns_the_teachers_order_not_the_binary_label(tmp_path, tiny_models, loss, direction):
    """A teacher that prefers each query's first mined negative to its positive: after distillation the dense
    student scores that negative higher relative to the positive than before; MNRL, which ignores the teacher,
    pushes it down."""
    from irforge.models.dense import DenseEncoder

    params = make_project(tmp_path, tiny_models, **{"train.dense.loss": loss, "train.negatives": 2})
    triples = read_artifact(tmp_path / paths.TRIPLES, "triples").to_pylist()
    scores = [{"query_id": t["query_id"], "chunk_id": c, "role": "positive" if k == 0 else "negative",
               "teacher": "combined", "score": s, "normalised": s}
              for t in triples for k, (c, s) in enumerate(zip([t["positive_id"], *(n["chunk_id"] for n in t["negatives"])],
                                                              [0.0, 3.0, -3.0, -3.0], strict=False))]
    write_artifact(pa.Table.from_pylist(scores, SCHEMAS["teacher_scores"]), tmp_path / paths.TEACHER_SCORES,
                   "teacher_scores", PROVENANCE)
    chunks = {c["chunk_id"]: c["text"] for c in read_artifact(tmp_path / paths.CHUNKS, "chunks").to_pylist()}

    def preference(model: str) -> float:
        encoder = DenseEncoder(model, tmp_path / "cache", max_length=32, use_cache=False)
        q = encoder.encode([t["query"] for t in triples])
        pos = encoder.encode([chunks[t["positive_id"]] for t in triples])
        neg = encoder.encode([chunks[sorted(t["negatives"], key=lambda n: n["rank"])[0]["chunk_id"]] for t in triples])
        return float(np.mean((q * neg).sum(1) - (q * pos).sum(1)))

    before = preference(str(tiny_models["dense"]))
    run_stage("train", tmp_path, params, "dense")
    assert direction * (preference(str(tmp_path / paths.model_dir("dense"))) - before) > 0.05


def test_a_cross_encoder_trained_on_the_triples_ranks_positives_first_and_serves_as_a_teacher(tmp_path, tiny_models,
                                                                                              monkeypatch):
    """InPars-light: the cross trainer turns a bi-encoder's BERT into a cross-encoder (new seeded head) trained on
    the synthetic triples; it then ranks the training queries' positives above their negatives, loads as a
    sentence-transformers CrossEncoder, and a teacher named by its artifacts folder reads it (and depends on it)."""
    from irforge.engine import validate
    from irforge.models import CrossEncoderScorer
    from stages.teach import teacher_inputs

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    teacher = {"ce": {"kind": "cross-encoder", "model": paths.model_dir("cross"), "max_length": 64}}
    params = make_project(tmp_path, tiny_models, **{
        # The embedded MiniLM, not a tiny random BERT: a random one cannot learn to match query and passage
        # tokens in a few steps (a bi-encoder gets that for free from shared token embeddings; a cross-encoder
        # needs trained attention).
        "train.models": ["dense", "splade", "cross"], "train.cross.base": "pkg:all-minilm-l6-v2",
        "train.cross.epochs": 3, "train.cross.lr": 2e-4, "train.cross.batch_size": 6, "train.cross.max_doc_length": 32,
        "teach.teachers": teacher})
    triples = read_artifact(tmp_path / paths.TRIPLES, "triples").to_pylist()
    texts = {c["chunk_id"]: c["text"] for c in read_artifact(tmp_path / paths.CHUNKS, "chunks").to_pylist()}

    def positive_first(folder: str) -> float:
        model = CrossEncoderScorer(resolve_model(folder), max_length=64)
        return float(np.mean([np.argmax(model.score(t["query"], [texts[t["positive_id"]],
                                                                  *(texts[n["chunk_id"]] for n in t["negatives"])])) == 0
                              for t in triples]))

    before = positive_first(str(resolve_model("pkg:all-minilm-l6-v2").path))  # a fresh random head
    summary = run_stage("train", tmp_path, params, "cross")
    rows = _log(tmp_path, "cross")
    assert summary["cross"]["steps"] == len(rows)
    assert np.mean([r["loss"] for r in rows[-6:]]) < 0.8 * np.mean([r["loss"] for r in rows[:6]])
    folder = tmp_path / paths.model_dir("cross")
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    after = positive_first(str(folder))
    assert after >= 0.75 and after > before + 0.3, (before, after)

    assert teacher_inputs(validate(params), None) == [paths.model_dir("cross")]  # teach runs after train-cross
    run_stage("teach", tmp_path, params)
    scores = read_artifact(tmp_path / paths.TEACHER_SCORES, "teacher_scores").to_pylist()
    first = triples[0]
    got = next(r["score"] for r in scores if r["teacher"] == "ce" and r["query_id"] == first["query_id"]
               and r["chunk_id"] == first["positive_id"])
    from irforge.corpus import passage_text

    expected = CrossEncoderScorer(resolve_model(str(folder)), max_length=64).score(first["query"], [passage_text(
        "", texts[first["positive_id"]])])[0]
    assert got == pytest.approx(float(expected), abs=1e-5)


def test_the_topicality_cut_leaves_out_queries_whose_own_passage_the_teacher_ranks_low(tmp_path, tiny_models):
    """train.topicality N: a query whose own passage the combined teacher ranks below N among its candidates is
    left out, for every trainer (MNRL ones too, which then read the teacher scores)."""
    from irforge.engine import validate
    from irforge.training.teachers import off_topic
    from stages.train import teacher_scores

    assert off_topic({"q": {"p": 1.0, "a": 2.0, "b": 1.0, "c": 0.0}}, {"q": "p"}, 2) == {"q"}  # a tie counts against
    assert off_topic({"q": {"p": 1.0, "a": 2.0, "b": 0.5}}, {"q": "p"}, 2) == set()
    params = make_project(tmp_path, tiny_models, **{"train.topicality": 2, "train.max_triples": None,
                                                    "train.splade.epochs": 1})
    triples = read_artifact(tmp_path / paths.TRIPLES, "triples").to_pylist()
    low = {t["query_id"] for t in triples[::4]}  # a quarter: two negatives above the own passage
    scores = [{"query_id": t["query_id"], "chunk_id": c, "role": "positive" if k == 0 else "negative",
               "teacher": "combined", "score": s, "normalised": s}
              for t in triples for k, (c, s) in enumerate(zip(
                  [t["positive_id"], *(n["chunk_id"] for n in t["negatives"])],
                  [0.0, 1.0, 2.0, -1.0] if t["query_id"] in low else [2.0, 1.0, 0.0, -1.0], strict=True))]
    write_artifact(pa.Table.from_pylist(scores, SCHEMAS["teacher_scores"]), tmp_path / paths.TEACHER_SCORES,
                   "teacher_scores", PROVENANCE)
    assert validate(params).section("train").splade.loss == "mnrl"
    assert teacher_scores(validate(params), "splade") == ["teacher_scores"]
    assert teacher_scores(validate(params.with_overrides({"train.topicality": None})), "splade") == []
    summary = run_stage("train", tmp_path, params, "splade")
    assert summary["off_topic"] == len(low) and summary["examples"] == len(triples) - len(low)


def test_matched_temperature_makes_the_teacher_as_sharp_as_the_student() -> None:
    from irforge.training.losses import matched_temperature, mean_entropy

    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(50, 8))  # z-score-like: a soft teacher
    student = 20 * rng.uniform(0.2, 0.6, size=(50, 8))  # scale x cosine: sharper
    t = matched_temperature(teacher, student)
    assert t < 1.0  # sharpen the teacher
    assert mean_entropy(teacher, t) == pytest.approx(mean_entropy(student), abs=1e-6)
    assert matched_temperature(student, student) == pytest.approx(1.0, rel=1e-6)
    # A teacher that cannot tell the candidates apart is as soft at any temperature: a bound comes back.
    assert matched_temperature(np.zeros((50, 8)), student) in (0.01, 100.0)


def test_auto_teacher_temperature_is_chosen_from_the_data_and_recorded(tmp_path, tiny_models):
    params = make_project(tmp_path, tiny_models, **{"train.dense.teacher_temperature": "auto",
                                                    "train.dense.epochs": 1})
    summary = run_stage("train", tmp_path, params, "dense")
    chosen = summary["dense"]["teacher_temperature"]
    assert 0.01 <= chosen <= 100
    metrics = json.loads((tmp_path / paths.train_metrics("dense")).read_text())
    assert metrics["train"]["dense"]["teacher_temperature"] == chosen
    with pytest.raises(Exception, match="auto is implemented for the dense trainer"):
        run_stage("train", tmp_path, params.with_overrides({"train.splade.teacher_temperature": "auto"}), "splade")


def test_a_left_out_query_keeps_the_row_numbers_of_the_file() -> None:
    """The topicality cut skips queries inside build_examples, so an error still names the file's row."""
    from irforge.training import build_examples

    texts = {f"c{i}": f"passage {i}" for i in range(6)}
    rows = [{"query_id": f"q{i}", "query": "q", "positive_id": f"c{i}", "negatives": []} for i in range(3)]
    rows[2]["positive_id"] = "missing"
    with pytest.raises(ValueError, match=r"row 2 \(query_id q2\): field 'positive_id'"):
        build_examples(rows, texts, 1, "top", None, None, np.random.default_rng(0), leave_out={"q0"})
    rows[2]["positive_id"] = "c2"
    kept = build_examples(rows, texts, 1, "top", None, None, np.random.default_rng(0), leave_out={"q0"})
    assert sorted(e.positive_id for e in kept) == ["c1", "c2"]
