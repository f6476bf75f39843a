"""Cross-encoders: a sentence-transformers ``CrossEncoder`` (a folder or hub id; none is embedded here) that reads
query and passage together and returns one relevance logit per pair. Used as a teacher and as a reranker."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from irforge.models.resolve import ResolvedModel
from irforge.runtime import model_loading


class CrossEncoderScorer:
    """Scores (query, passage) pairs with a cross-encoder's logit; safetensors weights only."""

    def __init__(self, model: ResolvedModel, max_length: int = 256, batch_size: int = 32):
        from sentence_transformers import CrossEncoder

        self.info = model
        self.batch_size, self.max_length = batch_size, max_length
        with model_loading:  # one model loads at a time in a process (parallel flow tasks)
            self.model = CrossEncoder(str(model.path), device="cpu", max_length=max_length, local_files_only=True,
                                      model_kwargs={"use_safetensors": True})

    @property
    def model_hash(self) -> str:
        return self.info.sha256

    def worker_spec(self) -> tuple[type, tuple]:
        """How a Dask worker builds this scorer."""
        return CrossEncoderScorer, (self.info, self.max_length, self.batch_size)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False),
                          dtype=np.float64).reshape(-1)

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(query, p) for p in passages])
