"""teach: pseudo-label every training query's candidates with the teachers of ``teach.teachers`` (GPL).

For each mined triple, the candidates are its positive and its mined negatives. Each teacher scores every
(query, candidate) pair; scores are z-normalised within the query's candidates and mixed by the teachers'
weights into the ``combined`` score the students are distilled from (``train.<trainer>.loss``: kl or margin_mse).
Every raw and normalised score is kept per pair and teacher, so an audit shows what each teacher said
(``irforge audit --query``). A bi-encoder teacher with ``feedback`` first moves each query towards the top
passages of rrf(bm25 + that model) over the whole corpus (Rocchio): with a BM25 and a SPLADE teacher next to it,
the mixture is the zero-shot ensemble with feedback, the strongest system that needs no training.

Teacher agreement, the share of queries whose own passage a teacher ranks first among the candidates, is
reported per teacher: a teacher that never agrees with the generator is either much better than binary labels
(it finds the better passage) or broken, and the distribution tells which.

Outputs: ``scores.parquet`` (``teacher_scores``) and metrics (pairs, queries, agreement per teacher).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from pydantic import Field

from irforge.config import Section
from irforge.contract import ARTIFACTS, SCHEMAS, Metrics, Output, Stage
from irforge.corpus import passage_text
from irforge.engine import StageContext
from irforge.generation import QueryLikelihood
from irforge.models import CrossEncoderScorer, resolve_precision
from irforge.retrieval import bm25_search
from irforge.training.teachers import (
    TeacherConfig,
    agreement,
    bi_encoder_scorer,
    bm25_scorer,
    combine,
    describe,
    per_query_scorer,
    splade_scorer,
    zscore,
)

log = logging.getLogger(__name__)

COMBINED = "combined"


class TeachConfig(Section):
    # Teachers by name: kind (bi-encoder | splade | bm25 | cross-encoder | qlm), model, weight in the mixture.
    teachers: dict[str, TeacherConfig] = Field(
        default_factory=lambda: {"mpnet": TeacherConfig(kind="bi-encoder", model="pkg:all-mpnet-base-v2"),
                                 "bm25": TeacherConfig(kind="bm25", weight=0.5)},
        min_length=1)


def uses_bm25(teacher: TeacherConfig) -> bool:
    return teacher.kind == "bm25" or bool(teacher.feedback and teacher.feedback.bm25)


def teacher_inputs(config: Any, variant: str | None) -> list[str]:
    """The BM25 index when a BM25 teacher, or a bi-encoder's feedback from BM25, is configured; a model trained by
    this project (``artifacts/train/cross``, say) when a teacher is one."""
    teachers = config.section("teach").teachers.values()
    trained = sorted({t.model for t in teachers if t.model and t.model.startswith(ARTIFACTS + "/")})
    return (["index/bm25"] if any(uses_bm25(t) for t in teachers) else []) + trained


STAGE = Stage(
    name="teach",
    version="1",
    params=("seed", "bm25", "teach"),
    config=TeachConfig,
    inputs=("chunks", "triples", teacher_inputs),
    outputs=(
        Output("teacher_scores", "scores.parquet", "teacher_scores",
               description="every teacher's score of every (query, candidate) pair, and the combined score"),
        Metrics(),
    ),
)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg: TeachConfig = ctx.section("teach")
    bm25 = ctx.section("bm25")
    chunks = {c["chunk_id"]: c for c in ctx.read("chunks", ["chunk_id", "title", "text", "content_hash"]).to_pylist()}
    triples = ctx.read("triples").to_pylist()
    queries = {t["query_id"]: t["query"] for t in triples}
    candidates = {t["query_id"]: [t["positive_id"], *(n["chunk_id"] for n in sorted(t["negatives"], key=lambda n: n["rank"]))]
                  for t in triples}
    for qid, ids in candidates.items():
        missing = [c for c in ids if c not in chunks]
        if missing:
            raise ValueError(f"{ctx.input('triples').path}: query {qid}: chunk id '{missing[0]}' is not in the chunks")
    text = lambda chunk: passage_text(chunk["title"], chunk["text"])  # noqa: E731
    raw: dict[str, dict[str, Any]] = {}
    for name, teacher in cfg.teachers.items():
        log.info("teacher %s (%s%s): scoring %d pairs", name, teacher.kind, f", {teacher.model}" if teacher.model else "",
                 sum(map(len, candidates.values())))
        if teacher.kind == "bi-encoder":
            lexical = lambda qs, k: bm25_search(ctx.input_path("index/bm25"), qs, k, bm25.k1, bm25.b, ctx.threads)  # noqa: E731
            scorer = bi_encoder_scorer(ctx.dense_encoder(teacher.model, teacher.max_length, teacher.precision),
                                       teacher.feedback, lexical)
        elif teacher.kind == "splade":
            scorer = splade_scorer(ctx.splade_encoder(teacher.model, teacher.max_length), text)
        elif teacher.kind == "bm25":
            scorer = bm25_scorer(ctx.input_path("index/bm25"), bm25.k1, bm25.b)
        elif teacher.kind == "cross-encoder":
            model = CrossEncoderScorer(ctx.model(teacher.model), teacher.max_length)
            scorer = per_query_scorer(model, text, f"teacher {name}")
        else:
            likelihood = QueryLikelihood(ctx.generator(teacher.model, "never", resolve_precision(teacher.dtype)),
                                         teacher.max_length)
            scorer = per_query_scorer(likelihood, text, f"teacher {name}")
        raw[name] = scorer(queries, candidates, chunks)
    combined = combine(raw, {name: t.weight for name, t in cfg.teachers.items()})
    rows = []
    for qid, ids in candidates.items():
        for name in cfg.teachers:
            normalised = zscore(raw[name][qid])
            rows += [{"query_id": qid, "chunk_id": c, "role": "positive" if i == 0 else "negative", "teacher": name,
                      "score": float(raw[name][qid][i]), "normalised": float(normalised[i])} for i, c in enumerate(ids)]
        rows += [{"query_id": qid, "chunk_id": c, "role": "positive" if i == 0 else "negative", "teacher": COMBINED,
                  "score": float(combined[qid][i]), "normalised": float(combined[qid][i])} for i, c in enumerate(ids)]
    ctx.write("teacher_scores", pa.Table.from_pylist(rows, SCHEMAS["teacher_scores"]))
    agree = {name: round(agreement(raw[name]), 4) for name in cfg.teachers} | {COMBINED: round(agreement(combined), 4)}
    summary = {"queries": len(queries), "pairs": sum(map(len, candidates.values())), "agreement": agree,
               "teachers": [describe(name, t) for name, t in cfg.teachers.items()]}
    ctx.metrics({"teach": summary})
    log.info("teacher agreement (positive ranked first): %s", agree)
    return summary
