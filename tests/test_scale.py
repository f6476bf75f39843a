"""Bounded memory at any corpus size: artifacts streamed by row group, row caches that hold keys not values, faiss
indexes filled block by block (the index holds the only copy of the vectors), and the `auto` index kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from irforge import retrieval
from irforge.contract import artifacts
from irforge.contract.schemas import SCHEMAS
from irforge.models.cache import EmbeddingCache

PROV = {"stage": "test", "stage_version": "1"}


def chunk_rows(n: int) -> list[dict]:
    return [{"chunk_id": f"d{i}#0", "doc_id": f"d{i}", "passage_index": 0, "title": "", "text": f"passage {i}",
             "char_start": 0, "char_end": 9, "n_tokens": 2, "content_hash": f"h{i}", "doc_hash": f"h{i}"}
            for i in range(n)]


def test_a_large_artifact_is_written_in_row_groups_and_read_back_batch_by_batch(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(artifacts, "ROW_GROUP", 4)
    table = pa.Table.from_pylist(chunk_rows(10), schema=SCHEMAS["chunks"])
    path = artifacts.write_artifact(table, tmp_path / "chunks.parquet", "chunks", PROV)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert artifacts.count_rows(path) == 10
    batches = list(artifacts.iter_artifact(path, "chunks", ["chunk_id"], batch_size=3))
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    assert [i for b in batches for i in b.column(0).to_pylist()] == [f"d{i}#0" for i in range(10)]


def test_streaming_a_file_of_the_wrong_kind_fails_before_the_first_row(tmp_path: Path):
    runs = pa.Table.from_pylist([{"system": "bm25", "query_id": "q", "doc_id": "d", "rank": 1, "score": 1.0}],
                                schema=SCHEMAS["run"])
    path = artifacts.write_artifact(runs, tmp_path / "run.parquet", "run", PROV)
    with pytest.raises(artifacts.ArtifactError, match="run.parquet: artifact 'chunks' is missing column 'chunk_id'"):
        next(artifacts.iter_artifact(path, "chunks"))
    with pytest.raises(artifacts.ArtifactError, match="not found"):
        next(artifacts.iter_artifact(tmp_path / "absent.parquet", "chunks"))


def test_a_row_cache_holds_keys_and_reads_values_only_from_the_shards_a_lookup_needs(tmp_path: Path, monkeypatch):
    folder = tmp_path / "embeddings"
    first = EmbeddingCache(folder)
    first.put(["a", "b"], ["ka", "kb"], [np.array([1.0, 0.0]), np.array([0.0, 1.0])])
    first.put(["c"], ["kc"], [np.array([0.6, 0.8])])
    read: list[tuple[str, tuple | None]] = []
    real = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda p, columns=None, **kw: read.append((Path(p).name, columns))
                        or real(p, columns=columns, **kw))
    cache = EmbeddingCache(folder)
    assert len(cache) == 3 and all(columns == ["content_hash"] for _, columns in read)  # the key index only
    read.clear()
    found = cache.get(["kc", "missing"])
    assert list(found) == ["kc"] and np.allclose(found["kc"], [0.6, 0.8])
    assert len(read) == 1  # one shard opened for its values
    both = cache.get(["kb", "ka", "kc"])
    assert np.allclose(both["ka"], [1, 0]) and np.allclose(both["kb"], [0, 1])
    values, computed = cache.through(["d", "a"], ["kd", "ka"], lambda rows: [np.array([0.0, -1.0]) for _ in rows])
    assert computed == 1 and np.allclose(values[0], [0, -1]) and np.allclose(values[1], [1, 0])
    assert len(EmbeddingCache(folder)) == 4


def _unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_faiss_folder_built_block_by_block_equals_one_built_from_the_whole_array(tmp_path: Path, kind: str):
    docs, queries = _unit(600, 16), _unit(12, 16, seed=1)
    ids = [f"d{i}" for i in range(len(docs))]
    settings = {"type": kind, "auto_flat_max": 100, "hnsw_m": 16, "ivf_lists": 0, "pq_m": 4, "pq_bits": 8}
    whole = retrieval.build_faiss_folder(docs, ids, tmp_path / "whole", settings, "m", 16, 0, 1)
    blocks = retrieval.build_faiss_folder((docs[i:i + 128] for i in range(0, 600, 128)), ids, tmp_path / "blocks",
                                          settings, "m", 16, 0, 1)
    again = retrieval.build_faiss_folder((docs[i:i + 128] for i in range(0, 600, 128)), ids, tmp_path / "again",
                                         settings, "m", 16, 0, 1)
    assert blocks == again and blocks["faiss_type"] == kind
    import faiss

    a, b, c = (faiss.read_index(str(tmp_path / name / "index.faiss")) for name in ("whole", "blocks", "again"))
    assert (b.search(queries, 10)[1] == c.search(queries, 10)[1]).all()  # same blocks, same index
    assert np.array_equal(retrieval.stored_vectors(b), docs)  # the index's own copy, read without another
    if kind == "flat":
        assert whole == blocks and (a.search(queries, 10)[1] == b.search(queries, 10)[1]).all()
    else:  # a graph grown block by block is another graph: the recall it costs is measured, from its own vectors
        assert blocks["ef_search"] == b.hnsw.efSearch == 256  # how it is searched: in system.json and the index
        assert blocks["recall_at_10_vs_flat"] == round(retrieval.recall_vs_exact(b, docs), 4) > 0.8


def test_a_faiss_folder_refuses_vectors_and_ids_that_disagree(tmp_path: Path):
    settings = {"type": "flat", "auto_flat_max": 100, "hnsw_m": 16, "ivf_lists": 0, "pq_m": 4, "pq_bits": 8}
    with pytest.raises(ValueError, match="9 vectors for 10 ids"):
        retrieval.build_faiss_folder(_unit(9, 8), [f"d{i}" for i in range(10)], tmp_path / "x", settings, "m", 8, 0, 1)
    assert not (tmp_path / "x").exists()


def test_a_stage_cost_is_read_off_the_measured_curve_as_a_power_law():
    from irforge.reporting.figures import cost_at

    points = [(10_000, 10.0), (100_000, 100.0), (1_000_000, 4000.0)]
    assert cost_at(points, 10_000) == pytest.approx(10.0)
    assert cost_at(points, 31_623) == pytest.approx(31.623, rel=1e-3)  # slope 1 between the first two sizes
    assert cost_at(points, 300_000) == pytest.approx(100 * 3 ** np.log10(40), rel=1e-6)  # steeper segment
    assert cost_at(points, 1_000) == pytest.approx(1.0)  # below the curve: the first segment's growth
    assert cost_at([(1_000, 5.0)], 4_000) == pytest.approx(20.0)  # one size: linear


def test_the_report_shows_each_stage_cost_at_the_run_own_size_with_the_curve(tmp_path: Path):
    import json

    from irforge.reporting import sections

    measured = {"sizes": {str(n): {"passages": n, "stages": {
        "bm25 index": {"wall_s": n / 1000, "cpu_s": n / 500, "peak_rss_mb": 512.0},
        "dense-zs encoding": {"wall_s": n / 100, "cpu_s": n / 50, **({"extrapolated": "from 10,000"} if n > 10_000 else {})}},
        "search": {"bm25": {"p50_ms": 1.0, "p95_ms": 2.0, "batch_qps": 100.0}}} for n in (10_000, 100_000)}}
    path = tmp_path / "scale.json"
    path.write_text(json.dumps(measured))
    html = sections.scale(path, 40_000, tmp_path)
    assert "This corpus has 40,000 passages" in html
    import re

    assert re.search(r"bm25 index</td><td[^>]*>40 s<", html)  # 10 s at 10^4, 100 s at 10^5: linear between
    assert re.search(r"dense-zs encoding</td><td[^>]*>400 s<", html)
    assert "100,000: 1,000 s (extrapolated)" in html
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert sections.scale(tmp_path / "scale.json", 10, tmp_path)  # a tiny corpus still gets its (tiny) estimate
