"""Queries for passages: CPU text generation (batched, KV-cached, seeded per row), prompt templates and
few-shot examples, cleaning rules, the row cache, and the one function both query stages call."""

from irforge.generation.cache import GenerationCache, cache_key
from irforge.generation.cleaning import REASONS, CleaningRules, clean_chunk, strip_echo
from irforge.generation.generator import Generator, Sample, SamplingParams, sample_tokens
from irforge.generation.likelihood import QueryLikelihood
from irforge.generation.prompting import (
    Example,
    LeakedTestQueryError,
    Template,
    check_no_test_queries,
    generic_examples,
    load_template,
    load_templates,
    resolve_examples,
)
from irforge.generation.querygen import QueryGenConfig, QueryRun, generate_queries, select_chunks

__all__ = [
    "REASONS", "CleaningRules", "Example", "GenerationCache", "Generator", "LeakedTestQueryError", "QueryGenConfig",
    "QueryLikelihood", "QueryRun", "Sample", "SamplingParams", "Template", "cache_key", "check_no_test_queries", "clean_chunk",
    "generate_queries", "generic_examples", "load_template", "load_templates", "resolve_examples", "sample_tokens", "select_chunks",
    "strip_echo",
]
