"""Where the stages write, relative to a project root: the artifact contract the tests check against
(the stage declarations in stages/*.py are the source; tests/test_dag.py keeps these in step with them)."""

CHUNKS = "artifacts/chunk/chunks.parquet"
QUARANTINE = "artifacts/chunk/quarantine.parquet"
QUERIES = "artifacts/judgments/queries.parquet"
QRELS = "artifacts/judgments/qrels.parquet"
DOC2QUERY = "artifacts/doc2query/queries.parquet"
EXPANDED = "artifacts/doc2query/expanded.parquet"
DOC2QUERY_METRICS = "artifacts/doc2query/metrics.json"
SYNTHETIC = "artifacts/synthesize/queries.parquet"
SYNTHETIC_METRICS = "artifacts/synthesize/metrics.json"
FILTERED = "artifacts/filter/queries.parquet"
FILTER_METRICS = "artifacts/filter/metrics.json"
TEACHER_SCORES = "artifacts/teach/scores.parquet"
TRIPLES = "artifacts/mine/triples.parquet"
MINE_METRICS = "artifacts/mine/metrics.json"
EVALUATION = "artifacts/evaluate"
METRICS = "artifacts/evaluate/metrics.json"
PER_QUERY = "artifacts/evaluate/per_query.parquet"
RUNS = "artifacts/evaluate/runs.parquet"
TREC_RUNS = "artifacts/evaluate/trec"
SYSTEMS_TABLE = "artifacts/evaluate/systems.csv"
REPORT = "artifacts/report"


def model_dir(model: str) -> str:
    return f"artifacts/train/{model}"


def train_log(model: str) -> str:
    return f"artifacts/train/log-{model}.parquet"


def train_log_csv(model: str) -> str:
    return f"artifacts/train/log-{model}.csv"


def train_metrics(model: str) -> str:
    return f"artifacts/train/metrics-{model}.json"


def index_dir(system: str) -> str:
    return f"artifacts/index/{system}"
