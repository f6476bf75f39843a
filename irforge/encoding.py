"""Dense text encoding, shared by the stages that embed (filter, mine, index, train).

Texts are sorted by length before batching so each batch pads to a similar length (much less wasted work
on CPU), and the vectors are returned in input order, L2-normalised (cosine = dot product).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from irforge.models import ResolvedModel, resolve_model
from irforge.progress import progress

log = logging.getLogger(__name__)


def load_sentence_transformer(model: ResolvedModel, max_length: int | None = None):
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model.path), device="cpu", local_files_only=True,
                             model_kwargs={"use_safetensors": True, "dtype": torch.float32})
    if max_length:
        st.max_seq_length = max_length
    return st


class DenseEncoder:
    def __init__(self, model_name: str, cache_dir: Path | str = ".irforge-cache", max_length: int = 256,
                 batch_size: int = 64, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model_info = resolve_model(model_name, cache_dir)
        self.model = load_sentence_transformer(self.model_info, max_length)
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], desc: str = "encode") -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in progress(range(0, len(texts), self.batch_size), desc=desc, unit="batch",
                                  total=(len(texts) + self.batch_size - 1) // self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = [texts[i] for i in idx]
                out[idx] = self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True,
                                             normalize_embeddings=True, show_progress_bar=False)
        return out
