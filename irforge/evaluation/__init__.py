"""Evaluation: standard IR measures of runs (ir-measures), per-query search timing, paired significance, and
the ablation results table, reranking a run's top documents, and the verdict (which system is best, how sure,
and which judgment to ask for next)."""

from irforge.evaluation.ablation import ablation_corpus, ablation_rows, corpus_identity, same_corpus, write_ablation
from irforge.evaluation.measures import DEFAULT_MEASURES, score, search_timed, significance
from irforge.evaluation.rerank import (
    PassageScorer,
    choose_passages,
    group_passages,
    open_scorer,
    rerank_query,
    rerank_run,
)
from irforge.evaluation.searcher import Searched, Searcher, SearchPlan, fusion_name
from irforge.evaluation.verdict import experiment_verdict

__all__ = [
    "DEFAULT_MEASURES", "PassageScorer", "ablation_corpus", "experiment_verdict", "ablation_rows", "choose_passages", "corpus_identity",
    "rerank_query", "rerank_run", "same_corpus", "score", "search_timed", "Searched", "Searcher", "SearchPlan",
    "fusion_name", "group_passages", "open_scorer", "significance", "write_ablation",
]
