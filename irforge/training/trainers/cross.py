"""Cross-encoder reranker trained on the corpus's own synthetic queries (InPars-light, Boytsov et al. 2023): a
BERT reads query and passage together and gives one relevance logit. No cross-encoder ships with any package
here, so it starts from a bi-encoder's BERT (all-MiniLM-L6-v2 by default) with a new, seeded scoring head.

Each example is a query with its positive and ``train.negatives`` mined negatives, scored as one list:
``mnrl`` (the default) is the softmax cross-entropy of the positive against them (binary labels, InPars);
``kl`` the KL divergence to the teach stage's softmax over the same candidates; ``margin_mse`` the teacher's
margins positive - negative. Unlike the bi-encoder there are no in-batch negatives: every pair is a forward pass.

Saved as a sentence-transformers ``CrossEncoder`` folder (safetensors): use it as a teacher
(``teach.teachers.<name>: {kind: cross-encoder, model: artifacts/train/cross}``) or a reranker
(``evaluate.rerank.<name>: {kind: cross-encoder, model: artifacts/train/cross, ...}``).
"""

from __future__ import annotations

from typing import Any, Literal

from irforge.runtime import model_loading
from irforge.training.examples import Example
from irforge.training.loop import TrainerConfig, run_loop
from irforge.training.losses import listwise_kl, margin_mse
from irforge.training.registry import Trainer, TrainJob


class CrossConfig(TrainerConfig):
    base: str = "pkg:all-minilm-l6-v2"  # a BERT to start from (a bi-encoder's folder: its head is new)
    batch_size: int = 16                # queries per micro-batch (each with 1 + train.negatives pairs)
    lr: float = 1.0e-4                  # higher than a bi-encoder's: the scoring head starts from random
    loss: Literal["kl", "margin_mse", "mnrl"] = "mnrl"  # mnrl: softmax CE of the positive vs its negatives (no teacher)


def train(job: TrainJob) -> list[dict[str, Any]]:
    import torch
    from sentence_transformers import CrossEncoder

    cfg: CrossConfig = job.config
    torch.manual_seed(job.seed)  # the new head's initial weights
    with model_loading:
        model = CrossEncoder(str(job.resolve(cfg.base).path), num_labels=1, device="cpu",
                             max_length=cfg.max_query_length + cfg.max_doc_length, local_files_only=True,
                             model_kwargs={"use_safetensors": True})
    network, tokenizer = model.model, model.tokenizer
    network.train()

    def step_fn(batch: list[Example], step: int, total_steps: int):
        queries = [tokenizer.convert_tokens_to_string(tokenizer.tokenize(e.query)[:cfg.max_query_length])
                   for e in batch]  # the query cut to its own budget, so a long one cannot crowd out the passage
        width = 1 + len(batch[0].negatives)
        pairs = [(q, p) for q, e in zip(queries, batch, strict=True) for p in (e.positive, *e.negatives)]
        features = tokenizer([q for q, _ in pairs], [p for _, p in pairs], padding=True, truncation="only_second",
                             max_length=cfg.max_query_length + cfg.max_doc_length, return_tensors="pt")
        logits = network(**features).logits.view(len(batch), width)
        if cfg.loss == "mnrl":
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        else:
            teacher = torch.tensor([e.teacher for e in batch], dtype=torch.float32)
            loss = (listwise_kl(logits, teacher, cfg.teacher_temperature) if cfg.loss == "kl"
                    else margin_mse(logits, teacher))
        return loss, {"loss_rank": float(loss.detach()), "loss_reg": 0.0}

    rows = run_loop("cross", job.examples, cfg, job.seed, step_fn, [p for p in network.parameters() if p.requires_grad])
    network.eval()
    model.save(str(job.out), create_model_card=False, safe_serialization=True)
    return rows


TRAINER = Trainer("cross", CrossConfig, train, "cross-encoder reranker (InPars-light): softmax CE, KL or MarginMSE")
