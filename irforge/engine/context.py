"""The context a stage runs in: its declared params, inputs and outputs, and the provenance it records.

A stage reads and writes only what it declared (``ctx.read("chunks")``, ``ctx.write("triples", table)``):
reading an undeclared input or params section is an error, because dvc.yaml would not track it. The context
hashes every input it hands out, records every model it resolves (``ctx.model``, ``ctx.dense_encoder``, ...),
and stamps each output with the full record: stage, version, variant, code hash (the stage module and the
irforge packages it uses), params and their hash, inputs, models, library versions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from irforge import __version__
from irforge.config import Config, RuntimeConfig
from irforge.contract import artifacts, owned
from irforge.contract.failpoints import failpoint
from irforge.contract.stage import BoundOutput
from irforge.engine.code import code_sha256
from irforge.models import DenseEncoder, ResolvedModel, SpladeEncoder, resolve_model
from irforge.runtime.cores import thread_share, training_threads

if TYPE_CHECKING:
    from irforge.engine.dag import Node
    from irforge.generation import Generator

log = logging.getLogger(__name__)

# Libraries whose version can change an artifact; recorded when installed (no import needed).
_TRACKED_LIBRARIES = (
    "pyarrow", "numpy", "torch", "transformers", "sentence-transformers", "tokenizers", "pyserini",
    "faiss-cpu", "ir-measures", "prefect", "dvc",
)


@dataclass(frozen=True)
class ModelRecord:
    name: str  # as given in params
    source: str  # pkg | local | hub | artifact
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
    node: Node
    root: Path
    config: Config
    _inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _models: dict[str, ModelRecord] = field(default_factory=dict)
    _runtime: dict[str, Any] = field(default_factory=dict)  # run settings a result depends on (training threads)

    def __post_init__(self) -> None:
        owned.claim_project(self.root, self.config.runtime.cache_dir)  # what this run may delete and replace

    # ------------------------------------------------------------ declaration
    @property
    def stage(self):
        return self.node.stage

    @property
    def variant(self) -> str | None:
        return self.node.variant

    @cached_property
    def code_sha256(self) -> str:
        return code_sha256(self.node.code)

    # ------------------------------------------------------------ params
    def section(self, name: str) -> Any:
        """A params section's model; reading one the stage did not declare is a bug (DVC would not track it)."""
        if name not in self.stage.params:
            raise KeyError(f"stage '{self.stage.name}' reads params section '{name}' without declaring it")
        return self.config.section(name)

    @property
    def seed(self) -> int:
        return int(self.section("seed"))

    @property
    def runtime(self) -> RuntimeConfig:
        """How to run (threads, batch sizes, caches): any stage may read it; DVC does not track it."""
        return self.config.runtime

    @property
    def threads(self) -> int:
        """Threads for work whose result does not depend on them (encoding, generation, search, index builds):
        this stage run's share of the cores, or ``runtime.threads`` when pinned."""
        return thread_share(self.runtime.pinned_threads)

    @property
    def training_threads(self) -> int:
        """Threads for training, whose result depends on them: the machine's full count (or the pinned one),
        never lowered by load; recorded in the provenance of what the stage writes."""
        n = training_threads(self.runtime.pinned_threads)
        self._runtime["training_threads"] = n
        return n

    @property
    def cache_dir(self) -> Path:
        return self.path(self.runtime.cache_dir)

    def path(self, relative: str | Path) -> Path:
        return self.root / relative

    # ------------------------------------------------------------ inputs
    def input(self, name: str) -> BoundOutput:
        """A declared input (its artifact name, project-relative path and kind)."""
        name = name.replace("{variant}", self.variant or "")
        for item in self.node.inputs:
            if item.name == name:
                return item
        declared = ", ".join(i.name for i in self.node.inputs) or "none"
        raise KeyError(f"stage '{self.node.key}' reads artifact '{name}' without declaring it (inputs: {declared})")

    def has_input(self, name: str) -> bool:
        """Whether ``name`` is a declared input whose artifact exists (for optional inputs)."""
        name = name.replace("{variant}", self.variant or "")
        return any(i.name == name for i in self.node.inputs) and self.path(self.input(name).path).exists()

    def input_path(self, name: str) -> Path:
        """The path of a declared input (a folder, a JSON file), recorded in provenance."""
        item = self.input(name)
        path = self.path(item.path)
        if not path.exists():
            raise artifacts.ArtifactError(f"{path}: artifact '{item.name}' not found; build it with "
                                          f"`{item.command}` (or `dvc repro`, which runs everything in order)")
        return self.use_input(path, item.kind)

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        item = self.input(name)
        path = self.path(item.path)
        table = artifacts.read_artifact(path, item.kind, columns)
        self.use_input(path, item.kind)
        return table

    def batches(self, name: str, columns: list[str] | None = None, size: int = 8192) -> Iterator[pa.RecordBatch]:
        """An input's rows in record batches of ``size`` (bounded memory for a corpus of any size); recorded."""
        item = self.input(name)
        path = self.path(item.path)
        artifacts.read_artifact_schema(path, item.kind)
        self.use_input(path, item.kind)
        return artifacts.iter_artifact(path, item.kind, columns, size)

    def count(self, name: str) -> int:
        """Rows of a Parquet input (from its footer, nothing read)."""
        return artifacts.count_rows(self.path(self.input(name).path))

    def read_file(self, path: Path, kind: str) -> pa.Table:
        """Read a Parquet artifact by path (operations outside the DAG, such as re-indexing); recorded."""
        table = artifacts.read_artifact(path, kind)
        self.use_input(path, kind)
        return table

    def read_json(self, name: str) -> Any:
        path = self.input_path(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise artifacts.ArtifactError(f"{path}: not valid JSON ({e})") from e

    def use_input(self, path: Path, kind: str = "raw") -> Path:
        """Record a file or folder this stage reads (hashed once)."""
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

    # ------------------------------------------------------------ models
    def model(self, name: str) -> ResolvedModel:
        """Resolve a model name (``pkg:``, a folder, a hub id) against the run's cache; recorded in provenance.
        A folder under the project (a trained model) is resolved relative to the project and recorded as an
        input too."""
        local = self.path(name)
        if not name.startswith("pkg:") and not Path(name).is_absolute() and local.exists():
            self.use_input(local, "model")
            resolved = resolve_model(str(local), self.cache_dir)
        else:
            resolved = resolve_model(name, self.cache_dir)
        self._models[name] = ModelRecord(name=name, source=resolved.source, sha256=resolved.sha256)
        return resolved

    def dense_encoder(self, name: str, max_length: int, precision: str = "float32",
                      threads: int | None = None) -> DenseEncoder:
        return DenseEncoder(self.model(name), self.cache_dir, max_length=max_length,
                            batch_size=self.runtime.encode_batch_size, threads=threads or self.threads,
                            precision=precision, use_cache=self.runtime.reuse_vectors)

    def splade_encoder(self, name: str, max_length: int, threads: int | None = None) -> SpladeEncoder:
        return SpladeEncoder(self.model(name), self.cache_dir, max_length=max_length,
                             batch_size=self.runtime.encode_batch_size, threads=threads or self.threads,
                             use_cache=self.runtime.reuse_vectors)

    def generator(self, name: str, chat_template: str, dtype: str, threads: int | None = None) -> Generator:
        from irforge.generation import Generator  # lazily: only the stages that generate or score with an LM import it

        return Generator(self.model(name), threads=threads or self.threads, chat_template=chat_template, dtype=dtype)

    # ------------------------------------------------------------ outputs
    def output(self, name: str) -> BoundOutput:
        return self.node.output(name.replace("{variant}", self.variant or "").replace("{stage}", self.stage.name))

    def output_path(self, name: str) -> Path:
        return self.path(self.output(name).path)

    def provenance(self) -> dict[str, Any]:
        sections = {name: self.config.as_params(name) for name in self.stage.params}
        record = {
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
        if self.variant is not None:
            record["variant"] = self.variant
        if self._runtime:
            record["runtime"] = dict(self._runtime)
        return record

    def write(self, name: str, table: pa.Table) -> Path:
        out = self.output(name)
        path = self.path(out.path)
        artifacts.write_artifact(table, path, out.kind, self.provenance())
        log.info("wrote %s (%s, %d rows)", out.path, out.kind, table.num_rows)
        failpoint(f"after-output:{out.path}")
        return path

    def write_file(self, path: Path, kind: str, table: pa.Table) -> Path:
        """Write a Parquet artifact by path (operations outside the DAG write into their own folders)."""
        return artifacts.write_artifact(table, Path(path), kind, self.provenance())

    def write_text(self, name: str, text: str, provenance: bool = False) -> Path:
        return artifacts.write_text_atomic(self.output_path(name), text, self.provenance() if provenance else None)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def metrics(self, obj: dict[str, Any]) -> Path:
        """The stage's DVC metrics file (its one metrics output)."""
        metric = next((o for o in self.node.outputs if o.metric), None)
        if metric is None:
            raise KeyError(f"stage '{self.node.key}' declares no metrics output (add Metrics() to its outputs)")
        return self.write_json(metric.name, obj)

    @contextlib.contextmanager
    def publish(self, name: str) -> Iterator[Path]:
        """Build a folder output in a temporary sibling, then swap it in (with its provenance inside)."""
        out = self.output(name)
        with artifacts.publish_dir(self.path(out.path), self.provenance) as tmp:
            yield tmp
        log.info("published %s", out.path)

    def _relative(self, path: Path) -> str:
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root.absolute()).as_posix()
        except ValueError:
            return path.as_posix()
