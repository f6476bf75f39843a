"""Neural indexes: faiss for dense vectors, Lucene impact indexes (through pyserini) for SPLADE vectors.

Each index is a folder holding the index files, the chunk ids and ``system.json``, which names the kind
and the model (and its encoding settings) that queries must be encoded with: the evaluate stage opens any
system from its folder alone. :func:`open_retriever` is the one entry point for searching them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from irforge.java import ensure_java
from irforge.retrieval import Run, index_json_collection
from irforge.splade import SparseVector

log = logging.getLogger(__name__)

SYSTEM_FILE = "system.json"
FAISS_FILE = "index.faiss"
IDS_FILE = "ids.json"
MAX_QUERY_TERMS = 1024  # Lucene's default BooleanQuery clause limit; trained SPLADE queries use far fewer


def passage_text(title: str, text: str) -> str:
    """What a neural model reads for a chunk (training and indexing alike): the title, then the text."""
    if not title or text.startswith(title):
        return text
    return f"{title}\n{text}"


def model_name_in(root: Path, name: str) -> str:
    """A model named by a path relative to the project root (a trained model) becomes that path."""
    if not name.startswith("pkg:") and not Path(name).is_absolute() and (Path(root) / name).exists():
        return str(Path(root) / name)
    return name


def read_system(index_dir: Path) -> dict[str, Any]:
    meta = Path(index_dir) / SYSTEM_FILE
    if not meta.exists():
        raise FileNotFoundError(f"{index_dir}: no {SYSTEM_FILE}; not a neural index (run the index stage first)")
    return json.loads(meta.read_text())


def write_system(index_dir: Path, meta: dict[str, Any]) -> None:
    (Path(index_dir) / SYSTEM_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- faiss (dense)


def build_faiss(vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ivf_lists: int = 0, pq_m: int = 16,
                pq_bits: int = 8, seed: int = 0, threads: int | None = None):
    """An inner-product faiss index over L2-normalised vectors (inner product = cosine).

    ``flat`` is exact; ``hnsw`` (graph, ``hnsw_m`` links per node) and ``ivfpq`` (``ivf_lists`` coarse cells,
    0 = ~sqrt(n); ``pq_m`` sub-quantisers of ``pq_bits`` bits) trade exactness for speed and memory on large
    corpora.
    """
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)  # OpenMP spinning on more threads than free cores is much slower
    n, dim = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivfpq":
        lists = ivf_lists or max(1, int(np.sqrt(n)))
        if n < 39 * lists:  # faiss wants ~39 training points per centroid
            raise ValueError(f"ivfpq: {n} vectors are too few for {lists} lists (need {39 * lists}); use flat")
        if dim % pq_m:
            raise ValueError(f"ivfpq: dimension {dim} is not a multiple of pq_m={pq_m}")
        index = faiss.index_factory(dim, f"IVF{lists},PQ{pq_m}x{pq_bits}", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed  # k-means initialisation: same seed, same index
        index.train(vectors)
    else:
        raise ValueError(f"unknown faiss index type '{kind}' (flat, hnsw, ivfpq)")
    index.add(vectors)
    return index


def save_faiss(index, ids: list[str], folder: Path) -> None:
    import faiss

    faiss.write_index(index, str(Path(folder) / FAISS_FILE))
    (Path(folder) / IDS_FILE).write_text(json.dumps(ids))


class FaissRetriever:
    """Dense search: queries encoded with the index's model, top-k by inner product."""

    def __init__(self, index_dir: Path, model: str, max_length: int = 64, batch_size: int = 32,
                 nprobe: int = 16, ef_search: int = 256, threads: int | None = None):
        import faiss

        from irforge.encoding import DenseEncoder

        index_dir = Path(index_dir)
        if not (index_dir / FAISS_FILE).exists():
            raise FileNotFoundError(f"{index_dir}: no {FAISS_FILE} (run the index stage for this system first)")
        self.index = faiss.read_index(str(index_dir / FAISS_FILE))
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = ef_search
        self.ids = json.loads((index_dir / IDS_FILE).read_text())
        self.encoder = DenseEncoder(model, max_length=max_length, batch_size=batch_size, threads=threads)

    def search_vectors(self, vectors: np.ndarray, qids: list[str], k: int) -> Run:
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(self.ids)))
        return {qid: [(self.ids[r], float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0]
                for i, qid in enumerate(qids)}

    def search(self, queries: dict[str, str], k: int) -> Run:
        qids = list(queries)
        return self.search_vectors(self.encoder.encode([queries[q] for q in qids], desc="encode queries"), qids, k)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- Lucene impact (SPLADE)


def build_impact_index(vectors: Iterable[tuple[str, SparseVector]], index_dir: Path, threads: int = 2) -> int:
    """Index ``(id, {token: impact})`` pairs as a JsonVectorCollection with ``-impact -pretokenized``.

    Anserini stores each impact as the term frequency, and impact search scores a document by the sum of
    query weight x document impact over shared terms: the SPLADE dot product on quantised weights.
    """
    records = ({"id": doc_id, "contents": "", "vector": vector} for doc_id, vector in vectors)
    return index_json_collection(records, index_dir, "JsonVectorCollection", ["-impact", "-pretokenized"], threads)


class ImpactRetriever:
    """SPLADE search: queries encoded and quantised with the index's model, searched by Lucene impact scoring."""

    def __init__(self, index_dir: Path, model: str, scale: float = 100.0, max_length: int = 64,
                 batch_size: int = 32, threads: int | None = None):
        index_dir = Path(index_dir)
        if not any(index_dir.glob("segments_*")):
            raise FileNotFoundError(f"{index_dir}: not a Lucene index (run the index stage for this system first)")
        ensure_java()
        from pyserini.encode import QueryEncoder
        from pyserini.search.lucene import LuceneImpactSearcher

        from irforge.splade import SpladeEncoder

        self.encoder = SpladeEncoder(model, max_length=max_length, batch_size=batch_size, threads=threads)
        self.scale = scale
        self.threads = threads or 1

        class _Encoded(QueryEncoder):  # pyserini asks its query encoder for {token: weight} per query text
            def __init__(self) -> None:
                super().__init__()
                self.vectors: dict[str, SparseVector] = {}

            def encode(self, text: str) -> SparseVector:
                return self.vectors[text]

        self.query_encoder = _Encoded()
        # min_idf below 0: keep query terms found in every document (idf 0), so the score is the full dot product
        self.searcher = LuceneImpactSearcher(str(index_dir), self.query_encoder, min_idf=-1.0)

    def search_vectors(self, vectors: list[SparseVector], qids: list[str], k: int) -> Run:
        keys = [f"\0{i}" for i in range(len(qids))]  # pyserini keys queries by text; ours are unique keys
        self.query_encoder.vectors = dict(zip(keys, vectors, strict=True))
        results = self.searcher.batch_search(keys, qids, k=k, threads=self.threads)
        return {qid: [(hit.docid, float(hit.score)) for hit in results.get(qid, [])] for qid in qids}

    def encode_queries(self, texts: list[str]) -> list[SparseVector]:
        """Quantised query vectors, cut to the ``MAX_QUERY_TERMS`` heaviest terms (Lucene's clause limit)."""
        vectors = self.encoder.encode(texts, self.scale, desc="encode queries")
        return [v if len(v) <= MAX_QUERY_TERMS else dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_QUERY_TERMS])
                for v in vectors]

    def search(self, queries: dict[str, str], k: int) -> Run:
        qids = list(queries)
        return self.search_vectors(self.encode_queries([queries[q] for q in qids]), qids, k)

    def close(self) -> None:
        self.searcher.close()


def open_retriever(index_dir: Path, root: Path, threads: int | None = None):
    """The retriever of a neural index folder, with the query encoder recorded in its ``system.json``."""
    meta = read_system(index_dir)
    model = model_name_in(root, meta["model"])
    if meta["kind"] == "faiss":
        return FaissRetriever(index_dir, model, max_length=meta["query_max_length"], threads=threads)
    if meta["kind"] == "impact":
        return ImpactRetriever(index_dir, model, scale=meta["scale"], max_length=meta["query_max_length"],
                               threads=threads)
    raise ValueError(f"{index_dir}/{SYSTEM_FILE}: unknown index kind '{meta['kind']}'")
