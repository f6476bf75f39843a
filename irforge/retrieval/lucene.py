"""Lucene through pyserini: BM25 indexes and search, and Lucene impact indexes (quantised SPLADE weights).

Indexes are built with Anserini's IndexCollection (what ``pyserini.index.lucene`` runs) from JSON records
written in ``threads`` shards, so Anserini indexes them in parallel; every index is optimised to one segment
(deterministic scoring order, faster search). On a Dask worker (``irforge flow --dask``) the shards are indexed
as tasks across the cluster and the part indexes merged into one, which ranks as a single-process build does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from irforge.contract import owned
from irforge.models.splade import SparseVector, SpladeEncoder
from irforge.retrieval.java import ensure_java
from irforge.retrieval.runs import Run
from irforge.runtime.partition import dask_workers, on_dask_worker, partition_count

log = logging.getLogger(__name__)

MAX_QUERY_TERMS = 1024  # Lucene's default BooleanQuery clause limit; trained SPLADE queries use far fewer


def index_json_collection(records: Iterable[dict], index_dir: Path, collection: str, options: list[str],
                          threads: int = 2) -> int:
    """Index JSON records with Anserini's IndexCollection (what ``pyserini.index.lucene`` runs).

    The records are written as ``collection`` (JsonCollection, JsonVectorCollection, ...) in ``threads``
    shards so Anserini indexes them in parallel; ``options`` are the collection-specific flags. Returns the
    number of records indexed. On a Dask worker (``irforge flow --dask``) the shards are indexed across the
    cluster instead and merged into one index: see :func:`_index_on_dask`.
    """
    ensure_java()
    index_dir = Path(index_dir)
    if on_dask_worker():
        return _index_on_dask(records, index_dir, collection, options)
    with owned.temp_dir(prefix="irforge-jsoncoll-") as tmp:
        n = sum(_write_round_robin(records, [Path(tmp) / f"part-{i:03d}.jsonl" for i in range(max(1, threads))]))
        _index_collection(Path(tmp), index_dir, collection, options, threads)
    return _checked_count(index_dir, n)


def _write_round_robin(records: Iterable[dict], paths: list[Path]) -> list[int]:
    """Write record i to ``paths[i % len(paths)]``, streaming (a corpus need not fit in memory, nor be counted
    first); returns the count written to each file."""
    counts = [0] * len(paths)
    with contextlib.ExitStack() as files:
        shards = [files.enter_context(open(path, "w", encoding="utf-8")) for path in paths]
        for i, record in enumerate(records):
            shards[i % len(shards)].write(json.dumps(record) + "\n")
            counts[i % len(shards)] += 1
    return counts


def _index_collection(input_dir: Path, index_dir: Path, collection: str, options: list[str], threads: int) -> None:
    from pyserini.pyclass import autoclass  # importing pyserini puts Anserini's jar on the classpath

    args = [
        "-collection", collection,
        "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(input_dir),
        "-index", str(index_dir),
        "-threads", str(max(1, threads)),
        *options,
        "-optimize",  # one segment: deterministic scoring order and faster search
        "-quiet",
    ]
    try:
        autoclass("io.anserini.index.IndexCollection").main(args)
    except Exception as e:  # jnius.JavaException: the Java exception and its whole stack in one message
        raise IndexBuildError(f"{index_dir}: Lucene could not build the index: {java_cause(e)}; "
                              f"{_free_space(index_dir)}") from e


def _checked_count(index_dir: Path, n: int) -> int:
    try:  # Anserini logs and carries on when a write fails (a full disk): the index may be missing or short
        indexed = count_documents(index_dir)
    except Exception as e:
        raise IndexBuildError(f"{index_dir}: Lucene wrote no usable index ({java_cause(e)}); {_free_space(index_dir)}"
                              ) from e
    if indexed != n:  # Anserini logs and skips a record it cannot index (empty, or an error in a worker thread)
        log.warning("%s: Lucene indexed %d of %d records; see Anserini's log above for the others", index_dir, indexed, n)
    return n


# ---------------------------------------------------------------- partitioned builds on Dask


def _index_on_dask(records: Iterable[dict], index_dir: Path, collection: str, options: list[str]) -> int:
    """Index the records as partitions, one Anserini run (one thread) per partition on the cluster's workers,
    then merge the parts into ``index_dir`` in partition order.

    Partitions are round-robin, not contiguous: the records are streamed to the partition files in one pass
    without being counted first, and the parts come out equal in size (±1 record) even when the corpus is
    sorted by length or source. The order of documents inside the merged index does not matter to search:
    scores come from the merged index's global statistics (document frequencies, average length), and
    Anserini breaks score ties by the collection docid, not Lucene's internal one, so the merged index
    ranks exactly as a single-process build of the same records does.
    """
    from distributed import get_client, wait, worker_client

    index_dir.parent.mkdir(parents=True, exist_ok=True)
    # Beside the destination, not in /tmp: every worker must read the partitions and write its part there, and a
    # cluster shares the project's storage, not its machines' temporary folders.
    with owned.temp_dir(prefix=f".{index_dir.name}.parts-", parent=index_dir.parent) as tmp:
        workers = dask_workers(get_client())
        inputs = [tmp / f"input-{i:03d}" for i in range(partition_count(workers))]
        for folder in inputs:
            folder.mkdir()
        # Written before this task leaves its slot: producing the records may itself use the cluster (the impact
        # stage's SPLADE batches go through map_calls while they are streamed here).
        counts = _write_round_robin(records, [folder / "docs.jsonl" for folder in inputs])
        used = [i for i, count in enumerate(counts) if count]  # fewer records than partitions: no empty parts
        parts = [tmp / f"index-{i:03d}" for i in used]
        with worker_client() as client:  # this task leaves its worker slot to the parts while it waits
            futures = [client.submit(_index_part, inputs[i], part, collection, options, pure=False)
                       for i, part in zip(used, parts, strict=True)]
            wait(futures)  # every part finished or failed before the folder is removed: no task still writes in it
        for k, future in enumerate(futures):
            try:
                future.result()
            except Exception as error:
                raise IndexBuildError(f"{index_dir}: partition {k + 1} of {len(futures)} failed on a Dask worker: "
                                      f"{error}") from error
        _merge_indexes(parts, index_dir)
    log.info("%s: %d records in %d partitions over %d Dask workers", index_dir, sum(counts), len(parts), workers)
    return _checked_count(index_dir, sum(counts))


def _index_part(input_dir: Path, part_dir: Path, collection: str, options: list[str]) -> int:
    """One partition's index, a Dask task of :func:`_index_on_dask` (module level: it is pickled by name)."""
    ensure_java()  # each worker process starts its own JVM, on its first Lucene task
    _index_collection(input_dir, part_dir, collection, options, threads=1)
    return count_documents(part_dir)


