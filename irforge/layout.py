"""Where each artifact lives, relative to the project root. dvc.yaml names the same paths
(tests/test_dag.py checks the two agree). Each stage writes only under its own folder."""

from __future__ import annotations

ARTIFACTS = "artifacts"

CHUNKS = f"{ARTIFACTS}/chunk/chunks.parquet"
QUARANTINE = f"{ARTIFACTS}/chunk/quarantine.parquet"

DOC2QUERY = f"{ARTIFACTS}/doc2query/queries.parquet"
EXPANDED = f"{ARTIFACTS}/doc2query/expanded.parquet"
DOC2QUERY_METRICS = f"{ARTIFACTS}/doc2query/metrics.json"  # counts per cleaning reason
SYNTHETIC = f"{ARTIFACTS}/synthesize/queries.parquet"
SYNTHETIC_METRICS = f"{ARTIFACTS}/synthesize/metrics.json"
FILTERED = f"{ARTIFACTS}/filter/queries.parquet"
FILTER_METRICS = f"{ARTIFACTS}/filter/metrics.json"  # pass rates (DVC metrics)
TRIPLES = f"{ARTIFACTS}/mine/triples.parquet"
MINE_METRICS = f"{ARTIFACTS}/mine/metrics.json"  # negatives per query, guard drops (DVC metrics)
MODELS = f"{ARTIFACTS}/train"  # one folder per trained model
TRAIN_LOG = f"{ARTIFACTS}/train/log.parquet"
TRAIN_METRICS = f"{ARTIFACTS}/train/metrics.json"  # examples, steps, losses, speed per model (DVC metrics)


TRAINED_MODELS = ("dense", "splade")  # what the train stage can produce


def model_dir(model: str) -> str:
    """Folder of one trained model (a standard sentence-transformers / transformers folder)."""
    return f"{MODELS}/{model}"


def train_log_csv(model: str) -> str:
    """One model's rows of the training log as CSV, for `dvc plots` (which cannot read Parquet)."""
    return f"{ARTIFACTS}/train/log-{model}.csv"



def index_dir(system: str) -> str:
    """Folder of one retrieval system's index (bm25, bm25-d2q, dense, splade, ...)."""
    return f"{ARTIFACTS}/index/{system}"


EVALUATION = f"{ARTIFACTS}/evaluate"
METRICS = f"{EVALUATION}/metrics.json"
PER_QUERY = f"{EVALUATION}/per_query.parquet"
RUNS = f"{EVALUATION}/runs.parquet"
TREC_RUNS = f"{EVALUATION}/trec"  # one <system>.trec per system
SYSTEMS_TABLE = f"{EVALUATION}/systems.csv"  # one row per system, for `dvc plots`
SIGNIFICANCE = f"{EVALUATION}/significance.json"

REPORT = f"{ARTIFACTS}/report"  # index.html and its figures

# Served indexes (versioned, switched atomically by `irforge reindex`); not DVC outputs, kept across runs.
SERVE = "serve"

# Row-level caches survive stage re-runs; they are not DVC outputs (dvc would delete them).
CACHE = ".irforge-cache"
GENERATION_CACHE = f"{CACHE}/generation.sqlite"  # generated queries per (chunk, model, prompt, params, seed)
