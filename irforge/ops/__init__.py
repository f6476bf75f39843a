"""Operations around the experiment: auditing artifacts (lineage, validation), serving versioned indexes and
re-indexing them as the corpus changes, and ablation runs."""
