"""Trainers behind a registry: every module of :mod:`irforge.training.trainers` that defines ``TRAINER`` is
one, so a new trainer is one file. The ``train`` params section gets one block per trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from irforge.models.resolve import ResolvedModel
from irforge.runtime.discovery import declarations
from irforge.training.examples import Example
from irforge.training.loop import TrainerConfig


@dataclass(frozen=True)
class TrainJob:
    """What a trainer is handed: the examples, its config block, the seed, where to save the model, and how to
    resolve a model name (the stage context's resolver, which records it in provenance)."""

    examples: list[Example]
    config: Any
    seed: int
    out: Path
    resolve: Callable[[str], ResolvedModel]
    notes: dict[str, Any] = field(default_factory=dict)  # what the trainer chose on the way (metrics show it)


@dataclass(frozen=True)
class Trainer:
    name: str
    config: type[TrainerConfig]
    train: Callable[[TrainJob], list[dict[str, Any]]]  # returns the per-step log rows
    description: str = ""


@lru_cache(maxsize=1)
def registered_trainers() -> dict[str, Trainer]:
    return {name: t for name, (_, t) in declarations("irforge.training.trainers", "TRAINER", Trainer).items()}


def trainer(name: str) -> Trainer:
    known = registered_trainers()
    if name not in known:
        raise ValueError(f"train.models: unknown trainer '{name}' (known: {', '.join(known)})")
    return known[name]
