"""Running stages: the registry of stage modules and the DAG derived from their declarations, the context a
stage runs in (params, inputs, outputs, provenance), the runner, and dvc.yaml generated from the DAG."""

from irforge.engine.context import ModelRecord, StageContext, created_at, library_versions
from irforge.engine.dag import DagError, Node, load_config, nodes, stage_modules, validate
from irforge.engine.runner import run_stage

__all__ = [
    "DagError", "ModelRecord", "Node", "StageContext", "created_at", "library_versions", "load_config", "nodes",
    "run_stage", "stage_modules", "validate",
]
