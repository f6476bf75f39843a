"""Queries for chunks: chunk selection, prompts, the row cache, generation and cleaning, as one function
that both query stages (doc2query, synthesize) call with their own template and params."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from irforge.config import Section
from irforge.corpus.text import passage_text
from irforge.generation.cache import GenerationCache, cache_key
from irforge.generation.cleaning import REASONS, CleaningRules, clean_chunk
from irforge.generation.generator import Generator, Sample, SamplingParams
from irforge.generation.prompting import Template

log = logging.getLogger(__name__)


class QueryGenConfig(Section):
    """What the two query stages share (doc2query, synthesize); each stage's section sets its own defaults."""

    model: str  # causal LM (GGUF/safetensors folder; chat template applied), any seq2seq (T5), or a hub id
    # a shipped template id (irforge/generation/prompts) or a path to a .txt template; a list = query types, one
    # per chunk by seed (e.g. [question, keywords, claim])
    template: str | list[str]
    n_examples: int = Field(3, ge=0)  # few-shot examples shown by few-shot templates
    chat_template: Literal["auto", "always", "never"] = "auto"  # auto: use the tokenizer's chat template if any
    max_chunks: int | None = Field(None, ge=1)  # chunks that get queries, chosen by seed (null = all)
    n: int = Field(2, ge=1)  # sampled queries per chunk
    temperature: float = Field(0.8, ge=0)  # 0 = greedy (then n > 1 gives duplicates)
    top_k: int = Field(50, ge=0)  # sample among the k most likely tokens (0 = all)
    top_p: float = Field(0.95, gt=0, le=1)  # nucleus sampling mass
    max_new_tokens: int = Field(24, ge=1)  # a longer query is cut (and usually dropped as too long)
    max_passage_words: int = Field(200, ge=1)  # passage words shown in the prompt
    batch_size: int = Field(1, ge=1)  # prompts per batch (>1: samples depend slightly on batch-mates)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bfloat16 where the CPU has native bf16
    cleaning: CleaningRules = CleaningRules()

    def sampling(self) -> SamplingParams:
        return SamplingParams(n=self.n, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, stop_at_newline=True)


def select_chunks(rows: list[dict[str, Any]], max_chunks: int | None, seed: int) -> list[dict[str, Any]]:
    """Up to ``max_chunks`` chunks, chosen by a seeded hash of their id (not their content), in input order.

    Ranking by id keeps the choice stable when the corpus changes: an edited chunk stays chosen, and a new
    one displaces at most one other.
    """
    if max_chunks is None or max_chunks >= len(rows):
        return rows
    rank = sorted(range(len(rows)),
                  key=lambda i: hashlib.sha256(f"{seed}\x1f{rows[i]['chunk_id']}".encode()).hexdigest())
    chosen = set(rank[: int(max_chunks)])
    return [r for i, r in enumerate(rows) if i in chosen]


def assign_templates(chunks: list[dict[str, Any]], templates: Sequence[Template], seed: int) -> list[Template]:
    """Each chunk's template: the one given, or one of several (query types) by a seeded hash of the chunk id,
    so the mix is even on average and a chunk keeps its type when the corpus changes."""
    if not templates:
        raise ValueError("no prompt template given")
    if len(templates) == 1:
        return [templates[0]] * len(chunks)
    return [templates[int(hashlib.sha256(f"{seed}\x1ftype\x1f{c['chunk_id']}".encode()).hexdigest(), 16) % len(templates)]
            for c in chunks]


@dataclass
class QueryRun:
    rows: list[dict[str, Any]]  # generated_queries rows
    metrics: dict[str, Any]


def generate_queries(chunks: list[dict[str, Any]], generator: Generator, template: Template | Sequence[Template],
                     sampling: SamplingParams, seed: int, batch_size: int, cache_path: Path,
                     rules: CleaningRules, generator_name: str, desc: str) -> QueryRun:
    """Generate (or fetch from the cache) ``sampling.n`` queries per chunk and clean them. Several templates
    (query types) are spread over the chunks by :func:`assign_templates`."""
    templates = assign_templates(chunks, [template] if isinstance(template, Template) else list(template), seed)
    prompts = [generator.format(t, c["title"], c["text"]) for c, t in zip(chunks, templates, strict=True)]
    params = {**sampling.as_dict(), "dtype": str(generator.dtype)}  # bf16 and fp32 sample differently
    keys = [cache_key(c["content_hash"], generator.model_hash, hashlib.sha256(p.encode()).hexdigest(), params, seed)
            for c, p in zip(chunks, prompts, strict=True)]
    cache = GenerationCache(cache_path)
    try:
        samples: dict[str, list[Sample]] = cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in samples]
        log.info("%s: %d chunks, %d from the cache, %d to generate", desc, len(chunks), len(chunks) - len(todo),
                 len(todo))

        def store(batch: list[int], out: list[list[Sample]]) -> None:
            fresh = {keys[todo[j]]: s for j, s in zip(batch, out, strict=True)}
            cache.put_many(fresh)
            samples.update(fresh)

        started, cpu = time.perf_counter(), time.process_time()
        if todo:
            generator.generate([prompts[i] for i in todo], [chunks[i]["content_hash"] for i in todo], sampling, seed,
                               batch_size=batch_size, desc=desc, on_batch=store)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            # CPU seconds too: on a shared machine the wall clock says more about the neighbours than about us.
            log.info("%s: generated %d chunks in %.1fs, %.1f CPU-s (%.1f chunks/min, %.1f CPU-s/chunk)", desc,
                     len(todo), elapsed, cpu, 60 * len(todo) / max(elapsed, 1e-9), cpu / len(todo))
    finally:
        cache.close()

    rows: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    per_template: dict[str, Counter[str]] = {}
    for chunk, key, template in zip(chunks, keys, templates, strict=True):
        raw = samples[key]
        passage = passage_text(chunk["title"], chunk["text"])
        for i, (sample, (text, reason)) in enumerate(zip(raw, clean_chunk([s.text for s in raw], passage, rules),
                                                         strict=True)):
            reasons[reason or "kept"] += 1
            per_template.setdefault(template.id, Counter()).update(queries=1, kept=reason is None)
            qid = hashlib.sha256(
                f"{chunk['chunk_id']}\x1f{generator.model_hash}\x1f{template.prompt_id}\x1f{seed}\x1f{i}".encode()
            ).hexdigest()[:16]
            rows.append({
                "query_id": qid, "chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"], "text": text,
                "generator": generator_name, "model_hash": generator.model_hash, "prompt_id": template.prompt_id,
                "template": template.id, "seed": int(seed), "mean_logprob": sample.mean_logprob,
                "kept": reason is None, "reason": reason,
            })
    metrics = {
        "chunks": len(chunks),
        "queries": len(rows),
        "kept": reasons["kept"],
        "kept_fraction": round(reasons["kept"] / len(rows), 4) if rows else 0.0,
        "dropped": {r: reasons[r] for r in REASONS},
        "templates": {t: {"queries": c["queries"], "kept": c["kept"]} for t, c in sorted(per_template.items())},
    }
    return QueryRun(rows=rows, metrics=metrics)
