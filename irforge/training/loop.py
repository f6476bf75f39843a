"""The optimisation loop every trainer shares: epochs of batches, gradient accumulation, clipping, AdamW
with a linear warm-up then linear decay, and one log row per optimiser step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from irforge.config import Section
from irforge.runtime.progress import progress
from irforge.training.examples import Example, make_batches

log = logging.getLogger(__name__)

# step_fn(batch, step, total_steps) -> (loss tensor, extra log fields) for one micro-batch
StepFn = Callable[[list[Example], int, int], tuple[Any, dict[str, float]]]


class TrainerConfig(Section):
    """The schedule every trainer has (its block under ``train``, e.g. ``train.dense``)."""

    matches_temperature: ClassVar[bool] = False  # whether the trainer implements teacher_temperature: auto

    base: str  # the model to start from (pkg: name, folder or hub id)
    epochs: int = Field(1, ge=1)  # passes over the examples (more tends to overfit synthetic queries)
    batch_size: int = Field(32, ge=1)  # queries per micro-batch (in-batch negatives grow with it)
    gradient_accumulation: int = Field(1, ge=1)  # micro-batches per optimiser step
    lr: float = Field(2.0e-5, gt=0)  # peak learning rate (AdamW)
    warmup: float = Field(0.1, ge=0, le=1)  # fraction of steps with a linear warm-up (then linear decay to 0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_query_length: int = Field(32, ge=1)  # tokens read from a query
    max_doc_length: int = Field(128, ge=1)  # tokens read from a passage while training
    # kl: listwise KL to the teacher's softmax over each query's candidates (teach stage); margin_mse: the
    # teacher's score margins (GPL); mnrl: binary labels, in-batch + hard negatives (no teacher).
    loss: Literal["kl", "margin_mse", "mnrl"] = "kl"
    # kl: softmax temperature on the teacher's combined z-scores; auto = as sharp as the student's own scores
    # before training (irforge.training.losses.matched_temperature)
    teacher_temperature: Annotated[float, Field(gt=0)] | Literal["auto"] = 1.0

    @property
    def distills(self) -> bool:
        return self.loss != "mnrl"

    @model_validator(mode="after")
    def _auto_temperature_where_implemented(self) -> TrainerConfig:
        if self.teacher_temperature == "auto" and not self.matches_temperature:
            raise ValueError("teacher_temperature: auto is implemented for the dense trainer; give a number")
        return self


def optimiser(parameters, cfg: TrainerConfig, total_steps: int):
    import torch
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, get_linear_schedule_with_warmup(opt, int(cfg.warmup * total_steps), max(1, total_steps))


def run_loop(name: str, examples: list[Example], cfg: TrainerConfig, seed: int, step_fn: StepFn,
             parameters: list) -> list[dict[str, Any]]:
    """Run the epochs; the batches of every epoch are drawn up front, so the schedules know the step count."""
    import torch

    rng = np.random.default_rng(seed)
    plan = []  # (epoch, micro-batches of one optimiser step)
    for epoch in range(cfg.epochs):
        batches = make_batches(examples, cfg.batch_size, rng)
        plan += [(epoch, batches[i : i + cfg.gradient_accumulation])
                 for i in range(0, len(batches), cfg.gradient_accumulation)]
    opt, scheduler = optimiser(parameters, cfg, len(plan))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for step, (epoch, group) in enumerate(progress(plan, desc=f"train {name}", unit="step")):
        parts: list[dict[str, float]] = []
        for batch in group:
            loss, extra = step_fn(batch, step, len(plan))
            (loss * len(batch) / sum(len(b) for b in group)).backward()
            parts.append({"loss": float(loss.detach()), **extra})
        torch.nn.utils.clip_grad_norm_(parameters, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        opt.step()
        scheduler.step()
        opt.zero_grad(set_to_none=True)
        rows.append({"model": name, "step": step, "epoch": epoch, "lr": lr,
                     **{k: float(np.mean([p[k] for p in parts])) for k in parts[0]}})
    seconds = time.perf_counter() - started
    seen = len(examples) * cfg.epochs
    log.info("%s: %d steps, %d examples x %d epochs in %.1fs (%.2f triples/s); loss %.4f -> %.4f", name, len(plan),
             len(examples), cfg.epochs, seconds, seen / max(seconds, 1e-9),
             rows[0]["loss"] if rows else float("nan"), rows[-1]["loss"] if rows else float("nan"))
    return rows
