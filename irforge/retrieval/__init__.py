"""Retrieval: BM25 and SPLADE impact indexes in Lucene (pyserini), dense search with faiss, runs and their
fusion, and self-describing index folders that open as retrievers."""

from irforge.retrieval.dense import (
    DenseRetriever,
    FaissRetriever,
    build_faiss,
    choose_faiss_type,
    new_faiss,
    recall_vs_exact,
    save_faiss,
    stored_vectors,
)
from irforge.retrieval.feedback import Rocchio, SparseRocchio, VectorRocchio, rocchio
from irforge.retrieval.java import ensure_java, run_pyserini_module
from irforge.retrieval.lucene import (
    MAX_QUERY_TERMS,
    BM25Retriever,
    ImpactRetriever,
    bm25_pair_scores,
    bm25_search,
    build_impact_index,
    build_lucene_index,
    index_json_collection,
)
from irforge.retrieval.runs import Hits, Run, chunks_to_docs, doc_id_of, rank_of, reciprocal_rank_fusion
from irforge.retrieval.systems import (
    SYSTEM_FILE,
    Encoders,
    ProjectEncoders,
    Retriever,
    build_faiss_folder,
    open_system,
    read_system,
    write_system,
)

__all__ = [
    "MAX_QUERY_TERMS", "SYSTEM_FILE", "BM25Retriever", "DenseRetriever", "Encoders", "FaissRetriever", "Hits",
    "ImpactRetriever", "ProjectEncoders", "Retriever", "Run", "rocchio", "bm25_pair_scores", "bm25_search", "build_faiss",
    "build_faiss_folder", "build_impact_index", "build_lucene_index", "choose_faiss_type", "chunks_to_docs", "doc_id_of", "ensure_java",
    "index_json_collection", "open_system", "new_faiss", "rank_of", "read_system", "recall_vs_exact", "stored_vectors",
    "reciprocal_rank_fusion", "run_pyserini_module", "save_faiss", "Rocchio", "SparseRocchio", "VectorRocchio", "write_system",
]
