"""Evaluation: standard IR measures of runs (ir-measures), per-query search timing, paired significance, and
the ablation results table."""

from irforge.evaluation.ablation import ablation_rows, write_ablation
from irforge.evaluation.measures import DEFAULT_MEASURES, score, search_timed, significance

__all__ = ["DEFAULT_MEASURES", "ablation_rows", "score", "search_timed", "significance", "write_ablation"]
