"""train: fine-tune one model on the mined triples (no human labels); one `train-<trainer>` run per trainer
of ``train.models`` (see :mod:`irforge.training.trainers`: ``dense``, ``splade``).

Every trainer sees the same examples: a query, its positive passage and ``train.negatives`` hard negatives,
with every other passage of the batch as an extra negative (in-batch negatives). Batches never hold the same
positive twice, so no query is pushed away from its own passage.

Outputs per trainer: the model folder (``artifacts/train/<trainer>``, a standard sentence-transformers or
transformers folder, safetensors), the per-step log (``train_log``: losses, learning rate, and for SPLADE the
non-zeros per query / passage and the FLOPS estimate) as Parquet and as CSV for ``dvc plots``, and metrics.
Deterministic on CPU for a given seed.
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from irforge.contract import SCHEMAS, Output, Stage
from irforge.corpus import passage_text
from irforge.engine import StageContext
from irforge.training import TrainJob, build_examples, train_config, trainer
from irforge.training.teachers import off_topic

log = logging.getLogger(__name__)


def models(config: Any) -> list[str]:
    return list(config.section("train").models)


def plots(variant: str) -> list[dict[str, Any]]:
    csv_path = f"artifacts/train/log-{variant}.csv"
    out = [{f"Training loss ({variant})": {"x": "step", "y": {csv_path: ["loss", "loss_rank", "loss_reg"]}}}]
    if variant == "splade":
        out.append({"SPLADE sparsity": {"x": "step", "y": {csv_path: ["nnz_query", "nnz_doc", "flops"]}}})
    return out


def teacher_scores(config: Any, variant: str | None) -> list[str]:
    """The teach stage's scores, for a trainer that distils (``train.<trainer>.loss`` kl or margin_mse), and for
    every trainer under the topicality cut (``train.topicality``)."""
    train = config.section("train")
    return ["teacher_scores"] if variant and (getattr(train, variant).distills or train.topicality) else []


STAGE = Stage(
    name="train",
    version="3",
    params=("seed", "train"),
    config=train_config(),
    variants=models,
    inputs=("chunks", "triples", teacher_scores),
    outputs=(
        Output("model/{variant}", "{variant}", "folder", description="the trained model",
               registry={"type": "model", "desc": "fine-tuned on the corpus's own synthetic queries",
                         "labels": ["trained"]}),
        Output("train_log/{variant}", "log-{variant}.parquet", "train_log", description="per-step training log"),
        Output("train_log_csv/{variant}", "log-{variant}.csv", "csv", cache=False),
        Output("train/{variant}.metrics", "metrics-{variant}.json", "json", cache=False, metric=True),
    ),
    plots=plots,
)


def log_table(rows: list[dict]) -> pa.Table:
    schema = SCHEMAS["train_log"]
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema)


def log_csv(table: pa.Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row.values()])
    return buffer.getvalue()


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    cfg = ctx.section("train")
    name = ctx.variant
    torch.set_num_threads(ctx.training_threads)  # fixed per machine: the gradients' sums depend on it
    torch.use_deterministic_algorithms(True, warn_only=True)
    chunks = ctx.read("chunks", ["chunk_id", "title", "text"]).to_pylist()
    texts = {c["chunk_id"]: passage_text(c["title"], c["text"]) for c in chunks}
    block = getattr(cfg, name)
    triples = ctx.read("triples").to_pylist()
    combined: dict[str, dict[str, float]] = {}  # the combined teacher score of every (query, candidate) pair
    if block.distills or cfg.topicality:
        for r in ctx.read("teacher_scores").to_pylist():
            if r["teacher"] == "combined":
                combined.setdefault(r["query_id"], {})[r["chunk_id"]] = r["score"]
    dropped: set[str] = set()
    if cfg.topicality:
        dropped = off_topic(combined, {t["query_id"]: t["positive_id"] for t in triples}, cfg.topicality)
        log.info("topicality cut: %d of %d queries left out (the teacher ranks their own passage below %d)",
                 len(dropped), len(triples), cfg.topicality)
    examples = build_examples(triples, texts, cfg.negatives, cfg.negative_pick,
                              cfg.queries_per_chunk, cfg.max_triples, np.random.default_rng(ctx.seed),
                              source=ctx.input("triples").path, teacher=combined if block.distills else None,
                              leave_out=dropped)
    with ctx.publish("model/{variant}") as tmp:
        job = TrainJob(examples, block, ctx.seed, tmp, ctx.model)
        rows = trainer(name).train(job)
    table = log_table(rows)
    ctx.write("train_log/{variant}", table)
    ctx.write_text("train_log_csv/{variant}", log_csv(table))
    # Wall time stays in the trainer's log line: it differs run to run, and the metrics file is tracked.
    summary = {"examples": len(examples), "positives": len({e.positive_id for e in examples}),
               **({"off_topic": len(dropped)} if cfg.topicality else {}),
               name: {"steps": len(rows), "epochs": block.epochs, **job.notes,
                      "first_loss": round(rows[0]["loss"], 4) if rows else None,
                      "final_loss": round(rows[-1]["loss"], 4) if rows else None}}
    ctx.metrics({"train": summary})
    return summary
