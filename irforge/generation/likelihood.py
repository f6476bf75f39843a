"""Query likelihood: how probable a causal LM finds a query after reading a passage, as a relevance score.

The score of (query, passage) is the mean log-probability of the query's tokens given the prompt
``Passage: <passage>\\nA question about this passage:`` (UPR, Sachan et al. 2022; Zhuang et al. 2023 on
open LMs as query-likelihood rankers). The passage comes first, so the prompt is plain text and no chat template
is applied: instruction-following is not what is asked, only the LM's estimate of which passage explains the
query. For one query the token count is the same for every passage, so the mean orders passages as the sum does;
the mean keeps scores of different queries on one scale (teacher scores, audits).

All candidate passages of a query go through the model in length-sorted batches, left-padded so every row ends
with the query's tokens; only those positions are projected onto the vocabulary (``logits_to_keep``: the LM head
over every prompt token would cost a small model as much as the rest of it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from irforge.generation.generator import Generator

log = logging.getLogger(__name__)

PROMPT_START = "Passage: "
PROMPT_END = "\nA question about this passage:"


class QueryLikelihood:
    """Scores passages for a query by the mean log P(query token | passage prompt, earlier query tokens)."""

    def __init__(self, generator: Generator, max_passage_tokens: int = 256, batch_size: int = 8):
        if generator.is_encoder_decoder:
            raise ValueError(f"query likelihood needs a causal LM; '{generator.info.name}' is encoder-decoder")
        self.generator = generator
        self.tokenizer = generator.tokenizer
        self.max_passage_tokens = max_passage_tokens
        self.batch_size = batch_size
        self._start = self._ids(PROMPT_START)
        self._end = self._ids(PROMPT_END)

    @property
    def model_hash(self) -> str:
        return self.generator.model_hash

    def worker_spec(self) -> tuple[Any, tuple]:
        """How a Dask worker builds this scorer (the same LM, dtype and prompt)."""
        factory, args = self.generator.worker_spec()
        return _on_worker, (factory, args, self.max_passage_tokens, self.batch_size)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, passage: str) -> list[int]:
        """The prompt before the query, the passage cut to ``max_passage_tokens`` tokens."""
        return self._start + self._ids(passage)[:self.max_passage_tokens] + self._end

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Mean log-probability of ``query`` after each passage's prompt (one float per passage)."""
        import torch

        query_ids = self._ids(" " + query.strip())
        if not query_ids:
            raise ValueError("query likelihood: the query is empty after tokenisation")
        prompts = [self.prompt_ids(p) for p in passages]
        scores = np.zeros(len(prompts), dtype=np.float64)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        pad = self.tokenizer.pad_token_id
        n = len(query_ids)
        target = torch.tensor(query_ids)
        model = self.generator.model
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            seqs = [prompts[i] + query_ids for i in rows]
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, seq in enumerate(seqs):  # left padding: every row ends with the query's tokens
                ids[r, width - len(seq):] = torch.tensor(seq)
                mask[r, width - len(seq):] = 1
            position = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                # The token at position t is predicted at t - 1: the last n + 1 positions, less the final one.
                logits = model(input_ids=ids, attention_mask=mask, position_ids=position,
                               logits_to_keep=n + 1).logits[:, :-1].float()
                logprobs = torch.log_softmax(logits, dim=-1).gather(-1, target.expand(len(seqs), n)[..., None])[..., 0]
            for r, i in enumerate(rows):
                scores[i] = float(logprobs[r].mean())
        return scores


def _on_worker(factory: Any, args: tuple, max_passage_tokens: int, batch_size: int) -> QueryLikelihood:
    return QueryLikelihood(factory(*args), max_passage_tokens, batch_size)
