"""Text generation on CPU for the query stages (doc2query, synthesize), shared so both batch the same way.

A :class:`Generator` wraps either a causal LM (GGUF or safetensors folder; its chat template is applied when
it has one) or any seq2seq model (T5-style doc2query) when the config says encoder-decoder. Speed comes from:

- length-bucketed batches (prompts sorted by token length, so little padding), left padding for causal LMs;
- one prefill per prompt, shared by its ``n`` samples (the KV cache is repeated after the prefill; for
  seq2seq the encoder runs once) — prompts are ~10x longer than queries, so this is most of the work;
- a KV-cached decode loop that drops rows as soon as they finish (EOS or end of line).

Sampling is seeded *per row*: sample ``i`` of a prompt draws from its own generator seeded by
(seed, prompt key, i), so a prompt's queries do not depend on which other prompts share its batch. That is
what makes the row-level cache (:mod:`irforge.generation.cache`) exact: a cached run and a fresh run agree.
Each sample carries the mean log-probability of its tokens under the model (temperature 1, unwarped),
the InPars score.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from irforge.models.resolve import ResolvedModel, resolve_model
from irforge.runtime.partition import map_calls
from irforge.runtime.preload import model_loading

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = whole vocabulary
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop_at_newline: bool = True  # a query is one line; stop a row at its first line break after some text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sample:
    text: str
    mean_logprob: float
    n_tokens: int


def row_seed(seed: int, key: str, index: int) -> int:
    """A 63-bit seed for sample ``index`` of the prompt identified by ``key``."""
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Generator:
    """A generator model (weights loaded on first use) and its tokenizer; :meth:`generate` turns prompts into samples."""

    def __init__(self, model: ResolvedModel | str, cache_dir: Path | str = ".irforge-cache", threads: int | None = None,
                 chat_template: str = "auto", dtype: str = "float32"):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        if dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got '{dtype}'")
        if dtype == "auto":  # bfloat16 where the CPU computes it natively: 2x faster here, GGUF weights included
            from irforge.models import cpu_has_bf16

            dtype = "bfloat16" if cpu_has_bf16() else "float32"
        if chat_template not in ("auto", "always", "never"):
            raise ValueError(f"chat_template must be auto, always or never, got '{chat_template}'")
        if threads:
            torch.set_num_threads(int(threads))
        self.info: ResolvedModel = model if isinstance(model, ResolvedModel) else resolve_model(model, cache_dir)
        kwargs: dict[str, Any] = {"gguf_file": self.info.gguf_file} if self.info.gguf_file else {}
        self._load_kwargs = kwargs
        self.config = AutoConfig.from_pretrained(self.info.path, local_files_only=True, **kwargs)
        self.is_encoder_decoder = bool(getattr(self.config, "is_encoder_decoder", False))
        self.tokenizer = AutoTokenizer.from_pretrained(self.info.path, local_files_only=True, **kwargs)
        self.dtype = getattr(torch, dtype)
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template == "always" and not has_template:
            raise ValueError(f"model '{self.info.name}' has no chat template (chat_template: always)")
        self.use_chat = not self.is_encoder_decoder and has_template and chat_template != "never"
        self.chat_template = chat_template
        if self.tokenizer.pad_token_id is None:  # many causal LMs ship without one; any id works (masked out)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right" if self.is_encoder_decoder else "left"
        self._model: Any = None
        self._stop: set[int] | None = None
        self._masks: Any = None

    @property
    def model(self):
        """The weights, loaded on first use: a fully cached run only needs the tokenizer and the hash."""
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

            cls = AutoModelForSeq2SeqLM if self.is_encoder_decoder else AutoModelForCausalLM
            kwargs = dict(self._load_kwargs)
            if not self.info.gguf_file:
                kwargs["use_safetensors"] = True
            # bfloat16 halves the prefill time on CPUs with AVX512-BF16/AMX (GGUF weights are dequantized here).
            with model_loading:
                self._model = cls.from_pretrained(self.info.path, local_files_only=True, dtype=self.dtype,
                                                  **kwargs).eval()
        return self._model

    @property
    def stop_ids(self) -> set[int]:
        if self._stop is None:
            self._stop = self._stop_ids()
        return self._stop

    @property
    def model_hash(self) -> str:
        return self.info.sha256

    def format(self, template: Any, title: str, passage: str) -> str:
        """The exact model input for a passage: the template's chat turns through the model's chat template
        for chat models, its plain text otherwise (see :class:`irforge.generation.prompting.Template`)."""
        if not self.use_chat:
            return template.render(title, passage)
        return self.tokenizer.apply_chat_template(template.messages(title, passage), tokenize=False,
                                                  add_generation_prompt=True)

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (self.model.generation_config.eos_token_id, self.model.config.eos_token_id,
                      self.tokenizer.eos_token_id):
            if value is not None:
                ids.update(value if isinstance(value, list) else [value])
        for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):  # chat turn ends
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid >= 0:
                ids.add(tid)
        return ids

    def token_masks(self):
        """Boolean masks over the vocabulary: tokens holding a line break, and tokens with no visible text
        (whitespace, special tokens). Computed once, with one batch decode of the vocabulary."""
        import torch

        if self._masks is None:
            size = max(len(self.tokenizer), self.config.vocab_size)
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=True)
            newline, blank = torch.zeros(size, dtype=torch.bool), torch.ones(size, dtype=torch.bool)
            newline[: len(texts)] = torch.tensor(["\n" in t for t in texts])
            blank[: len(texts)] = torch.tensor([not t.strip() for t in texts])
            self._masks = newline, blank
        return self._masks

    # ------------------------------------------------------------ generation

    def generate(self, prompts: Sequence[str], keys: Sequence[str], sampling: SamplingParams, seed: int,
                 batch_size: int = 8, desc: str = "generate",
                 on_batch: Callable[[list[int], list[list[Sample]]], None] | None = None) -> list[list[Sample]]:
        """``sampling.n`` samples for each prompt (already formatted), in input order.

        ``keys`` identify the prompts for the per-row random streams (e.g. the chunk's content hash);
        ``on_batch(indices, samples)`` is called after each batch (the cache stores it there).
        """
        if len(prompts) != len(keys):
            raise ValueError("generate: prompts and keys differ in length")
        if not prompts:
            return []
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=not self.use_chat)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))  # length buckets: little padding
        out: list[list[Sample]] = [[] for _ in prompts]
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

        def done(b: int, samples: list[list[Sample]]) -> None:
            for i, rows in zip(batches[b], samples, strict=True):
                out[i] = rows
            if on_batch is not None:
                on_batch(batches[b], samples)

        # On a Dask worker the batches spread over the cluster, each sampled exactly as here.
        map_calls(self, "generate_batch", [([prompts[i] for i in batch], [keys[i] for i in batch], sampling, seed)
                                           for batch in batches], desc=desc, on_result=done)
        return out

    def worker_spec(self) -> tuple[Any, tuple]:
        """How a Dask worker builds this generator (same weights, chat template and dtype)."""
        return Generator, (self.info, ".irforge-cache", None, self.chat_template, str(self.dtype).removeprefix("torch."))

    def generate_batch(self, prompts: list[str], keys: list[str], sp: SamplingParams,
                        seed: int) -> list[list[Sample]]:
        import torch
        from transformers import DynamicCache, EncoderDecoderCache

        n = sp.n
        gens = []
        for key in keys:
            for i in range(n):
                g = torch.Generator()
                g.manual_seed(row_seed(seed, key, i))
                gens.append(g)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not self.use_chat)
        mask = enc["attention_mask"]
        with torch.inference_mode():
            if self.is_encoder_decoder:
                hidden = self.model.get_encoder()(input_ids=enc["input_ids"], attention_mask=mask).last_hidden_state
                state = {"hidden": hidden.repeat_interleave(n, 0), "enc_mask": mask.repeat_interleave(n, 0)}
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
                start = self.model.generation_config.decoder_start_token_id
                if start is None:
                    start = self.model.config.decoder_start_token_id
                rows = len(prompts) * n
                logits = self.model(encoder_outputs=(state["hidden"],), attention_mask=state["enc_mask"],
                                    decoder_input_ids=torch.full((rows, 1), int(start)), past_key_values=cache,
                                    use_cache=True).logits[:, -1]
            else:
                position = (mask.cumsum(-1) - 1).clamp(min=0)
                cache = DynamicCache(config=self.model.config)
                logits = self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=position,
                                    past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
                # One prefill per prompt; its n samples share it.
                logits = logits.repeat_interleave(n, 0)
                cache.batch_repeat_interleave(n)
                state = {"mask": mask.repeat_interleave(n, 0), "pos": position[:, -1].repeat_interleave(n, 0)}
            tokens, logprobs = self._decode(logits, cache, state, gens, sp)
        results: list[list[Sample]] = []
        for p in range(len(prompts)):
            rows = []
            for i in range(n):
                toks, lps = tokens[p * n + i], logprobs[p * n + i]
                content = [t for t in toks if t not in self.stop_ids]
                text = self.tokenizer.decode(content, skip_special_tokens=True).strip()
                if sp.stop_at_newline:
                    text = text.split("\n", 1)[0].strip()
                rows.append(Sample(text=text, mean_logprob=float(sum(lps) / len(lps)) if lps else 0.0,
                                   n_tokens=len(toks)))
            results.append(rows)
        return results

    def _decode(self, logits, cache, state: dict[str, Any], gens: list, sp: SamplingParams):
        """KV-cached decoding; finished rows leave the batch. Returns per-row token ids and log-probs."""
        import torch

        rows = logits.shape[0]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        has_text = torch.zeros(rows, dtype=torch.bool)
        active = torch.arange(rows)  # original row index of each row still in the batch
        newline, blank = self.token_masks()
        stop = torch.tensor(sorted(self.stop_ids), dtype=torch.long)
        for step in range(sp.max_new_tokens):
            logits = logits.float()
            chosen = sample_tokens(logits, sp, [gens[i] for i in active.tolist()])
            lp = torch.log_softmax(logits, -1).gather(1, chosen[:, None])[:, 0]
            done = torch.isin(chosen, stop)
            if sp.stop_at_newline:
                done |= newline[chosen] & has_text[active]
            has_text[active] |= ~blank[chosen]
            for r, t, v in zip(active.tolist(), chosen.tolist(), lp.tolist(), strict=True):
                tokens[r].append(t)
                logprobs[r].append(v)
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0 or step == sp.max_new_tokens - 1:
                break
            if keep.numel() < active.numel():
                active, chosen = active[keep], chosen[keep]
                cache.batch_select_indices(keep)
                state = {k: v[keep] for k, v in state.items()}
            if self.is_encoder_decoder:
                logits = self.model(encoder_outputs=(state["hidden"],), attention_mask=state["enc_mask"],
                                    decoder_input_ids=chosen[:, None], past_key_values=cache,
                                    use_cache=True).logits[:, -1]
            else:
                state["mask"] = torch.cat([state["mask"], torch.ones_like(state["mask"][:, :1])], dim=1)
                state["pos"] = state["pos"] + 1
                logits = self.model(input_ids=chosen[:, None], attention_mask=state["mask"],
                                    position_ids=state["pos"][:, None], past_key_values=cache,
                                    use_cache=True).logits[:, -1]
        return tokens, logprobs


def sample_tokens(logits, sp: SamplingParams, gens: list):
    """Next token per row: argmax when temperature is 0, else top-k/top-p sampling, row ``r`` drawing from
    ``gens[r]`` (inverse CDF of one uniform draw), so rows are independent of their batch-mates."""
    import torch

    if sp.temperature <= 0:
        return logits.argmax(-1)
    k = logits.shape[-1] if sp.top_k <= 0 else min(sp.top_k, logits.shape[-1])
    values, index = torch.topk(logits / sp.temperature, k, dim=-1)  # sorted, highest first
    probs = torch.softmax(values, -1)
    if sp.top_p < 1.0:
        outside = probs.cumsum(-1) - probs > sp.top_p  # keep the smallest prefix whose mass reaches top_p
        probs = probs.masked_fill(outside, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens]).to(cdf.dtype)
    choice = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=k - 1)
    return index.gather(1, choice)[:, 0]
