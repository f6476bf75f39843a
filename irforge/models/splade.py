"""SPLADE: learned sparse representations over a BERT MLM head (Formal et al. 2021, SPLADE v2 max pooling).

    w_j = max_i log(1 + relu(logit_ij))   over the non-padding input tokens i, for every vocabulary term j

Shared by the SPLADE trainer (the differentiable :meth:`SpladeEncoder.forward`), the index stage (documents
quantised into integer impacts for a Lucene impact index) and search (queries encoded the same way, searched
through pyserini's ``LuceneImpactSearcher``). Only safetensors
weights are loaded: a pickled ``heads.pt`` shipped beside some checkpoints is never opened.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irforge.contract.artifacts import stable_hash
from irforge.corpus.text import PASSAGE_TEXT_VERSION, passage_text
from irforge.models.cache import CountsCacheHits, ImpactCache
from irforge.models.resolve import ResolvedModel, resolve_model
from irforge.runtime.partition import length_batches, map_calls
from irforge.runtime.preload import model_loading
from irforge.runtime.progress import progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SparseVector = dict[str, int]  # vocabulary token -> quantised impact


def splade_pool(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, vocab) MLM logits -> (batch, vocab) non-negative term weights (log-saturated max pooling)."""
    import torch

    weights = torch.log1p(torch.relu(logits)) * attention_mask.unsqueeze(-1).to(logits.dtype)
    return weights.max(dim=1).values


def quantise(weights: np.ndarray, vocab: list[str], scale: float) -> list[SparseVector]:
    """Rows of float term weights -> {token: round(weight * scale)}, zeros dropped (Lucene impacts are integers)."""
    out: list[SparseVector] = []
    for row in weights:
        idx = np.nonzero(row)[0]
        impacts = np.rint(row[idx] * scale).astype(np.int64)
        out.append({vocab[i]: int(v) for i, v in zip(idx, impacts, strict=True) if v > 0})
    return out


class SpladeEncoder(CountsCacheHits):
    """A BertForMaskedLM-style model used as a SPLADE encoder (training and inference)."""

    def __init__(self, model: ResolvedModel | str, cache_dir: Path | str = ".irforge-cache", max_length: int = 256,
                 batch_size: int = 32, threads: int | None = None, use_cache: bool = True):
        import torch
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_info: ResolvedModel = model if isinstance(model, ResolvedModel) else resolve_model(model, cache_dir)
        path = str(self.model_info.path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        with model_loading:
            self.model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                              dtype=torch.float32)
        self.model.eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_dir, self.use_cache = Path(cache_dir), use_cache
        self._caches: dict[Path, ImpactCache] = {}
        self.cache_hits = self.cache_misses = 0
        inverse = {i: t for t, i in self.tokenizer.get_vocab().items()}
        self.vocab = [inverse.get(i, f"[unused{i}]") for i in range(self.model.config.vocab_size)]

    def truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` are longer than ``max_length`` tokens (their ends are not read)."""
        return sum(len(ids) > self.max_length for ids in self.tokenizer(list(texts), verbose=False)["input_ids"])

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=max_length or self.max_length,
                              return_tensors="pt")

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Differentiable (batch, vocab) representations."""
        logits = self.model(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).logits
        return splade_pool(logits, features["attention_mask"])

    def encode_batch_dense(self, texts: list[str]) -> np.ndarray:
        """(batch, vocab) float32 weights of one batch."""
        import torch

        with torch.inference_mode():
            return self.forward(self.tokenize(list(texts))).numpy()

    def encode_batch(self, texts: list[str], scale: float) -> list[SparseVector]:
        return quantise(self.encode_batch_dense(texts), self.vocab, scale)

    def worker_spec(self) -> tuple[Any, tuple]:
        """How a Dask worker builds this encoder (without a cache: vectors come back to be cached here)."""
        return SpladeEncoder, (self.model_info, ".irforge-cache", self.max_length, self.batch_size, None, False)

    def encode_dense(self, texts: list[str], desc: str = "splade") -> np.ndarray:
        """(n, vocab) float32 weights in input order (small inputs only: tests, a batch of queries)."""
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for idx in progress(length_batches(texts, self.batch_size), desc=desc, unit="batch"):
            out[idx] = self.encode_batch_dense([texts[i] for i in idx])
        return out

    def encode(self, texts: list[str], scale: float, desc: str = "splade") -> list[SparseVector]:
        """Quantised sparse vectors ({token: impact}) in input order, quantised batch by batch (on a Dask worker,
        the batches spread over the cluster)."""
        batches = length_batches(texts, self.batch_size)
        out: list[SparseVector] = [{} for _ in texts]
        encoded = map_calls(self, "encode_batch", [([texts[i] for i in idx], scale) for idx in batches], desc=desc)
        for idx, vectors in zip(batches, encoded, strict=True):
            for i, vector in zip(idx, vectors, strict=True):
                out[i] = vector
        return out

    def fingerprint(self, scale: float) -> str:
        """What identifies a passage's quantised vector: the weights' hash and every setting that changes it."""
        return stable_hash({"model": self.model_info.sha256, "max_length": self.max_length, "scale": scale,
                            "passage_text": PASSAGE_TEXT_VERSION})

    def encode_chunks(self, chunks: list[dict], scale: float, desc: str = "splade") -> list[SparseVector]:
        """Quantised vectors of ``chunks`` rows (chunk_id, title, text, content_hash), cached by content_hash, so
        a re-run encodes only the passages that changed (``use_cache=False``: always encode)."""
        texts = [passage_text(c["title"], c["text"]) for c in chunks]
        cache = None
        if self.use_cache:  # one per setting, kept: its key index is read once however many blocks are encoded
            folder = self.cache_dir / "impacts" / self.fingerprint(scale)[:16]
            cache = self._caches.setdefault(folder, ImpactCache(folder))
        return list(self._through(cache, [c["chunk_id"] for c in chunks], [c["content_hash"] for c in chunks],
                                  lambda rows: self.encode([texts[i] for i in rows], scale, desc)))

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
