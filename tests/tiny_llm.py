"""A tiny random Llama causal LM folder (safetensors + the embedded MiniLM WordPiece tokenizer), built offline
in a second or two: enough for the generation stages to run end to end (what they generate is noise)."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build_tiny_llama(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from irforge.models import resolve_model

    folder.mkdir(parents=True, exist_ok=True)
    src = resolve_model("pkg:all-minilm-l6-v2").path
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    vocab = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=101, eos_token_id=102, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def query_stage_params(model: Path | str) -> dict[str, dict]:
    """doc2query and synthesize sections pointing at ``model``: 3 chunks, 2 short samples each, float32."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    defaults = yaml.safe_load((repo / "params.yaml").read_text())
    sections = {}
    for stage in ("doc2query", "synthesize"):
        sections[stage] = {**defaults[stage], "model": str(model), "max_chunks": 3, "n": 2, "dtype": "float32",
                           "max_new_tokens": 6, "cleaning": {**defaults[stage]["cleaning"], "min_words": 1}}
    sections["doc2query"]["template"] = "auto"
    return sections
