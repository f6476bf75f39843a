"""Lucene builds on Dask: the records indexed in partitions on the workers and merged (``addIndexes``) give the
same search results, scores and tie order as a single-process build, for BM25 and for impact (SPLADE) indexes."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import pytest

from irforge.retrieval.lucene import (
    BM25Retriever,
    ImpactRetriever,
    IndexBuildError,
    build_impact_index,
    build_lucene_index,
    count_documents,
)
from irforge.runtime.partition import partition_count, partitions_hint

WORDS = ["wing", "lift", "drag", "flow", "plate", "shock", "wave", "heat", "slab", "orbit", "boundary", "layer"]


def _passages() -> list[tuple[str, str]]:
    """36 short passages over 12 words (frequent words, varied lengths and document frequencies); the last 8
    repeat earlier ones under other ids, so equal scores occur and must be ordered alike."""
    rng = random.Random(7)
    weights = [4, 4, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1]  # "wing" in most passages, "layer" in few
    texts = [" ".join(rng.choices(WORDS, weights, k=rng.randint(2, 9))) for _ in range(28)]
    texts += texts[:8]
    return [(f"p{i:02d}", text) for i, text in enumerate(texts)]


def _vectors() -> list[tuple[str, dict[str, int]]]:
    rng = random.Random(11)
    vectors = [{w: rng.randint(1, 4) for w in rng.sample(WORDS, rng.randint(1, 5))} for _ in range(28)]
    vectors += vectors[:8]
    return [(f"v{i:02d}", vector) for i, vector in enumerate(vectors)]


QUERIES = {"q1": "wing", "q2": "lift drag", "q3": "flow flow plate", "q4": "boundary layer heat",
           "q5": "orbit", "q6": "shock wave slab wing", "q7": "layer"}
QUERY_VECTORS = [{"wing": 3}, {"lift": 2, "drag": 1}, {"flow": 1, "plate": 1}, {"boundary": 5, "layer": 5, "heat": 2},
                 {"orbit": 1}, {"shock": 2, "wave": 2, "slab": 1, "wing": 1}, {"layer": 1}]


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _build_on_worker(build, items: list, index_dir: Path) -> tuple[int, list[str]]:
    """A task on a Dask worker (as the index stage is under ``irforge flow --dask``): the build and its log."""
    logger, handler = logging.getLogger("irforge.retrieval.lucene"), _Messages()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return build(items, index_dir), handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _second_part_fails(input_dir: Path, part_dir: Path, collection: str, options: list[str]) -> int:
    from irforge.retrieval import lucene

    if input_dir.name == "input-001":
        raise RuntimeError("disk gone")
    lucene._index_collection(input_dir, part_dir, collection, options, threads=1)
    return lucene.count_documents(part_dir)


def _build_with_a_failing_part(items: list, index_dir: Path) -> int:
    from irforge.retrieval import lucene

    original, lucene._index_part = lucene._index_part, _second_part_fails  # this worker submits the parts
    try:
        return lucene.build_lucene_index(items, index_dir)
    finally:
        lucene._index_part = original


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _stats(index: Path) -> dict:
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index))
    try:
        return reader.stats()
    finally:
        reader.reader.close()


def _partitions(messages: list[str]) -> int:
    found = [re.search(r"(\d+) records in (\d+) partitions over (\d+) Dask workers", m) for m in messages]
    (match,) = [m for m in found if m]
    assert int(match.group(3)) == 2
    return int(match.group(2))


def test_partition_count_follows_the_flow_then_the_environment(monkeypatch):
    monkeypatch.delenv("IRFORGE_PARTITIONS", raising=False)
    assert partition_count(3) == 6
    monkeypatch.setenv("IRFORGE_PARTITIONS", "5")
    assert partition_count(3) == 5
    with partitions_hint(7):
        assert partition_count(3) == 7


def test_bm25_index_built_in_partitions_on_dask_ranks_like_a_local_build(tmp_path, client):
    docs = _passages()
    local, merged = tmp_path / "local" / "index", tmp_path / "dask" / "index"
    assert build_lucene_index(docs, local, threads=2) == len(docs)
    n, messages = client.submit(_build_on_worker, build_lucene_index, docs, merged, pure=False).result()

    assert n == len(docs) and count_documents(merged) == count_documents(local) == len(docs)
    assert _partitions(messages) > 1
    assert sorted(p.name for p in merged.parent.iterdir()) == ["index"]  # the parts' folder is gone
    assert _stats(merged) == _stats(local)  # the collection statistics BM25 reads (avgdl = total_terms / documents)
    runs = []
    for index in (local, merged):
        retriever = BM25Retriever(index, threads=1)
        runs.append(retriever.search(QUERIES, k=len(docs)))
        retriever.close()
    assert runs[0] == runs[1] and all(runs[0].values())
    # Ties were there to be broken alike: Anserini rounds tied scores to 4 decimals and orders them by docid
    # (each one a hair below the one before), so a repeated passage sits right after its twin.
    ties = [(a, b) for hits in runs[0].values() for (a, x), (b, y) in zip(hits, hits[1:]) if abs(x - y) < 1e-4]
    assert ("p00", "p28") in ties and len(ties) >= 8


def test_impact_index_built_in_partitions_on_dask_ranks_like_a_local_build(tmp_path, client):
    vectors = _vectors()
    local, merged = tmp_path / "local" / "impact", tmp_path / "dask" / "impact"
    assert build_impact_index(vectors, local, threads=2) == len(vectors)
    n, messages = client.submit(_build_on_worker, build_impact_index, vectors, merged, pure=False).result()

    assert n == len(vectors) and count_documents(merged) == len(vectors)
    assert _partitions(messages) > 1
    qids = list(QUERIES)
    runs = []
    for index in (local, merged):
        retriever = ImpactRetriever(index, encoder=None)  # hand-made query vectors: no model needed
        runs.append(retriever.search_vectors(QUERY_VECTORS, qids, k=len(vectors)))
        retriever.close()
    assert runs[0] == runs[1] and all(runs[0].values())
    ties = [(a, b) for hits in runs[0].values() for (a, x), (b, y) in zip(hits, hits[1:]) if abs(x - y) < 1e-4]
    assert len(ties) >= 8
    docs = dict(vectors)
    for qid, query in zip(qids, QUERY_VECTORS, strict=True):  # and the scores are the dot products (less Anserini's
        assert [s for _, s in runs[1][qid]] == pytest.approx(  # hair between tied scores)
            [sum(w * docs[d].get(t, 0) for t, w in query.items()) for d, _ in runs[1][qid]], abs=1e-3)


def test_a_failed_partition_leaves_no_index_and_no_parts_behind(tmp_path, client):
    merged = tmp_path / "dask" / "index"
    with pytest.raises(IndexBuildError, match=r"partition 2 of \d+ failed on a Dask worker: disk gone"):
        client.submit(_build_with_a_failing_part, _passages(), merged, pure=False).result()
    assert list(merged.parent.iterdir()) == []
