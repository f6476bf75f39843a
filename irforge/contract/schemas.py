"""One declared pyarrow schema per artifact kind: the contract between stages.

A stage writes and reads artifacts only through its context, which calls :mod:`irforge.contract.artifacts`;
that checks the table against the schema named here, so a renamed or retyped column fails loudly at the stage that caused it
instead of silently corrupting the next one. Add a kind here before a stage writes it.
"""

from __future__ import annotations

import pyarrow as pa

_str = pa.string()

NEGATIVE = pa.struct(
    [
        pa.field("chunk_id", _str, nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("source", _str, nullable=False),  # retriever that proposed it: bm25 | dense
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    # chunk: passages cut from validated documents
    "chunks": pa.schema(
        [
            pa.field("chunk_id", _str, nullable=False),  # "<doc_id>#<passage_index>"
            pa.field("doc_id", _str, nullable=False),
            pa.field("passage_index", pa.int32(), nullable=False),
            pa.field("title", _str, nullable=False),
            pa.field("text", _str, nullable=False),
            pa.field("char_start", pa.int32(), nullable=False),  # offsets into the document's text
            pa.field("char_end", pa.int32(), nullable=False),
            pa.field("n_tokens", pa.int32(), nullable=False),
            pa.field("content_hash", _str, nullable=False),  # sha256 of title + chunk text
            pa.field("doc_hash", _str, nullable=False),  # sha256 of the whole document (change detection)
            pa.field("section", _str),  # heading path of a structured (Markdown) document's passage; null otherwise
        ]
    ),
    # chunk: rows that failed validation, with where they came from and why
    "quarantine": pa.schema(
        [
            pa.field("source", _str, nullable=False),  # file the row came from (relative to the corpus)
            pa.field("line", pa.int64(), nullable=False),  # 1-based line (JSONL) or row (Parquet); 0 for a file
            pa.field("doc_id", _str),
            pa.field("field", _str),  # offending field, when one is to blame
            pa.field("reason", _str, nullable=False),
            pa.field("raw", _str),  # first 500 characters of the offending row
        ]
    ),
    # judgments: the collection's queries (empty when it has none)
    "queries": pa.schema(
        [
            pa.field("query_id", _str, nullable=False),
            pa.field("text", _str, nullable=False),
            pa.field("split", _str, nullable=False),  # dev (tuning, few-shot examples) | test (reported) | unjudged
        ]
    ),
    # judgments: relevance grades (BEIR qrels)
    "qrels": pa.schema(
        [
            pa.field("query_id", _str, nullable=False),
            pa.field("doc_id", _str, nullable=False),
            pa.field("grade", pa.int32(), nullable=False),
        ]
    ),
    # doc2query / synthesize: generated queries, one row per query, kept or not by the cleaning rules
    "generated_queries": pa.schema(
        [
            pa.field("query_id", _str, nullable=False),  # stable: hash of (chunk, generator, prompt, seed, n)
            pa.field("chunk_id", _str, nullable=False),
            pa.field("doc_id", _str, nullable=False),
            pa.field("text", _str, nullable=False),
            pa.field("generator", _str, nullable=False),  # model name as given in params
            pa.field("model_hash", _str, nullable=False),
            pa.field("prompt_id", _str, nullable=False),  # template id + hash of its text
            pa.field("template", _str, nullable=False),  # template id (doc2query uses its own)
            pa.field("seed", pa.int64(), nullable=False),
            pa.field("mean_logprob", pa.float64(), nullable=False),
            pa.field("kept", pa.bool_(), nullable=False),  # passed the cleaning rules
            pa.field("reason", _str),  # why cleaning (or, for doc2query, the leakage rule) dropped it (null when kept)
        ]
    ),
    # doc2query: chunk text plus the kept queries, for the expanded BM25 index
    "expanded_chunks": pa.schema(
        [
            pa.field("chunk_id", _str, nullable=False),
            pa.field("doc_id", _str, nullable=False),
            pa.field("title", _str, nullable=False),
            pa.field("text", _str, nullable=False),
            pa.field("expansion", _str, nullable=False),  # queries joined by newlines ("" when none)
        ]
    ),
    # filter: every generated query with its round-trip verdict
    "filtered_queries": pa.schema(
        [
            pa.field("query_id", _str, nullable=False),
            pa.field("chunk_id", _str, nullable=False),
            pa.field("doc_id", _str, nullable=False),
            pa.field("text", _str, nullable=False),
            pa.field("generator", _str, nullable=False),
            pa.field("prompt_id", _str, nullable=False),
            pa.field("template", _str, nullable=False),
            pa.field("mean_logprob", pa.float64(), nullable=False),
            pa.field("rank_bm25", pa.int32()),  # 1-based rank of the source chunk; null = not in top-k
            pa.field("rank_dense", pa.int32()),
            pa.field("kept", pa.bool_(), nullable=False),
            pa.field("reason", _str),  # first rule that rejected it (null when kept)
            pa.field("holdout", pa.bool_()),  # kept but held out as the synthetic test set: never trained on
        ]
    ),
    # mine: training triples (query, positive, hard negatives)
    "triples": pa.schema(
        [
            pa.field("query_id", _str, nullable=False),
            pa.field("query", _str, nullable=False),
            pa.field("positive_id", _str, nullable=False),
            pa.field("generator", _str, nullable=False),
            pa.field("template", _str, nullable=False),
            pa.field("negatives", pa.list_(pa.field("item", NEGATIVE, nullable=False)), nullable=False),
        ]
    ),
    # teach: every teacher's score of every (query, candidate) pair; teacher "combined" is the mixture
    "teacher_scores": pa.schema(
        [
            pa.field("query_id", _str, nullable=False),
            pa.field("chunk_id", _str, nullable=False),
            pa.field("role", _str, nullable=False),  # positive (the query's own passage) | negative (mined)
            pa.field("teacher", _str, nullable=False),  # a name of teach.teachers, or "combined"
            pa.field("score", pa.float64(), nullable=False),  # raw (cosine, BM25, logit); combined: the mixture
            pa.field("normalised", pa.float64(), nullable=False),  # z-score within the query's candidates
        ]
    ),
    # dense encoding cache / embeddings of chunks
    "embeddings": pa.schema(
        [
            pa.field("chunk_id", _str, nullable=False),
            pa.field("content_hash", _str, nullable=False),
            pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        ]
    ),
    # SPLADE encoding cache: quantised impact vectors of chunks (terms and their integer impacts, same order)
    "impact_vectors": pa.schema(
        [
            pa.field("chunk_id", _str, nullable=False),
            pa.field("content_hash", _str, nullable=False),
            pa.field("terms", pa.list_(_str), nullable=False),
            pa.field("impacts", pa.list_(pa.int32()), nullable=False),
        ]
    ),
    # train: per-step training log (DVC plots)
    "train_log": pa.schema(
        [
            pa.field("model", _str, nullable=False),  # dense | splade
            pa.field("step", pa.int32(), nullable=False),
            pa.field("epoch", pa.int32(), nullable=False),
            pa.field("loss", pa.float64(), nullable=False),
            pa.field("loss_rank", pa.float64(), nullable=False),
            pa.field("loss_reg", pa.float64(), nullable=False),  # FLOPS (SPLADE) or 0
            pa.field("lr", pa.float64(), nullable=False),
            pa.field("nnz_query", pa.float64()),  # SPLADE only
            pa.field("nnz_doc", pa.float64()),
            pa.field("flops", pa.float64()),  # SPLADE only: sum_j p_j(query) p_j(doc), activation rates in the batch
        ]
    ),
    # evaluate: ranked lists (the TREC run, also as Parquet)
    "run": pa.schema(
        [
            pa.field("system", _str, nullable=False),
            pa.field("query_id", _str, nullable=False),
            pa.field("doc_id", _str, nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
        ]
    ),
    # evaluate: one row per (system, query, measure)
    "per_query_metrics": pa.schema(
        [
            pa.field("system", _str, nullable=False),
            pa.field("query_id", _str, nullable=False),
            pa.field("measure", _str, nullable=False),
            pa.field("value", pa.float64(), nullable=False),
        ]
    ),
}
