"""Row-level cache of generated samples, so re-runs only pay for what changed.

One SQLite file (default ``.irforge-cache/generation.sqlite``, outside DVC's outputs so ``dvc repro`` never
deletes it). A row is keyed by the hash of (chunk content hash, model hash, prompt hash, sampling params and dtype,
seed) and holds the raw samples of that chunk, before cleaning (so changing cleaning thresholds costs no
generation). Each batch is committed in one transaction: a killed run keeps what it finished, and a reader
never sees half a batch. WAL mode lets doc2query and synthesize share the file when run in parallel.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from irforge.contract.artifacts import stable_hash
from irforge.generation.generator import Sample


def cache_key(content_hash: str, model_hash: str, prompt_hash: str, params: Mapping[str, Any], seed: int) -> str:
    return stable_hash({"content": content_hash, "model": model_hash, "prompt": prompt_hash,
                        "params": dict(params), "seed": int(seed)})


class GenerationCache:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=120)
        # Switching a fresh file to WAL takes an exclusive lock, and SQLite answers "database is locked" at once
        # (no busy wait) when another process or thread opens the same fresh file at that moment: retry.
        for attempt in range(1, 41):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, rows TEXT NOT NULL)")
                self._db.commit()
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 40:
                    raise
                time.sleep(0.05 * attempt)

    def get_many(self, keys: Iterable[str]) -> dict[str, list[Sample]]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, list[Sample]] = {}
        for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            part = keys[i : i + 500]
            sql = f"SELECT key, rows FROM samples WHERE key IN ({','.join('?' * len(part))})"
            for key, rows in self._db.execute(sql, part):
                found[key] = [Sample(**r) for r in json.loads(rows)]
        return found

    def put_many(self, items: Mapping[str, list[Sample]]) -> None:
        with self._db:  # one transaction
            self._db.executemany(
                "INSERT OR REPLACE INTO samples (key, rows) VALUES (?, ?)",
                [(k, json.dumps([vars(s) for s in v])) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def close(self) -> None:
        self._db.close()
