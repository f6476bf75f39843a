"""filter: give every generated query a verdict (kept, or the first rule that rejected it).

Rules, in order (the first that fails is the row's ``reason``; later rules are not applied to it):

1. ``cleaning``: the generation stage already dropped it (its own reason follows the colon).
2. ``unknown_chunk`` / ``empty_text``: the row cannot be checked (source chunk not in the chunks artifact,
   or no text).
3. ``leakage``: the query duplicates or nearly duplicates an evaluation query of the collection
   (``corpus.queries``): same normalised words, word-set Jaccard >= ``filter.leakage.jaccard``, or dense
   cosine >= ``filter.leakage.cosine``. Training on the test queries would inflate every figure.
4. ``round_trip`` (Promptagator): the source chunk is not within the top ``filter.k`` of the retrievers in
   ``filter.retrievers`` (BM25 over the Lucene index, dense = the shared encoder through faiss), combined by
   ``filter.combine`` (any / all).
5. ``too_easy``: the source chunk is rank 1 under ``filter.too_easy.retriever`` with a relative score gap
   (s1 - s2) / s1 >= ``filter.too_easy.margin`` over the best chunk of another document: the query (nearly)
   copies its chunk and teaches nothing. On a small corpus round-trip alone keeps almost everything (see docs/filtermine.md).
6. ``low_score`` (InPars): outside the top ``filter.keep_fraction`` by the generator's mean log-prob, ranked
   within each ``filter.fraction_per`` group (template, generator or all).

Every input row is in the output with the source chunk's rank under each retriever (null: not within
``filter.depth``, or that retriever not used). Pass rates per reason, generator and template go to DVC metrics.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from irforge import layout
from irforge.encoding import DenseEncoder, text_key
from irforge.retrieval import DenseRetriever, Hits, bm25_search, doc_id_of, rank_of
from irforge.schemas import SCHEMAS
from irforge.stage import Stage, StageContext

log = logging.getLogger(__name__)

STAGE = Stage(name="filter", version="1", params=("corpus", "bm25", "encoder", "filter"))

SOURCES = {"synthesize": layout.SYNTHETIC, "doc2query": layout.DOC2QUERY}
RETRIEVERS = ("bm25", "dense")
REASONS = ("cleaning", "unknown_chunk", "empty_text", "leakage", "round_trip", "too_easy", "low_score")
_WORD = re.compile(r"\w+")


def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def round_trip_ok(ranks: dict[str, int | None], k: int, combine: str) -> bool:
    hits = [r is not None and r <= k for r in ranks.values()]
    return any(hits) if combine == "any" else all(hits)


def is_too_easy(hits: Hits, rank: int | None, margin: float) -> bool:
    """Source at rank 1 and clearly ahead of the best chunk of any other document (relative score gap).

    Chunks of the source's own document are skipped: a query that copies the document's title ties with
    all of them, which says nothing about how easily it is told apart from the rest of the corpus.
    """
    if rank != 1:
        return False
    source_doc = doc_id_of(hits[0][0])
    runner_up = next((score for chunk_id, score in hits[1:] if doc_id_of(chunk_id) != source_doc), None)
    if runner_up is None or hits[0][1] <= 0:
        return True  # nothing else in the corpus matches at all
    return (hits[0][1] - runner_up) / hits[0][1] >= margin


def top_fraction(rows: list[dict[str, Any]], candidates: list[int], fraction: float, per: str) -> set[int]:
    """Row indices among ``candidates`` in the top ``fraction`` by mean_logprob within each group."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in candidates:
        groups["all" if per == "all" else rows[i][per]].append(i)
    keep: set[int] = set()
    for members in groups.values():
        def order(i: int) -> tuple[float, str]:
            lp = rows[i]["mean_logprob"]
            return (-lp if not math.isnan(lp) else math.inf, rows[i]["query_id"])
        members.sort(key=order)
        keep.update(members[: math.ceil(fraction * len(members))])
    return keep