def _merge_indexes(parts: list[Path], index_dir: Path) -> None:
    """Lucene's ``IndexWriter.addIndexes``: the parts' segments copied in order (not re-analysed, so the analyzer
    here is never used, and norms and impacts stay as Anserini wrote them), then merged into one segment as
    Anserini's ``-optimize`` leaves a local build."""
    from pyserini.pyclass import autoclass

    def directory(path: Path) -> Any:
        return autoclass("org.apache.lucene.store.FSDirectory").open(autoclass("java.io.File")(str(path)).toPath())

    config = autoclass("org.apache.lucene.index.IndexWriterConfig")(
        autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")())
    config.setOpenMode(autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode").CREATE)
    # Log merges join neighbouring segments only (the default tiered policy picks by size): parts stay in order.
    config.setMergePolicy(autoclass("org.apache.lucene.index.LogDocMergePolicy")())
    sources = [directory(part) for part in parts]
    target = directory(index_dir)
    writer = autoclass("org.apache.lucene.index.IndexWriter")(target, config)
    try:
        if sources:  # none for an empty collection: an empty index, as Anserini writes for one
            writer.addIndexes(*sources)  # varargs: pyjnius matches Directory... only with the elements spread
        writer.forceMerge(1)
        writer.commit()
        writer.close()
    except Exception as e:
        writer.rollback()  # close() would commit what was added so far
        raise IndexBuildError(f"{index_dir}: Lucene could not merge the partition indexes: {java_cause(e)}; "
                              f"{_free_space(index_dir)}") from e
    finally:
        for d in (*sources, target):
            d.close()


class IndexBuildError(RuntimeError):
    """Lucene failed while building an index (full disk, unwritable folder, ...): one line naming the folder."""


def _free_space(path: Path) -> str:
    import shutil

    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            free = shutil.disk_usage(folder).free
            return f"{free / 2**20:.1f} MiB free on the disk holding it" + (" (full?)" if free < 64 * 2**20 else "")
    return "its folder does not exist"


def java_cause(error: BaseException) -> str:
    """The Java exception's class and message, without pyjnius' prefix and the stack trace."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    first = first.removeprefix("JVM exception occurred:").strip()
    return first if len(first) <= 200 else first[:200] + "..."  # Lucene may list every file of the folder


def count_documents(index_dir: Path) -> int:
    from pyserini.pyclass import autoclass

    directory = autoclass("org.apache.lucene.store.FSDirectory").open(autoclass("java.io.File")(str(index_dir)).toPath())
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
        directory.close()


def build_lucene_index(docs: Iterable[tuple[str, str]], index_dir: Path, threads: int = 2) -> int:
    """Index ``(id, contents)`` pairs for BM25 (positions and doc vectors stored). Returns the count."""
    records = ({"id": doc_id, "contents": contents} for doc_id, contents in docs)
    return index_json_collection(records, index_dir, "JsonCollection", ["-storePositions", "-storeDocvectors"],
                                 threads)


class BM25Retriever:
    def __init__(self, index_dir: Path, k1: float = 0.9, b: float = 0.4, threads: int | None = None):
        if not any(Path(index_dir).glob("segments_*")):
            raise FileNotFoundError(f"{index_dir}: not a Lucene index (run the index stage first)")
        ensure_java()
        from pyserini.search.lucene import LuceneSearcher

        self.searcher = LuceneSearcher(str(index_dir))
        self.searcher.set_bm25(k1, b)
        self.threads = threads or max(1, os.cpu_count() or 1)

    def use_feedback(self, method: str, docs: int, terms: int, query_weight: float = 0.5, alpha: float = 1.0,
                     beta: float = 0.75) -> None:
        """Pseudo-relevance feedback from each query's own top ``docs`` chunks, as pyserini implements it:
        ``rm3`` (``query_weight`` = share of the original query) or ``rocchio`` (``alpha``, ``beta``)."""
        if method == "rm3":
            self.searcher.set_rm3(fb_terms=terms, fb_docs=docs, original_query_weight=query_weight)
        elif method == "rocchio":
            self.searcher.set_rocchio(top_fb_terms=terms, top_fb_docs=docs, alpha=alpha, beta=beta)
        else:
            raise ValueError(f"unknown BM25 feedback method '{method}' (rm3, rocchio)")

    def search(self, queries: dict[str, str], k: int) -> Run:
        qids = list(queries)
        results = self.searcher.batch_search([queries[q] for q in qids], qids, k=k, threads=self.threads)
        return {qid: [(hit.docid, float(hit.score)) for hit in results.get(qid, [])] for qid in qids}

    def close(self) -> None:
        self.searcher.close()


def bm25_search(index_dir: Path, queries: dict[str, str], k: int, k1: float, b: float,
                threads: int | None = None) -> Run:
    """One batch of queries against a Lucene index; the searcher is closed after."""
    retriever = BM25Retriever(index_dir, k1=k1, b=b, threads=threads)
    try:
        return retriever.search(queries, k)
    finally:
        retriever.close()


def bm25_pair_scores(index_dir: Path, queries: dict[str, str], candidates: dict[str, list[str]], k1: float = 0.9,
                     b: float = 0.4) -> dict[str, np.ndarray]:
    """BM25 of each query against each of its candidate chunks (by id), with the index's collection statistics:
    the score a search would give, for any chunk, ranked or not."""
    ensure_java()
    from pyserini.index.lucene import LuceneIndexReader
    from pyserini.pyclass import autoclass

    reader = LuceneIndexReader(str(index_dir))
    similarity = autoclass("org.apache.lucene.search.similarities.BM25Similarity")(float(k1), float(b))
    try:
        return {q: np.array([reader.compute_query_document_score(c, queries[q], similarity) for c in cs], dtype=np.float64)
                for q, cs in candidates.items()}
    finally:
        reader.reader.close()


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

    def __init__(self, index_dir: Path, encoder: SpladeEncoder, scale: float = 100.0, threads: int | None = None):
        index_dir = Path(index_dir)
        if not any(index_dir.glob("segments_*")):
            raise FileNotFoundError(f"{index_dir}: not a Lucene index (run the index stage for this system first)")
        ensure_java()
        from pyserini.encode import QueryEncoder
        from pyserini.search.lucene import LuceneImpactSearcher

        self.encoder = encoder
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
