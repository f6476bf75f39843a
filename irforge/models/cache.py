"""Row caches of encoder outputs by content key: Parquet shards of one schema in one folder per encoder setting
(the folder name is the encoder's fingerprint, so a changed model or setting never reads old rows). A shard is
written whole (temp file, then rename), so a killed run leaves whole shards only."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from irforge.contract import owned
from irforge.contract.artifacts import stable_hash, validate
from irforge.contract.schemas import SCHEMAS


class RowCache:
    """Only the keys are held in memory (which shard and row holds each); values are read from the shards a
    lookup needs, so a cache of 10^6 vectors costs a key index, not a second copy of the vectors."""

    kind: str  # the schema of the shards

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._shards: list[Path] = []
        self._where: dict[str, tuple[int, int]] | None = None  # key -> (shard number, row)

    def _decode(self, table: pa.Table) -> list[Any]:
        raise NotImplementedError

    def _encode(self, values: Sequence[Any]) -> dict[str, pa.Array]:
        """The value columns of a shard (``chunk_id`` and ``content_hash`` are written by :meth:`put`)."""
        raise NotImplementedError

    def _index(self) -> dict[str, tuple[int, int]]:
        if self._where is None:
            self._where = {}
            for shard in sorted(self.folder.glob("*.parquet")):
                self._add_shard(shard, pq.read_table(shard, columns=["content_hash"]).column(0).to_pylist())
        return self._where

    def _add_shard(self, shard: Path, keys: Sequence[str]) -> None:
        number = len(self._shards)
        self._shards.append(shard)
        self._where.update((key, (number, row)) for row, key in enumerate(keys))

    def __len__(self) -> int:
        return len(self._index())

    def get(self, keys: Sequence[str]) -> dict[str, Any]:
        where = self._index()
        wanted: dict[int, list[tuple[str, int]]] = {}
        for key in dict.fromkeys(keys):
            if key in where:
                shard, row = where[key]
                wanted.setdefault(shard, []).append((key, row))
        found: dict[str, Any] = {}
        for shard, items in wanted.items():
            path = self._shards[shard]
            table = validate(pq.read_table(path), self.kind, path).take([row for _, row in items])
            found.update(zip([key for key, _ in items], self._decode(table), strict=True))
        return found

    def through(self, ids: Sequence[str], keys: Sequence[str],
                compute: Callable[[list[int]], Sequence[Any]]) -> tuple[list[Any], int]:
        """Values for ``keys`` in order: cached ones read, the others computed once per distinct key by
        ``compute(row indices)`` and cached. Returns the values and how many were computed."""
        found = self.get(keys)
        missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in missing:
                missing[key] = i
        if missing:
            rows = list(missing.values())
            values = compute(rows)
            self.put([ids[i] for i in rows], list(missing), values)
            found.update(zip(missing, values, strict=True))
        return [found[key] for key in keys], len(missing)

    def put(self, ids: Sequence[str], keys: Sequence[str], values: Sequence[Any]) -> None:
        if not len(keys):
            return
        table = pa.table({"chunk_id": pa.array(list(ids), pa.string()), "content_hash": pa.array(list(keys), pa.string()),
                          **self._encode(values)}, schema=SCHEMAS[self.kind])
        self.folder.mkdir(parents=True, exist_ok=True)
        shard = self.folder / f"{stable_hash(sorted(keys))[:16]}.parquet"
        tmp = owned.check(shard.with_name(f".{shard.name}.tmp-{os.getpid()}"), "write")
        try:
            pq.write_table(table, tmp, compression="zstd")
            owned.replace(tmp, shard)
        finally:
            owned.remove(tmp)
        self._index()
        self._add_shard(shard, list(keys))


class EmbeddingCache(RowCache):
    """Dense vectors (float32) by content key."""

    kind = "embeddings"

    def _decode(self, table: pa.Table) -> list[np.ndarray]:
        flat = table.column("embedding").combine_chunks().flatten().to_numpy()
        return list(flat.reshape(table.num_rows, -1))

    def _encode(self, values: Sequence[Any]) -> dict[str, pa.Array]:
        return {"embedding": pa.array([np.asarray(v, dtype=np.float32) for v in values], pa.list_(pa.float32()))}


class ImpactCache(RowCache):
    """Quantised SPLADE vectors ({token: impact}) by content key."""

    kind = "impact_vectors"

    def _decode(self, table: pa.Table) -> list[dict[str, int]]:
        return [dict(zip(terms, impacts, strict=True)) for terms, impacts in
                zip(table.column("terms").to_pylist(), table.column("impacts").to_pylist(), strict=True)]

    def _encode(self, values: Sequence[Any]) -> dict[str, pa.Array]:
        return {"terms": pa.array([list(v) for v in values], pa.list_(pa.string())),
                "impacts": pa.array([list(v.values()) for v in values], pa.list_(pa.int32()))}


class CountsCacheHits:
    """An encoder whose outputs go through a row cache, counting what the cache answered and what it computed."""

    cache_hits: int
    cache_misses: int

    def _through(self, cache: RowCache | None, ids: Sequence[str], keys: Sequence[str],
                 compute: Callable[[list[int]], Sequence[Any]]) -> Sequence[Any]:
        """Values for ``keys`` in order: through ``cache``, or all computed when there is none."""
        if cache is None:
            values, computed = compute(list(range(len(keys)))), len(keys)
        else:
            values, computed = cache.through(ids, keys, compute)
        self.cache_hits += len(keys) - computed
        self.cache_misses += computed
        return values
