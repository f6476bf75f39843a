"""What every stage shares: its declaration, the params it may read, and a context that records provenance.

A stage module declares ``STAGE = Stage(name, version, params=(...sections...))`` and a function
``run(ctx: StageContext) -> dict`` (a small summary for logs). It reads artifacts with ``ctx.read`` and
writes them with ``ctx.write`` / ``ctx.publish_dir`` / ``ctx.write_text``; the context hashes every input
it was handed and stamps each output with the full provenance record. The same function runs under
``dvc repro`` (through the CLI) and as a Prefect task, so the two never drift.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import inspect
import logging
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from irforge import __version__, artifacts
from irforge.params import Params

log = logging.getLogger(__name__)

# Libraries whose version can change an artifact; recorded when installed (no import needed).
_TRACKED_LIBRARIES = (
    "pyarrow", "numpy", "torch", "transformers", "sentence-transformers", "tokenizers", "pyserini",
    "faiss-cpu", "ir-measures", "prefect", "dvc",
)


@dataclass(frozen=True)
class Stage:
    name: str
    version: str
    params: tuple[str, ...]  # params.yaml sections this stage reads; dvc.yaml lists the same


@dataclass(frozen=True)
class ModelRecord:
    name: str  # as given in params
    source: str  # pkg | local | hub | random (tests)
    sha256: str


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "irforge": __version__}
    for name in _TRACKED_LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def created_at() -> str:
    # SOURCE_DATE_EPOCH (the reproducible-builds convention) pins the clock, making artifacts byte-identical.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return now.replace(microsecond=0).isoformat()


@dataclass
class StageContext:
    stage: Stage
    root: Path
    params: Params
    code_sha256: str = ""
    _inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _models: dict[str, ModelRecord] = field(default_factory=dict)

    @classmethod
    def for_module(cls, module: Any, root: Path, params: Params) -> StageContext:
        source = inspect.getsourcefile(module)
        code = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""
        return cls(stage=module.STAGE, root=Path(root), params=params, code_sha256=code)

    # ------------------------------------------------------------ params
    def section(self, name: str) -> dict[str, Any]:
        """A params section; reading one the stage did not declare is a bug (dvc.yaml would not track it)."""
        if name not in self.stage.params:
            raise KeyError(f"stage '{self.stage.name}' reads params section '{name}' without declaring it")
        return self.params.section(name)

    @property
    def seed(self) -> int:
        return int(self.section("seed"))

    def path(self, relative: str | Path) -> Path:
        return self.root / relative

    # ------------------------------------------------------------ inputs
    def use_input(self, path: Path, kind: str = "raw") -> Path:
        """Record a file or folder this stage reads (hash it once)."""
        path = Path(path)
        key = self._relative(path)
        if key not in self._inputs:
            prov = artifacts.read_provenance(path) if path.exists() else None
            self._inputs[key] = {
                "path": key,
                "kind": kind if prov is None else prov.get("artifact", kind),
                "sha256": artifacts.sha256_path(path),
                "stage": None if prov is None else prov.get("stage"),
            }
        return path

    def read(self, path: Path, kind: str, columns: list[str] | None = None) -> pa.Table:
        table = artifacts.read_artifact(path, kind, columns)
        self.use_input(path, kind)
        return table

    def use_model(self, record: ModelRecord) -> None:
        self._models[record.name] = record

    # ------------------------------------------------------------ outputs
    def provenance(self) -> dict[str, Any]:
        sections = {name: self.params.section(name) for name in self.stage.params}
        return {
            "stage": self.stage.name,
            "stage_version": self.stage.version,
            "code_sha256": self.code_sha256,
            "params": sections,
            "params_hash": artifacts.stable_hash(sections),
            "inputs": sorted(self._inputs.values(), key=lambda r: r["path"]),
            "models": [vars(m) for m in sorted(self._models.values(), key=lambda m: m.name)],
            "versions": library_versions(),
            "created_at": created_at(),
        }

    def write(self, path: Path, kind: str, table: pa.Table) -> Path:
        artifacts.write_artifact(table, path, kind, self.provenance())
        log.info("wrote %s (%s, %d rows)", self._relative(path), kind, table.num_rows)
        return path

    def write_text(self, path: Path, text: str, provenance: bool = True) -> Path:
        return artifacts.write_text_atomic(path, text, self.provenance() if provenance else None)

    @contextlib.contextmanager
    def publish_dir(self, path: Path) -> Iterator[Path]:
        with artifacts.publish_dir(path, self.provenance) as tmp:
            yield tmp
        log.info("published %s", self._relative(path))

    def _relative(self, path: Path) -> str:
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root.absolute()).as_posix()
        except ValueError:
            return path.as_posix()