def load_eval_queries(ctx: StageContext) -> dict[str, str]:
    path = ctx.section("corpus").get("queries")
    if not path or not ctx.path(path).exists():
        return {}
    queries: dict[str, str] = {}
    with open(ctx.use_input(ctx.path(path), "queries"), encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                queries[str(obj["_id"])] = str(obj["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: expected a JSON object with '_id' and 'text' ({e})") from e
    return queries


def leakage_reasons(texts: list[str], eval_queries: dict[str, str], cfg: dict[str, Any],
                    cosines: np.ndarray | None) -> list[str | None]:
    """Per text: None, or 'leakage: ...' naming the evaluation query it duplicates."""
    threshold = cfg.get("jaccard")
    eval_ids = list(eval_queries)
    eval_words = [words(eval_queries[q]) for q in eval_ids]
    out: list[str | None] = []
    for i, text in enumerate(texts):
        mine = words(text)
        reason = None
        for j, theirs in enumerate(eval_words):
            sim = jaccard(mine, theirs)
            if sim == 1.0 or (threshold is not None and sim >= float(threshold)):
                reason = f"leakage: eval query {eval_ids[j]} (word jaccard {sim:.2f})"
                break
        if reason is None and cosines is not None and cfg.get("cosine") is not None:
            j = int(np.argmax(cosines[i]))
            if cosines[i, j] >= float(cfg["cosine"]):
                reason = f"leakage: eval query {eval_ids[j]} (dense cosine {cosines[i, j]:.3f})"
        out.append(reason)
    return out


def read_generated(ctx: StageContext, sources: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"filter.sources: unknown source '{source}' (known: {', '.join(SOURCES)})")
        rows.extend(ctx.read(ctx.path(SOURCES[source]), "generated_queries").to_pylist())
    return rows


def pass_rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def block(members: list[dict[str, Any]]) -> dict[str, Any]:
        kept = sum(r["kept"] for r in members)
        return {"input": len(members), "kept": kept, "pass_rate": round(kept / len(members), 4) if members else 0.0}

    reasons = Counter(r["reason"].split(":")[0] for r in rows if r["reason"])
    # Of the rows a rule was applied to (those that passed every earlier rule), the share it let through.
    reached, rule_pass = len(rows), {}
    for reason in REASONS:
        rule_pass[reason] = round(1 - reasons[reason] / reached, 4) if reached else 0.0
        reached -= reasons[reason]
    by = {key: {value: block([r for r in rows if r[key] == value]) for value in sorted({r[key] for r in rows})}
          for key in ("generator", "template")}
    return {**block(rows), "rejected": {r: reasons[r] for r in REASONS}, "rule_pass_rate": rule_pass,
            "by_generator": by["generator"], "by_template": by["template"]}


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, enc_cfg, bm25_cfg = ctx.section("filter"), ctx.section("encoder"), ctx.section("bm25")
    retrievers = list(cfg.get("retrievers", RETRIEVERS))
    unknown = [r for r in retrievers if r not in RETRIEVERS]
    if unknown or not retrievers:
        raise ValueError(f"filter.retrievers: expected a non-empty subset of {list(RETRIEVERS)}, got {retrievers}")
    combine = cfg.get("combine", "any")
    if combine not in ("any", "all"):
        raise ValueError(f"filter.combine must be 'any' or 'all', got '{combine}'")
    k, depth = int(cfg["k"]), max(int(cfg.get("depth", cfg["k"])), int(cfg["k"]), 2)
    fraction, per = float(cfg.get("keep_fraction", 1.0)), cfg.get("fraction_per", "template")
    if not 0 < fraction <= 1:
        raise ValueError(f"filter.keep_fraction must be in (0, 1], got {fraction}")
    if per not in ("template", "generator", "all"):
        raise ValueError(f"filter.fraction_per must be template, generator or all, got '{per}'")
    easy_cfg, leak_cfg = cfg.get("too_easy") or {}, cfg.get("leakage") or {}
    easy_retriever = easy_cfg.get("retriever", "bm25")
    if easy_cfg.get("enabled") and easy_retriever not in retrievers:
        raise ValueError(f"filter.too_easy.retriever '{easy_retriever}' must be one of filter.retrievers")

    rows = read_generated(ctx, list(cfg.get("sources", ["synthesize"])))
    chunks = ctx.read(ctx.path(layout.CHUNKS), "chunks", ["chunk_id", "title", "text", "content_hash"]).to_pylist()
    known = {c["chunk_id"] for c in chunks}

    reason: list[str | None] = [None] * len(rows)
    for i, row in enumerate(rows):
        if not row["kept"]:
            reason[i] = f"cleaning: {row['reason'] or 'dropped by generation'}"
        elif row["chunk_id"] not in known:
            reason[i] = f"unknown_chunk: {row['chunk_id']}"
        elif not row["text"].strip():
            reason[i] = "empty_text"
    # Rank every row that has text and a known chunk, kept by cleaning or not: the ranks explain the verdicts.
    searchable = [i for i, r in enumerate(rows) if r["chunk_id"] in known and r["text"].strip()]
    queries = {str(i): rows[i]["text"] for i in searchable}

    hits: dict[str, dict[str, Hits]] = {}
    encoder = None
    eval_queries = load_eval_queries(ctx)
    need_dense = "dense" in retrievers or (eval_queries and leak_cfg.get("cosine") is not None)
    if need_dense:
        encoder = DenseEncoder.from_params(enc_cfg, ctx.path(layout.CACHE))
        ctx.use_model(encoder.model_info.record)
    if "bm25" in retrievers:
        index = ctx.use_input(ctx.path(layout.index_dir("bm25")), "index")
        hits["bm25"] = bm25_search(index, queries, depth, bm25_cfg, threads=cfg.get("threads"))
    query_vectors = None
    if encoder is not None:
        query_vectors = encoder.encode_cached([rows[i]["query_id"] for i in searchable],
                                              [text_key(rows[i]["text"]) for i in searchable],
                                              list(queries.values()), desc="encode queries")
    if "dense" in retrievers:
        dense = DenseRetriever.from_chunks(encoder, chunks, threads=enc_cfg.get("threads"))
        scores, positions = dense.search_vectors(query_vectors, depth)
        hits["dense"] = {key: [(dense.ids[p], float(s)) for p, s in zip(positions[n], scores[n], strict=True) if p >= 0]
                         for n, key in enumerate(queries)}

    ranks: dict[str, list[int | None]] = {r: [None] * len(rows) for r in RETRIEVERS}
    for name, run_hits in hits.items():
        for key, found in run_hits.items():
            ranks[name][int(key)] = rank_of(found, rows[int(key)]["chunk_id"])

    if eval_queries:
        cosines = None
        if encoder is not None and leak_cfg.get("cosine") is not None:
            eval_vectors = encoder.encode_queries(eval_queries, desc="encode eval queries")
            cosines = query_vectors @ eval_vectors.T
        open_rows = [n for n, i in enumerate(searchable) if reason[i] is None]
        verdicts = leakage_reasons([rows[searchable[n]]["text"] for n in open_rows], eval_queries, leak_cfg,
                                   None if cosines is None else cosines[open_rows])
        for n, verdict in zip(open_rows, verdicts, strict=True):
            reason[searchable[n]] = verdict

    round_trip = bool(cfg.get("round_trip", True))  # off only for ablations: ranks are still recorded
    for i in searchable:
        if reason[i] is not None:
            continue
        if round_trip and not round_trip_ok({r: ranks[r][i] for r in retrievers}, k, combine):
            reason[i] = f"round_trip: source not in top {k} ({combine} of {', '.join(retrievers)})"
        elif easy_cfg.get("enabled") and is_too_easy(hits[easy_retriever][str(i)], ranks[easy_retriever][i],
                                                     float(easy_cfg["margin"])):
            reason[i] = f"too_easy: rank 1 under {easy_retriever} with margin >= {easy_cfg['margin']}"

    survivors = [i for i in range(len(rows)) if reason[i] is None]
    keep = top_fraction(rows, survivors, fraction, per)
    for i in survivors:
        if i not in keep:
            reason[i] = f"low_score: below the top {fraction:g} by mean_logprob per {per}"

    out_rows = [{
        "query_id": r["query_id"], "chunk_id": r["chunk_id"], "doc_id": r["doc_id"], "text": r["text"],
        "generator": r["generator"], "prompt_id": r["prompt_id"], "template": r["template"],
        "mean_logprob": r["mean_logprob"], "rank_bm25": ranks["bm25"][i], "rank_dense": ranks["dense"][i],
        "kept": reason[i] is None, "reason": reason[i],
    } for i, r in enumerate(rows)]
    ctx.write(ctx.path(layout.FILTERED), "filtered_queries", pa.Table.from_pylist(out_rows, SCHEMAS["filtered_queries"]))
    metrics = {"filter": pass_rates(out_rows)}
    if encoder is not None:
        log.info("encoder cache: %d hits, %d misses", encoder.cache_hits, encoder.cache_misses)
    ctx.write_text(ctx.path(layout.FILTER_METRICS), json.dumps(metrics, indent=2, sort_keys=True) + "\n",
                   provenance=False)
    m = metrics["filter"]
    return {"input": m["input"], "kept": m["kept"], "pass_rate": m["pass_rate"], "rejected": m["rejected"],
            "metrics": metrics}
