"""SPLADE (a BERT masked-LM, splade-tiny by default) distilled from the teach stage's scores over each
query's candidates (``kl``: listwise KL; ``margin_mse``: MarginMSE on dot products), or without a teacher
(``mnrl``) trained with the in-batch + hard-negative softmax over SPLADE dot products; plus FLOPS
regularisation of queries and passages (``lambda_q``, ``lambda_d``), warmed up quadratically over
``lambda_warmup`` of the steps (SPLADE paper). Saved as a transformers folder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from irforge.models.splade import SpladeEncoder
from irforge.training.examples import Example
from irforge.training.loop import TrainerConfig, run_loop
from irforge.training.losses import (
    flops_estimate,
    flops_loss,
    in_batch_softmax,
    listwise_kl,
    margin_mse,
    quadratic_warmup,
)
from irforge.training.registry import Trainer, TrainJob


class SpladeConfig(TrainerConfig):
    base: str = "pkg:splade-tiny"
    batch_size: int = Field(16, ge=1)  # MLM logits are batch x tokens x 30522 floats: memory grows fast
    lr: float = Field(5.0e-5, gt=0)
    lambda_q: float = Field(1.0e-3, ge=0)  # FLOPS weight for queries (sparser queries = faster search)
    lambda_d: float = Field(1.0e-4, ge=0)  # FLOPS weight for passages
    lambda_warmup: float = Field(0.3, ge=0, le=1)  # fraction of steps over which lambda grows quadratically
    # Not kl by default: raw dot products have no fixed scale, and KL to the teacher's z-scores hurt (measured).
    loss: Literal["kl", "margin_mse", "mnrl"] = "mnrl"


def train(job: TrainJob) -> list[dict[str, Any]]:
    import torch

    cfg: SpladeConfig = job.config
    torch.manual_seed(job.seed)
    encoder = SpladeEncoder(job.resolve(cfg.base))
    encoder.model.train()

    def step_fn(batch: list[Example], step: int, total_steps: int):
        queries = encoder.forward(encoder.tokenize([e.query for e in batch], cfg.max_query_length))
        doc_texts = [e.positive for e in batch] + [n for j in range(len(batch[0].negatives)) for n in
                                                    (e.negatives[j] for e in batch)]
        docs = encoder.forward(encoder.tokenize(doc_texts, cfg.max_doc_length))
        scores = queries @ docs.T  # column i is query i's positive; its negative j is column i + (j + 1) * batch
        if cfg.distills:
            n = len(batch)
            own = torch.stack([scores[i, [i + j * n for j in range(1 + len(batch[0].negatives))]] for i in range(n)])
            teacher = torch.tensor([e.teacher for e in batch], dtype=torch.float32)
            rank = listwise_kl(own, teacher, cfg.teacher_temperature) if cfg.loss == "kl" else margin_mse(own, teacher)
        else:
            rank = in_batch_softmax(scores)
        factor = quadratic_warmup(step, int(cfg.lambda_warmup * total_steps))
        reg = factor * (cfg.lambda_q * flops_loss(queries) + cfg.lambda_d * flops_loss(docs))
        with torch.no_grad():
            extra = {
                "loss_rank": float(rank),
                "loss_reg": float(reg),
                "nnz_query": float((queries > 0).sum(1).float().mean()),
                "nnz_doc": float((docs > 0).sum(1).float().mean()),
                "flops": flops_estimate(queries, docs),
            }
        return rank + reg, extra

    rows = run_loop("splade", job.examples, cfg, job.seed, step_fn,
                    [p for p in encoder.model.parameters() if p.requires_grad])
    encoder.model.eval()
    encoder.save(job.out)
    return rows


TRAINER = Trainer("splade", SpladeConfig, train, "SPLADE max pooling: teacher distillation (KL, MarginMSE) or in-batch softmax; + FLOPS")
