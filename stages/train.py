"""train: fine-tune a dense bi-encoder and a SPLADE model on the mined triples (no human labels).

Input: the triples artifact (query, positive chunk, mined hard negatives) and the chunks (their texts).
Both trainers see the same examples: a query, its positive passage and ``negatives`` hard negatives, with
every other passage of the batch as an extra negative (in-batch negatives). Batches never hold the same
positive twice, so no query is pushed away from its own passage.

- ``dense``: a sentence-transformers bi-encoder (all-MiniLM-L6-v2 by default) trained with
  MultipleNegativesRankingLoss (InfoNCE over cosine x ``scale``); saved as a sentence-transformers folder.
- ``splade``: a BERT MLM (splade-tiny by default) trained with the same in-batch + hard-negative softmax
  over SPLADE dot products, plus FLOPS regularisation on queries and documents (``lambda_q``, ``lambda_d``)
  warmed up quadratically over ``lambda_warmup`` of the steps (SPLADE paper); saved as a transformers folder.

Outputs: one model folder per trainer under ``artifacts/train`` and the per-step log (``train_log``: losses,
learning rate, and for SPLADE the mean non-zeros per query / document and the FLOPS estimate) as Parquet and
as CSV for ``dvc plots``. Deterministic on CPU for a given seed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from irforge import layout
from irforge.indexes import passage_text
from irforge.progress import progress
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="train", version="1", params=("seed", "train"))

TRAINERS = ("dense", "splade")


@dataclass(frozen=True)
class Example:
    query: str
    positive_id: str
    positive: str
    negatives: tuple[str, ...]


# ---------------------------------------------------------------- examples


def load_examples(ctx: StageContext, cfg: dict[str, Any], rng: np.random.Generator) -> list[Example]:
    """Triples -> examples with exactly ``negatives`` hard negatives each.

    Negatives are the mined ones (``negative_pick``: ``top`` = best ranked first, ``random`` = a random subset);
    a query with fewer mined negatives than asked gets random corpus passages to fill up, so every example
    has the same shape. An id that is not a chunk is an error naming the row and field.
    """
    triples_path = ctx.path(layout.TRIPLES)
    chunks = ctx.read(ctx.path(layout.CHUNKS), "chunks", ["chunk_id", "title", "text"]).to_pylist()
    texts = {c["chunk_id"]: passage_text(c["title"], c["text"]) for c in chunks}
    chunk_ids = list(texts)
    rows = ctx.read(triples_path, "triples").to_pylist()
    if not rows:
        raise ValueError(f"{triples_path}: no triples to train on")
    n_neg = int(cfg.get("negatives", 1))
    pick = cfg.get("negative_pick", "top")
    if pick not in ("top", "random"):
        raise ValueError(f"train.negative_pick must be 'top' or 'random', got '{pick}'")
    if n_neg >= len(chunk_ids):
        raise ValueError(f"train.negatives={n_neg} needs more than {n_neg} chunks; the corpus has {len(chunk_ids)}")
    per_chunk = cfg.get("queries_per_chunk")
    order = rng.permutation(len(rows))
    kept: dict[str, int] = {}
    examples: list[Example] = []
    for i in order:
        row = rows[i]
        where = f"{triples_path}: row {i} (query_id {row['query_id']})"
        if row["positive_id"] not in texts:
            raise ValueError(f"{where}: field 'positive_id': '{row['positive_id']}' is not a chunk id in {layout.CHUNKS}")
        mined = sorted(row["negatives"], key=lambda n: n["rank"])
        for neg in mined:
            if neg["chunk_id"] not in texts:
                raise ValueError(f"{where}: field 'negatives.chunk_id': '{neg['chunk_id']}' is not a chunk id")
        if per_chunk is not None and kept.get(row["positive_id"], 0) >= int(per_chunk):
            continue
        ids = [n["chunk_id"] for n in mined if n["chunk_id"] != row["positive_id"]]
        if pick == "random" and len(ids) > n_neg:
            ids = [ids[j] for j in sorted(rng.choice(len(ids), n_neg, replace=False))]
        ids = ids[:n_neg]
        while len(ids) < n_neg:
            filler = chunk_ids[int(rng.integers(len(chunk_ids)))]
            if filler != row["positive_id"] and filler not in ids:
                ids.append(filler)
        kept[row["positive_id"]] = kept.get(row["positive_id"], 0) + 1
        examples.append(Example(row["query"], row["positive_id"], texts[row["positive_id"]],
                                tuple(texts[j] for j in ids)))
    max_triples = cfg.get("max_triples")
    if max_triples is not None:
        examples = examples[: int(max_triples)]
    log.info("training examples: %d (of %d triples), %d hard negative(s) each, %d distinct positives",
             len(examples), len(rows), n_neg, len({e.positive_id for e in examples}))
    return examples


def make_batches(examples: list[Example], batch_size: int, rng: np.random.Generator) -> list[list[Example]]:
    """Shuffled batches in which no positive occurs twice (a duplicate waits for the next batch)."""
    pending = deque(examples[i] for i in rng.permutation(len(examples)))
    batches: list[list[Example]] = []
    while pending:
        batch: list[Example] = []
        seen: set[str] = set()
        deferred: list[Example] = []
        while pending and len(batch) < batch_size:
            ex = pending.popleft()
            (deferred if ex.positive_id in seen else batch).append(ex)
            seen.add(ex.positive_id)
        pending.extendleft(reversed(deferred))
        batches.append(batch)
    return batches


# ---------------------------------------------------------------- shared loop


def _optimiser(parameters, cfg: dict[str, Any], total_steps: int):
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimiser = torch.optim.AdamW(parameters, lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.01)))
    warmup = int(float(cfg.get("warmup", 0.1)) * total_steps)
    return optimiser, get_linear_schedule_with_warmup(optimiser, warmup, max(1, total_steps))


def _loop(name: str, examples: list[Example], cfg: dict[str, Any], seed: int, step_fn, parameters) -> list[dict]:
    """Run the epochs with gradient accumulation and a linear warm-up then decay of the learning rate.

    ``step_fn(batch, step, total_steps)`` returns (loss tensor, extra log fields) for one micro-batch. The
    batches of every epoch are drawn up front, so the schedules know the exact number of optimiser steps.
    """
    import torch

    rng = np.random.default_rng(seed)
    accumulation = max(1, int(cfg.get("gradient_accumulation", 1)))
    plan = []  # (epoch, micro-batches of one optimiser step)
    for epoch in range(int(cfg["epochs"])):
        batches = make_batches(examples, int(cfg["batch_size"]), rng)
        plan += [(epoch, batches[i : i + accumulation]) for i in range(0, len(batches), accumulation)]
    optimiser, scheduler = _optimiser(parameters, cfg, len(plan))
    rows: list[dict] = []
    started = time.perf_counter()
    for step, (epoch, group) in enumerate(progress(plan, desc=f"train {name}", unit="step")):
        parts: list[dict[str, float]] = []
        for batch in group:
            loss, extra = step_fn(batch, step, len(plan))
            (loss * len(batch) / sum(len(b) for b in group)).backward()
            parts.append({"loss": float(loss.detach()), **extra})
        torch.nn.utils.clip_grad_norm_(parameters, float(cfg.get("max_grad_norm", 1.0)))
        lr = scheduler.get_last_lr()[0]
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad(set_to_none=True)
        rows.append({"model": name, "step": step, "epoch": epoch, "lr": lr,
                     **{k: float(np.mean([p[k] for p in parts])) for k in parts[0]}})
    seconds = time.perf_counter() - started
    seen = len(examples) * int(cfg["epochs"])
    log.info("%s: %d steps, %d examples x %s epochs in %.1fs (%.2f triples/s); loss %.4f -> %.4f", name, len(plan),
             len(examples), cfg["epochs"], seconds, seen / max(seconds, 1e-9),
             rows[0]["loss"] if rows else float("nan"), rows[-1]["loss"] if rows else float("nan"))
    return rows


# ---------------------------------------------------------------- dense


def train_dense(ctx: StageContext, cfg: dict[str, Any], examples: list[Example], out: Path) -> list[dict]:
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from irforge.encoding import load_sentence_transformer
    from irforge.models import resolve_model

    torch.manual_seed(ctx.seed)
    base = resolve_model(cfg["base"], ctx.path(layout.CACHE))
    ctx.use_model(base.record)
    model = load_sentence_transformer(base)
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model, scale=float(cfg.get("scale", 20.0)))
    q_len, d_len = int(cfg["max_query_length"]), int(cfg["max_doc_length"])

    def embed(texts: list[str], max_length: int) -> torch.Tensor:
        model.max_seq_length = max_length
        return model(model.preprocess(texts))["sentence_embedding"]

    def step_fn(batch: list[Example], step: int, total_steps: int):
        queries = embed([e.query for e in batch], q_len)
        columns = [[e.positive for e in batch]] + [[e.negatives[j] for e in batch] for j in range(len(batch[0].negatives))]
        docs = [embed(col, d_len) for col in columns]
        loss = loss_fn.compute_loss_from_embeddings([queries, *docs], labels=None)
        return loss, {"loss_rank": float(loss.detach()), "loss_reg": 0.0}

    rows = _loop("dense", examples, cfg, ctx.seed, step_fn, [p for p in model.parameters() if p.requires_grad])
    model.eval()
    model.max_seq_length = d_len
    model.save(str(out), create_model_card=False, safe_serialization=True)
    return rows


# ---------------------------------------------------------------- SPLADE


def train_splade(ctx: StageContext, cfg: dict[str, Any], examples: list[Example], out: Path) -> list[dict]:
    import torch

    from irforge.splade import SpladeEncoder, flops_estimate, flops_loss, quadratic_warmup

    torch.manual_seed(ctx.seed)
    encoder = SpladeEncoder(cfg["base"], ctx.path(layout.CACHE))
    ctx.use_model(encoder.model_info.record)
    encoder.model.train()
    q_len, d_len = int(cfg["max_query_length"]), int(cfg["max_doc_length"])
    lambda_q, lambda_d = float(cfg["lambda_q"]), float(cfg["lambda_d"])
    warmup = float(cfg.get("lambda_warmup", 0.3))

    def step_fn(batch: list[Example], step: int, total_steps: int):
        queries = encoder.forward(encoder.tokenize([e.query for e in batch], q_len))
        doc_texts = [e.positive for e in batch] + [n for j in range(len(batch[0].negatives)) for n in
                                                    (e.negatives[j] for e in batch)]
        docs = encoder.forward(encoder.tokenize(doc_texts, d_len))
        scores = queries @ docs.T  # column i is query i's positive; the rest are in-batch and hard negatives
        rank = torch.nn.functional.cross_entropy(scores, torch.arange(len(batch)))
        factor = quadratic_warmup(step, int(warmup * total_steps))
        reg = factor * (lambda_q * flops_loss(queries) + lambda_d * flops_loss(docs))
        with torch.no_grad():
            extra = {
                "loss_rank": float(rank),
                "loss_reg": float(reg),
                "nnz_query": float((queries > 0).sum(1).float().mean()),
                "nnz_doc": float((docs > 0).sum(1).float().mean()),
                "flops": flops_estimate(queries, docs),
            }
        return rank + reg, extra

    rows = _loop("splade", examples, cfg, ctx.seed, step_fn, [p for p in encoder.model.parameters() if p.requires_grad])
    encoder.model.eval()
    encoder.save(out)
    return rows


# ---------------------------------------------------------------- stage


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
    models = list(cfg.get("models", TRAINERS))
    unknown = [m for m in models if m not in TRAINERS]
    if unknown:
        raise ValueError(f"train.models: unknown trainer '{unknown[0]}' (known: {', '.join(TRAINERS)})")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    torch.use_deterministic_algorithms(True, warn_only=True)
    examples = load_examples(ctx, cfg, np.random.default_rng(ctx.seed))
    rows: list[dict] = []
    summary: dict[str, Any] = {"examples": len(examples), "positives": len({e.positive_id for e in examples})}
    for name in models:
        trainer = train_dense if name == "dense" else train_splade
        with ctx.publish_dir(ctx.path(layout.model_dir(name))) as tmp:
            model_rows = trainer(ctx, cfg[name], examples, tmp)
        rows += model_rows
        summary[name] = {"steps": len(model_rows), "epochs": int(cfg[name]["epochs"]),
                         "first_loss": round(model_rows[0]["loss"], 4) if model_rows else None,
                         "final_loss": round(model_rows[-1]["loss"], 4) if model_rows else None}
        ctx.write_text(ctx.path(layout.train_log_csv(name)), log_csv(log_table(model_rows)), provenance=False)
    ctx.write(ctx.path(layout.TRAIN_LOG), "train_log", log_table(rows))
    # Wall time stays in the trainers' log lines: it differs run to run, and the metrics file is tracked.
    ctx.write_text(ctx.path(layout.TRAIN_METRICS), json.dumps({"train": summary}, indent=2, sort_keys=True) + "\n",
                   provenance=False)
    return summary
