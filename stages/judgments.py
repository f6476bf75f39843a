"""judgments: the collection's relevance judgments (``corpus.queries``, ``corpus.qrels``), read once and
validated, as artifacts every stage that needs them reads (the leakage guards, evaluation, the report).

A corpus without judgments (both set to null) gives empty tables, so the DAG is the same with or without
them. A path that is set but missing is an error (a typo must not pass for "no judgments").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from irforge.config import CorpusConfig
from irforge.contract import SCHEMAS, Output, Stage
from irforge.corpus import JudgmentsError, load_qrels, load_queries
from irforge.engine import StageContext


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
    version="1",
    params=("corpus",),
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
    ctx.write("queries", pa.Table.from_pylist([{"query_id": q, "text": t} for q, t in queries.items()],
                                              schema=SCHEMAS["queries"]))
    ctx.write("qrels", pa.Table.from_pylist([{"query_id": q, "doc_id": d, "grade": g}
                                             for q, docs in qrels.items() for d, g in docs.items()],
                                            schema=SCHEMAS["qrels"]))
    return {"queries": len(queries), "judged_queries": len(qrels), "judgments": sum(len(d) for d in qrels.values())}
