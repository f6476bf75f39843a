"""Fine-tuning on mined triples: examples and batches, the shared optimisation loop, losses, and trainers
behind a registry (one module each in :mod:`irforge.training.trainers`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model, field_validator

from irforge.config import Section
from irforge.training.examples import Example, build_examples, make_batches
from irforge.training.loop import TrainerConfig, run_loop
from irforge.training.registry import Trainer, TrainJob, registered_trainers, trainer


class TrainSettings(Section):
    """What every trainer shares: which trainers run, and which examples they see."""

    models: list[str] = ["dense", "splade"]  # trainers to run (one `train-<name>` stage each)
    negatives: int = Field(3, ge=0)  # mined hard negatives per query (the candidates a teacher ranks; 0 = in-batch only)
    negative_pick: Literal["top", "random"] = "top"  # best-ranked mined negatives first, or a random subset
    queries_per_chunk: int | None = Field(None, ge=1)  # cap on training queries per positive chunk (null = all)
    max_triples: int | None = Field(256, ge=1)  # cap on examples after the seeded shuffle (null = all)
    # Topicality cut: keep a query only when the teach stage's combined score ranks its own passage within the
    # top N of its candidates (null = keep all); every trainer then reads the teacher scores.
    topicality: int | None = Field(None, ge=1)

    @field_validator("models")
    @classmethod
    def _known(cls, models: list[str]) -> list[str]:
        for name in models:
            trainer(name)  # raises, naming the known trainers
        return models


def train_config() -> type[Section]:
    """The ``train`` section's model: the shared settings plus one block per registered trainer."""
    blocks = {name: (t.config, t.config()) for name, t in registered_trainers().items()}
    return create_model("TrainConfig", __base__=TrainSettings, **blocks)


__all__ = [
    "Example", "TrainJob", "TrainSettings", "Trainer", "TrainerConfig", "build_examples", "make_batches", "run_loop",
    "registered_trainers", "train_config", "trainer",
]
