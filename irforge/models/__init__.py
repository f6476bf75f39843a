"""Models: names resolved to weights on disk (embedded ``pkg:`` packages, folders, hub ids; safetensors and
GGUF only), and the encoders built on them: dense (sentence-transformers, with a row cache) and SPLADE."""

from irforge.models.cache import EmbeddingCache, ImpactCache
from irforge.models.cross_encoder import CrossEncoderScorer
from irforge.models.dense import (
    DenseEncoder,
    cpu_has_bf16,
    load_sentence_transformer,
    resolve_precision,
    text_key,
)
from irforge.models.resolve import EMBEDDED, ModelNotFoundError, ResolvedModel, resolve_model
from irforge.models.splade import SparseVector, SpladeEncoder, quantise, splade_pool

__all__ = [
    "EMBEDDED", "CrossEncoderScorer", "DenseEncoder", "EmbeddingCache", "ImpactCache", "ModelNotFoundError", "ResolvedModel",
    "SparseVector", "SpladeEncoder", "cpu_has_bf16", "load_sentence_transformer", "quantise", "resolve_model",
    "resolve_precision", "splade_pool", "text_key",
]
