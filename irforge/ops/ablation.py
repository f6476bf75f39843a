"""Ablation runs: re-run the part of the DAG a params override touches, once per variant.

Each variant is a name and params overrides (``key=value``, as ``irforge run -S`` takes them). The nodes whose
stage reads an overridden section, and every node downstream of them, run again in the variant's own folder;
the outputs of the untouched nodes (and the raw inputs and row caches) are linked from the base project,
which must have run (``dvc repro``). So a ``train.*`` variant retrains and re-indexes the trained systems and
re-evaluates, while chunks, triples and the zero-shot indexes are shared. The DAG is the one dvc.yaml is
generated from (:func:`irforge.engine.nodes`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from irforge.config import Config
from irforge.engine import nodes, run_stage, validate
from irforge.engine.dag import downstream, reading, resolve_template

log = logging.getLogger(__name__)


def dirty_nodes(config: Config, overrides: dict[str, Any]) -> list:
    """Nodes reading an overridden params section, and every node downstream of one."""
    return downstream(config, reading(config, {key.split(".")[0] for key in overrides}))


def run_variant(name: str, overrides: dict[str, Any], base: Path, config: Config, out: Path) -> dict[str, Any]:
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    variant_config = validate(config.params.with_overrides(overrides))
    dirty = dirty_nodes(variant_config, overrides)
    keys = {n.key for n in dirty}
    rerun = {o.path for n in dirty for o in n.outputs}
    # Untouched nodes' outputs, what the re-run nodes read but do not make, the raw inputs and the row caches
    # (keyed by content: variants reuse the base's and add to it) all come from the base project.
    shared = [o.path for n in nodes(variant_config) if n.key not in keys for o in n.outputs]
    shared += [i.path for n in dirty for i in n.inputs if i.path not in rerun]
    shared += [resolve_template(t, variant_config) for n in nodes(variant_config) for t in n.raw]
    shared.append(variant_config.runtime.cache_dir)
    for rel in dict.fromkeys(shared):
        link, target = root / rel, base / rel
        if target.exists() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target.absolute(), link)
    started = time.perf_counter()
    stage_seconds: dict[str, float] = {}
    for n in dirty:
        began = time.perf_counter()
        run_stage(n.stage.name, root, variant_config, n.variant)
        stage_seconds[n.key] = round(time.perf_counter() - began, 1)
    metrics = json.loads((root / "artifacts/evaluate/metrics.json").read_text())
    examples = None
    for path in sorted((root / "artifacts/train").glob("metrics-*.json")):
        examples = json.loads(path.read_text())["train"]["examples"]
    return {"name": name, "overrides": overrides, "steps": sorted(keys), "seconds": round(time.perf_counter() - started, 1),
            "stage_seconds": stage_seconds, "examples": examples, "metrics": metrics}
