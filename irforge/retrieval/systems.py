"""Self-describing index folders: every index (BM25, faiss, impact) holds a ``system.json`` naming its kind
and how queries must be searched (the model and its query length), so any system opens from its folder
alone and no list of system names lives in code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from irforge.models.dense import DenseEncoder
from irforge.models.splade import SpladeEncoder
from irforge.retrieval.dense import (
    FaissRetriever,
    build_faiss,
    choose_faiss_type,
    new_faiss,
    recall_vs_exact,
    save_faiss,
)
from irforge.retrieval.lucene import BM25Retriever, ImpactRetriever
from irforge.retrieval.runs import Run

SYSTEM_FILE = "system.json"
KINDS = ("bm25", "faiss", "impact")


class Retriever(Protocol):
    def search(self, queries: dict[str, str], k: int) -> Run: ...

    def close(self) -> None: ...


class Encoders(Protocol):
    """Where query encoders come from (a stage context records their models in provenance)."""

    def dense_encoder(self, name: str, max_length: int, precision: str = "float32",
                      threads: int | None = None) -> DenseEncoder: ...

    def splade_encoder(self, name: str, max_length: int, threads: int | None = None) -> SpladeEncoder: ...


def read_system(index_dir: Path) -> dict[str, Any]:
    meta = Path(index_dir) / SYSTEM_FILE
    if not meta.exists():
        raise FileNotFoundError(f"{index_dir}: no {SYSTEM_FILE}; not an irforge index (run the index stage first)")
    data = json.loads(meta.read_text(encoding="utf-8"))
    if data.get("kind") not in KINDS:
        raise ValueError(f"{meta}: unknown index kind {data.get('kind')!r} (known: {', '.join(KINDS)})")
    return data


def write_system(index_dir: Path, meta: dict[str, Any]) -> None:
    (Path(index_dir) / SYSTEM_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def build_faiss_folder(vectors: np.ndarray | Iterable[np.ndarray], ids: list[str], folder: Path, faiss: dict[str, Any],
                       model: str, query_max_length: int, seed: int, threads: int | None,
                       precision: str = "float32") -> dict[str, Any]:
    """A faiss index folder of ``vectors`` (one array, or blocks of rows in ``ids`` order, added as they come so
    a flat or HNSW index is the only copy) with the ``faiss`` settings (type, auto_flat_max, hnsw_m, hnsw_ef_search,
    ivf_lists, pq_m, pq_bits, ivf_nprobe) and its system.json, which it returns. An approximate index records
    how it is searched and the recall that costs; one encoded in bfloat16 says so (its queries are encoded the
    same way)."""
    import faiss as faisslib

    if threads:
        faisslib.omp_set_num_threads(threads)
    kind = choose_faiss_type(faiss["type"], len(ids), faiss["auto_flat_max"])
    settings = {"hnsw_m": faiss["hnsw_m"], "ivf_lists": faiss["ivf_lists"], "pq_m": faiss["pq_m"],
                "pq_bits": faiss["pq_bits"]}
    blocks = [vectors] if isinstance(vectors, np.ndarray) else vectors
    if kind == "ivfpq":  # trained on every vector before the first is added: they are held once, the codes are small
        whole = np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks])
        index, dim = build_faiss(whole, kind, seed=seed, threads=threads, **settings), whole.shape[1]
    else:
        index = None
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32)
            if index is None:
                index = new_faiss(kind, block.shape[1], len(ids), **settings)
            index.add(block)
        if index is None:
            raise ValueError(f"{folder}: no vectors to index")
        whole, dim = None, index.d
    if index.ntotal != len(ids):
        raise ValueError(f"{folder}: {index.ntotal} vectors for {len(ids)} ids")
    meta = {"kind": "faiss", "faiss_type": kind, "model": model, "dim": int(dim), "query_max_length": query_max_length}
    if kind == "hnsw":  # how it is searched, beside how it was built
        meta["ef_search"] = index.hnsw.efSearch = faiss.get("hnsw_ef_search", 256)
    if kind == "ivfpq":
        meta["nprobe"] = index.nprobe = faiss.get("ivf_nprobe", 16)
    if precision != "float32":
        meta["precision"] = precision
    if kind != "flat":  # what the approximation costs, measured against exact search
        meta["recall_at_10_vs_flat"] = round(recall_vs_exact(index, whole, seed=seed), 4)
    del whole
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_faiss(index, ids, folder)
    write_system(folder, meta)
    return meta


def open_system(index_dir: Path, encoders: Encoders, k1: float, b: float, threads: int | None = None) -> Retriever:
    """The retriever of any index folder: BM25 with ``k1``/``b``, faiss or impact with the model in system.json."""
    meta = read_system(index_dir)
    if meta["kind"] == "bm25":
        return BM25Retriever(index_dir, k1=k1, b=b, threads=threads)
    if meta["kind"] == "faiss":
        encoder = encoders.dense_encoder(meta["model"], meta["query_max_length"], meta.get("precision", "float32"),
                                         threads=threads)
        return FaissRetriever(index_dir, encoder, nprobe=meta.get("nprobe", 16), ef_search=meta.get("ef_search", 256))
    encoder = encoders.splade_encoder(meta["model"], meta["query_max_length"], threads=threads)
    return ImpactRetriever(index_dir, encoder, scale=meta["scale"], threads=threads)


class ProjectEncoders:
    """Query encoders for opening a project's indexes outside a stage (judge pools, search): a model name that is a
    folder of the project (a trained model, ``artifacts/train/dense``) resolves against ``root``."""

    def __init__(self, root: Path | str, cache_dir: Path | str, threads: int | None = None, batch_size: int = 32,
                 use_cache: bool = True):
        self.root, self.cache_dir, self.threads = Path(root), Path(cache_dir), threads
        self.batch_size, self.use_cache = batch_size, use_cache

    def resolve(self, name: str):
        return self._model(name)

    def _model(self, name: str):
        from irforge.models import resolve_model

        local = self.root / name
        return resolve_model(str(local) if not name.startswith("pkg:") and local.exists() else name, self.cache_dir)

    def dense_encoder(self, name: str, max_length: int, precision: str = "float32",
                      threads: int | None = None) -> DenseEncoder:
        return DenseEncoder(self._model(name), self.cache_dir, max_length=max_length, batch_size=self.batch_size,
                            threads=threads or self.threads, precision=precision, use_cache=self.use_cache)

    def splade_encoder(self, name: str, max_length: int, threads: int | None = None) -> SpladeEncoder:
        return SpladeEncoder(self._model(name), self.cache_dir, max_length=max_length, batch_size=self.batch_size,
                             threads=threads or self.threads, use_cache=self.use_cache)
