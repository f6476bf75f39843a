"""judgments: the collection's relevance judgments (``corpus.queries``, ``corpus.qrels``), read once and
validated, as artifacts every stage that needs them reads (the leakage guards, evaluation, the report).

The judged queries are split once, by seed: ``judgments.dev_queries`` of them form the **dev** split (the
only queries a tuning decision or a few-shot prompt may see) and the rest the **test** split every result is
reported on. The split is a column of the queries artifact, so every stage and the audit see the same one.

A corpus without judgments (both set to null) gives empty tables, so the DAG is the same with or without
them. A path that is set but missing is an error (a typo must not pass for "no judgments").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from irforge.config import CorpusConfig, Section
from irforge.contract import SCHEMAS, Output, Stage
from irforge.corpus import JudgmentsError, load_qrels, load_queries, split_queries
from irforge.engine import StageContext

log = logging.getLogger(__name__)


class JudgmentsConfig(Section):
    # Judged queries held out as the dev split (tuning, few-shot examples), chosen by seed; the rest is test.
    # At most a third of the judged queries, so the test split stays the larger one.
    dev_queries: int = Field(25, ge=0)


def judgment_files(config: Any) -> list[str]:
    """The judgment files DVC must track besides ``${corpus.path}`` (only those outside it)."""
    corpus: CorpusConfig = config.section("corpus")
    out = []
    for key in ("queries", "qrels"):
        value = getattr(corpus, key)
        if value is not None and not _inside(value, corpus.path):
            out.append(f"${{corpus.{key}}}")
    return out


def _inside(path: str, folder: str) -> bool:
    return Path(path).as_posix().startswith(Path(folder).as_posix().rstrip("/") + "/")


STAGE = Stage(
    name="judgments",
    version="2",
    params=("seed", "corpus", "judgments"),
    config=JudgmentsConfig,
    raw=("${corpus.path}", judgment_files),
    outputs=(
        Output("queries", "queries.parquet", "queries", description="judged queries (empty without judgments)"),
        Output("qrels", "qrels.parquet", "qrels", description="relevance grades (empty without judgments)"),
    ),
)


def run(ctx: StageContext) -> dict[str, Any]:
    corpus: CorpusConfig = ctx.section("corpus")
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    if corpus.queries is not None:
        paths = {key: ctx.path(getattr(corpus, key)) for key in ("queries", "qrels")}
        for key, path in paths.items():
            if not path.exists():
                raise JudgmentsError(f"{path}: corpus.{key} not found (set corpus.queries and corpus.qrels to null "
                                     "for a corpus without judgments)")
        queries = load_queries(ctx.use_input(paths["queries"], "queries"))
        qrels = load_qrels(ctx.use_input(paths["qrels"], "qrels"))
    judged = [q for q in queries if q in qrels]
    wanted = ctx.section("judgments").dev_queries
    dev_queries = min(wanted, len(judged) // 3)
    if dev_queries < wanted and judged:
        log.warning("judgments.dev_queries %d is more than a third of the %d judged queries: using %d",
                    wanted, len(judged), dev_queries)
    splits = split_queries(judged, dev_queries, ctx.seed)
    ctx.write("queries", pa.Table.from_pylist([{"query_id": q, "text": t, "split": splits.get(q, "unjudged")}
                                               for q, t in queries.items()], schema=SCHEMAS["queries"]))
    ctx.write("qrels", pa.Table.from_pylist([{"query_id": q, "doc_id": d, "grade": g}
                                             for q, docs in qrels.items() for d, g in docs.items()],
                                            schema=SCHEMAS["qrels"]))
    return {"queries": len(queries), "judged_queries": len(qrels), "judgments": sum(len(d) for d in qrels.values()),
            "dev": dev_queries, "test": len(judged) - dev_queries}
