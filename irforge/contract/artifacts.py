"""Artifact I/O: typed Parquet checked against :mod:`irforge.contract.schemas`, provenance in the file, atomic writes.

Every artifact carries its own story in the Parquet footer (key ``irforge.provenance``): the stage and its
version, the params it read and their hash, the hashes of its inputs, models and library versions. Artifacts
that are folders (indexes, models) carry the same record as ``_provenance.json`` inside; plain files (TREC
runs, metrics) as a ``<name>.provenance.json`` beside them. Writes go to a temporary name in the same folder
and are renamed into place, so a killed stage leaves the previous artifact or none, never half of one.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from irforge.contract import owned
from irforge.contract.failpoints import active, failpoint
from irforge.contract.schemas import SCHEMAS

log = logging.getLogger(__name__)

PROVENANCE_KEY = b"irforge.provenance"
DIR_PROVENANCE = "_provenance.json"
SIDECAR_SUFFIX = ".provenance.json"
ROW_GROUP = 65_536  # rows per Parquet row group: what a streaming reader holds at once


class ArtifactError(ValueError):
    """An artifact is missing, unreadable, or does not match its declared schema."""


# ---------------------------------------------------------------- schema checks


def validate(table: pa.Table, kind: str, path: Path | str) -> pa.Table:
    """Check ``table`` against the schema of ``kind``; return it with columns in schema order."""
    if kind not in SCHEMAS:
        raise ArtifactError(f"{path}: unknown artifact kind '{kind}' (known: {', '.join(sorted(SCHEMAS))})")
    schema = SCHEMAS[kind]
    have = set(table.column_names)
    missing = [n for n in schema.names if n not in have]
    if missing:
        raise ArtifactError(f"{path}: artifact '{kind}' is missing column '{missing[0]}'" + _others(missing))
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise ArtifactError(f"{path}: artifact '{kind}' has unexpected column '{extra[0]}'" + _others(extra))
    for field in schema:
        actual = table.schema.field(field.name).type
        if not actual.equals(field.type):
            raise ArtifactError(
                f"{path}: artifact '{kind}', column '{field.name}': expected type {field.type}, found {actual}"
            )
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            first = next(i for i, v in enumerate(column.is_null().to_pylist()) if v)
            raise ArtifactError(
                f"{path}: artifact '{kind}', column '{field.name}': {column.null_count} null value(s), "
                f"first at row {first}; the column is required"
            )
    return table.select(schema.names).cast(schema)


def _others(names: list[str]) -> str:
    return f" (and {len(names) - 1} more: {', '.join(names[1:])})" if len(names) > 1 else ""


# ---------------------------------------------------------------- hashing


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """Content hash of a file, or of a folder (relative names + contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: cannot hash, no such file or folder")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- atomic writes


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def old_copies(path: Path) -> list[Path]:
    """Earlier versions of a folder artifact set aside by a publish (newest first)."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)


def _remove_leftovers(path: Path) -> None:
    """Delete temporaries that a killed earlier write of ``path`` left beside it (one writer per artifact: a
    stage holds its lock, DVC locks the repository). A folder publish killed between its two renames left the
    previous version aside and nothing at ``path``: that copy is put back first, never deleted."""
    name = glob.escape(path.name)
    if not path.exists() and (old := old_copies(path)):
        log.warning("%s: restoring the previous version from %s (a publish was interrupted)", path, old[0].name)
        owned.replace(old[0], path)
    for stale in [*path.parent.glob(f".{name}.tmp-*"), *path.parent.glob(f".{name}.old-*")]:
        owned.remove(stale)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_artifact(table: pa.Table, path: Path, kind: str, provenance: dict[str, Any]) -> Path:
    """Validate ``table`` as ``kind`` and write it atomically with ``provenance`` in the footer."""
    path = Path(path)
    table = validate(table, kind, path)
    record = {**provenance, "artifact": kind, "rows": table.num_rows}
    table = table.replace_schema_metadata({PROVENANCE_KEY: json.dumps(record, sort_keys=True).encode()})
    owned.check(path, "write")  # before anything is written: an artifact never replaces a file of the user's
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = _tmp_name(path)
    try:
        # row groups of ROW_GROUP rows: a reader can stream a large artifact (iter_artifact) in bounded memory
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP)
        _fsync(tmp)
        owned.replace(tmp, path)
    except OSError as e:  # disk full, read-only folder: name the artifact; the previous one is untouched
        raise _write_error(path, e) from e
    finally:
        owned.remove(tmp)
    return path


def _write_error(path: Path, error: OSError) -> ArtifactError:
    cause = error.strerror or str(error)
    return ArtifactError(f"{path}: could not be written ({cause}); the previous version, if any, is unchanged")


def write_text_atomic(path: Path, text: str, provenance: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    owned.check(path, "write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)
        owned.replace(tmp, path)
    except OSError as e:
        raise _write_error(path, e) from e
    finally:
        owned.remove(tmp)
    if provenance is not None:
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        write_text_atomic(sidecar, json.dumps({**provenance, "artifact": "file"}, indent=2, sort_keys=True))
    return path


@contextlib.contextmanager
def publish_dir(path: Path, provenance: dict[str, Any] | Callable[[], dict[str, Any]]) -> Iterator[Path]:
    """Build a folder artifact in a temporary sibling, then swap it in.

    Yields the temporary folder to fill. On success the provenance record (a dict, or a callable asked once
    the folder is built, when all inputs are known) is written inside and the folder replaces ``path``; on
    error the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    owned.check(path, "write")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        record = provenance() if callable(provenance) else provenance
        (tmp / DIR_PROVENANCE).write_text(json.dumps({**record, "artifact": "folder"}, indent=2, sort_keys=True))
        if path.exists() and not active("no-exchange") and owned.exchange(tmp, path):  # one atomic swap
            owned.remove(tmp)  # now the previous version
        else:  # no renameat2 here: two renames; a kill between them leaves the old copy, restored next time
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            if path.exists():
                owned.replace(path, old)
                failpoint("publish-between-renames")
            owned.replace(tmp, path)
            owned.remove(old)
    finally:
        owned.remove(tmp)


# ---------------------------------------------------------------- reading


def read_artifact(path: Path, kind: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet artifact and check it against the schema of ``kind``."""
    path = Path(path)
    if not path.exists():
        raise _missing(path, kind)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ArtifactError(f"{path}: not a readable Parquet file ({e})") from e
    table = validate(table, kind, path)
    return table.select(columns) if columns else table


def iter_artifact(path: Path, kind: str, columns: list[str] | None = None,
                  batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """The rows of a Parquet artifact in record batches, each checked against the schema of ``kind``: memory
    stays that of a row group however large the artifact (10^6 passages are ~1 GB of text)."""
    path = Path(path)
    read_artifact_schema(path, kind)  # a missing file or a wrong schema fails before the first batch
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        table = validate(pa.Table.from_batches([batch]), kind, path)
        yield from (table.select(columns) if columns else table).to_batches()


def count_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _missing(path: Path, kind: str) -> ArtifactError:
    return ArtifactError(f"{path}: artifact '{kind}' not found; run the stage that produces it first "
                         "(`dvc repro` runs every stage in order; `irforge stages` lists which makes what)")


def read_artifact_schema(path: Path, kind: str) -> None:
    """Check that ``path`` is a readable Parquet artifact of ``kind`` (its schema only)."""
    if not path.exists():
        raise _missing(path, kind)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ArtifactError(f"{path}: not a readable Parquet file ({e})") from e
    validate(schema.empty_table(), kind, path)


def read_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance record of any artifact (Parquet, folder or plain file); None for raw inputs."""
    path = Path(path)
    if path.is_dir():
        record = path / DIR_PROVENANCE
        return json.loads(record.read_text()) if record.exists() else None
    if path.suffix == ".parquet":
        try:
            meta = pq.read_schema(path).metadata or {}
        except (pa.ArrowInvalid, OSError) as e:
            raise ArtifactError(f"{path}: not a readable Parquet file ({e})") from e
        return json.loads(meta[PROVENANCE_KEY]) if PROVENANCE_KEY in meta else None
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    return json.loads(sidecar.read_text()) if sidecar.exists() else None
