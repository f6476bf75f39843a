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
from typing import Any, Literal

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
    # Judgments naming a query that is not in corpus.queries or a document that is not in the corpus cannot be
    # scored: drop them (reported with counts and examples) or fail.
    unknown: Literal["drop", "fail"] = "drop"


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
    version="3",
    params=("seed", "corpus", "judgments"),
    config=JudgmentsConfig,
    inputs=("chunks",),
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
    unknown = unknown_judgments(queries, qrels, set(ctx.read("chunks", ["doc_id"]).column("doc_id").to_pylist()))
    if unknown["judgments"]:
        where = ctx.path(corpus.qrels)
        message = (f"{where}: {unknown['judgments']} judgments name {len(unknown['queries'])} unknown queries "
                   f"(e.g. {', '.join(unknown['queries'][:3]) or '-'}) and {len(unknown['documents'])} documents not "
                   f"in the corpus (e.g. {', '.join(unknown['documents'][:3]) or '-'})")
        if ctx.section("judgments").unknown == "fail":
            raise JudgmentsError(message + " (judgments.unknown: fail)")
        log.warning("%s: dropped, they cannot be scored (judgments.unknown: drop)", message)
        qrels = {q: {d: g for d, g in docs.items() if d not in unknown["documents"]}
                 for q, docs in qrels.items() if q not in unknown["queries"]}
        qrels = {q: docs for q, docs in qrels.items() if docs}
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
            "dev": dev_queries, "test": len(judged) - dev_queries, "unknown_dropped": unknown["judgments"]}


def unknown_judgments(queries: dict[str, str], qrels: dict[str, dict[str, int]], documents: set[str]) -> dict[str, Any]:
    """The judgments no run can be scored against: their query is not in the queries file, or their document is
    not in the corpus (sorted ids, and how many judgments they make)."""
    bad_queries = sorted(q for q in qrels if q not in queries)
    bad_docs = sorted({d for docs in qrels.values() for d in docs if d not in documents})
    gone = set(bad_docs)
    count = sum(len(docs) if q in set(bad_queries) else sum(d in gone for d in docs) for q, docs in qrels.items())
    return {"queries": bad_queries, "documents": bad_docs, "judgments": count}
