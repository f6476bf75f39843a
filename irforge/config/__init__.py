"""Params: params.yaml loaded (:class:`Params`), and validated into one typed, frozen section model each
(:class:`Config`). The one place that parses ``-S key=value`` overrides."""

from irforge.config.params import Params, ParamsError, load_yaml, parse_overrides
from irforge.config.sections import (
    CORE_SECTIONS,
    UNTRACKED,
    Bm25Config,
    Config,
    CorpusConfig,
    EncoderConfig,
    LeakageConfig,
    Pair,
    ReindexConfig,
    RuntimeConfig,
    Section,
)

__all__ = [
    "CORE_SECTIONS", "UNTRACKED", "Bm25Config", "Config", "CorpusConfig", "EncoderConfig", "LeakageConfig", "Pair", "Params",
    "ParamsError", "ReindexConfig", "RuntimeConfig", "Section", "load_yaml", "parse_overrides",
]
