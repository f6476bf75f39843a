"""The artifact contract between stages: one schema per artifact kind, typed Parquet I/O with provenance
inside the file and atomic writes, and the declaration a stage makes of its inputs and outputs."""

from irforge.contract.artifacts import (
    ArtifactError,
    publish_dir,
    read_artifact,
    read_provenance,
    sha256_file,
    sha256_path,
    stable_hash,
    write_artifact,
    write_text_atomic,
)
from irforge.contract.schemas import SCHEMAS
from irforge.contract.stage import ARTIFACTS, BoundOutput, Metrics, Output, Stage

__all__ = [
    "ARTIFACTS", "SCHEMAS", "ArtifactError", "BoundOutput", "Metrics", "Output", "Stage", "publish_dir",
    "read_artifact", "read_provenance", "sha256_file", "sha256_path", "stable_hash", "write_artifact",
    "write_text_atomic",
]
