"""Dense search with faiss: exact in-memory search over chunk vectors (filter, mine), and faiss index
folders (flat, HNSW, IVF-PQ) built by the index stage and searched with the model that built them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from irforge.retrieval.runs import Run

if TYPE_CHECKING:
    from irforge.models.dense import DenseEncoder

log = logging.getLogger(__name__)

FAISS_FILE = "index.faiss"
IDS_FILE = "ids.json"


class DenseRetriever:
    """Exact inner-product search (faiss ``IndexFlatIP``) over L2-normalised chunk vectors: cosine ranking.

    Built from a :class:`irforge.models.DenseEncoder` and the chunk rows, whose vectors come from the
    encoder's cache when present. ``search`` returns chunk ids and scores best first, as BM25Retriever does.
    """

    def __init__(self, encoder: DenseEncoder, ids: list[str], vectors: np.ndarray, threads: int | None = None):
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        self.encoder = encoder
        self.ids = list(ids)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)
        self.position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}

    @classmethod
    def from_chunks(cls, encoder: DenseEncoder, chunks: list[dict], threads: int | None = None) -> DenseRetriever:
        return cls(encoder, [c["chunk_id"] for c in chunks], encoder.encode_chunks(chunks), threads)

    def search_vectors(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss scores and row positions (-1 where fewer than k chunks exist), shape (n_queries, k)."""
        k = min(k, len(self.ids))
        return self.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)

    def search(self, queries: dict[str, str], k: int) -> Run:
        if not queries:
            return {}
        scores, rows = self.search_vectors(self.encoder.encode_queries(queries), k)
        return {
            qid: [(self.ids[r], float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0]
            for i, qid in enumerate(queries)
        }


def new_faiss(kind: str, dim: int, n: int, hnsw_m: int = 32, ivf_lists: int = 0, pq_m: int = 16, pq_bits: int = 8):
    """An empty inner-product faiss index (inner product = cosine over L2-normalised vectors).

    ``flat`` is exact; ``hnsw`` (graph, ``hnsw_m`` links per node) and ``ivfpq`` (``ivf_lists`` coarse cells,
    0 = ~sqrt(n); ``pq_m`` sub-quantisers of ``pq_bits`` bits, trained before use) trade exactness for speed and
    memory on large corpora.
    """
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if kind == "ivfpq":
        lists = ivf_lists or max(1, int(np.sqrt(n)))
        if n < 39 * lists:  # faiss wants ~39 training points per centroid
            raise ValueError(f"ivfpq: {n} vectors are too few for {lists} lists (need {39 * lists}); use flat")
        if dim % pq_m:
            raise ValueError(f"ivfpq: dimension {dim} is not a multiple of pq_m={pq_m}")
        return faiss.index_factory(dim, f"IVF{lists},PQ{pq_m}x{pq_bits}", faiss.METRIC_INNER_PRODUCT)
    raise ValueError(f"unknown faiss index type '{kind}' (flat, hnsw, ivfpq)")


def build_faiss(vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ivf_lists: int = 0, pq_m: int = 16,
                pq_bits: int = 8, seed: int = 0, threads: int | None = None):
    """:func:`new_faiss` of ``kind`` holding ``vectors`` (trained on them first where the kind needs it)."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)  # OpenMP spinning on more threads than free cores is much slower
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_faiss(kind, vectors.shape[1], len(vectors), hnsw_m, ivf_lists, pq_m, pq_bits)
    if not index.is_trained:
        index.cp.seed = seed  # k-means initialisation: same seed, same index
        index.train(vectors)
    index.add(vectors)
    return index


def choose_faiss_type(kind: str, n: int, flat_max: int) -> str:
    """``auto``: exact (flat) search up to ``flat_max`` vectors, HNSW above (flat search time grows with the corpus)."""
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max else "hnsw"


def stored_vectors(index) -> np.ndarray | None:
    """The vectors a flat or HNSW index holds, as a view (no copy); None for a compressed index."""
    import faiss

    flat = faiss.downcast_index(index.storage) if hasattr(index, "storage") else index
    if not isinstance(flat, faiss.IndexFlat):
        return None
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


def recall_vs_exact(index, vectors: np.ndarray | None = None, k: int = 10, sample: int = 200, seed: int = 0) -> float:
    """Share of the exact top ``k`` (inner product over all ``vectors``, by default the index's own) that ``index``
    returns, with a seeded sample of the passages' own vectors as queries: what an approximate index costs."""
    import faiss

    vectors = stored_vectors(index) if vectors is None else np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.random.default_rng(seed).choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    queries = np.array(vectors[rows])
    k = min(k, len(vectors))
    _, truth = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)  # exact, without a second copy
    _, found = index.search(queries, k)
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))


def save_faiss(index, ids: list[str], folder: Path) -> None:
    import faiss

    faiss.write_index(index, str(Path(folder) / FAISS_FILE))
    (Path(folder) / IDS_FILE).write_text(json.dumps(ids))


class FaissRetriever:
    """Search in a faiss index folder: queries encoded by ``encoder`` (the index's model), top-k by inner product."""

    def __init__(self, index_dir: Path, encoder: DenseEncoder, nprobe: int = 16, ef_search: int = 256):
        import faiss

        index_dir = Path(index_dir)
        if not (index_dir / FAISS_FILE).exists():
            raise FileNotFoundError(f"{index_dir}: no {FAISS_FILE} (run the index stage for this system first)")
        self.index = faiss.read_index(str(index_dir / FAISS_FILE))
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = nprobe
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = ef_search
        self.ids = json.loads((index_dir / IDS_FILE).read_text())
        self.encoder = encoder
        self._direct_map = False
        self._last_queries: tuple[tuple[str, ...], np.ndarray] | None = None

    def vector(self, row: int) -> np.ndarray:
        """The stored vector of a passage (exact for flat and HNSW, the decoded code for IVF-PQ)."""
        if not self._direct_map and hasattr(self.index, "make_direct_map"):
            self.index.make_direct_map()  # IVF indexes reconstruct by id only with a direct map
            self._direct_map = True
        return self.index.reconstruct(int(row))

    def search_vectors(self, vectors: np.ndarray, qids: list[str], k: int) -> Run:
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(self.ids)))
        return {qid: [(self.ids[r], float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0]
                for i, qid in enumerate(qids)}

    def query_vectors(self, texts: list[str]) -> np.ndarray:
        """The encoder's vectors of ``texts``; the last batch is remembered, so a feedback system searching the
        same queries again (vector Rocchio) does not encode them twice."""
        key = tuple(texts)
        if self._last_queries is None or self._last_queries[0] != key:
            self._last_queries = (key, self.encoder.encode(list(texts), desc="encode queries"))
        return self._last_queries[1].copy()

    def search(self, queries: dict[str, str], k: int) -> Run:
        qids = list(queries)
        return self.search_vectors(self.query_vectors([queries[q] for q in qids]), qids, k)

    def close(self) -> None:
        self._last_queries = None
