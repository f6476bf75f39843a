"""Ablation runs: re-run the part of the DAG a params override touches, once per variant.

Each variant is a name and params overrides (``key=value``, as ``irforge run -S`` takes them). The nodes whose
params the overrides change (a per-variant table such as ``index.systems`` counts per entry: adding a system
re-runs that system's index only), and every node downstream of them, run again in the variant's own folder;
the outputs of the untouched nodes (and the raw inputs and row caches) are linked from the base project,
which must have run (``dvc repro``). So a ``train.*`` variant retrains and re-indexes the trained systems and
re-evaluates, while chunks, triples and the zero-shot indexes are shared. The DAG is the one dvc.yaml is
generated from (:func:`irforge.engine.nodes`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from irforge.config import Config
from irforge.contract import owned
from irforge.engine import nodes, run_stage, validate
from irforge.engine.dag import downstream, resolve_template

log = logging.getLogger(__name__)


def node_params(config: Config, node) -> dict[str, Any]:
    """The params one node depends on: its stage's sections, where a per-variant table (``index.systems``) is
    narrowed to the node's own entry, so adding a system re-runs that system's index, not every index."""
    out: dict[str, Any] = {}
    for section in node.stage.params:
        value = config.as_params(section)
        if node.variant is not None and isinstance(value, dict):
            value = {k: v[node.variant] if isinstance(v, dict) and node.variant in v else v for k, v in value.items()}
        out[section] = value
    return out


def dirty_nodes(base: Config, overrides: dict[str, Any]) -> list:
    """The nodes whose params the overrides change (or that the overrides add), and every node downstream."""
    variant = validate(base.params.with_overrides(overrides))
    before = {n.key: n for n in nodes(base)}
    changed = {n.key for n in nodes(variant)
               if n.key not in before or node_params(variant, n) != node_params(base, before[n.key])}
    return downstream(variant, changed)


VARIANT_MARK = ".irforge-variant"  # says a folder is a variant project irforge made (and may write into)


def inside(base: Path, rel: str | Path) -> bool:
    """Whether ``rel`` (as the params give it) names a path inside the project at ``base``."""
    return not Path(rel).is_absolute() and (Path(base) / rel).resolve().is_relative_to(Path(base).resolve())


def outside_inputs(variant: Config, base: Path) -> dict[str, str]:
    """Params overrides that make the raw inputs and the row cache that sit outside the base project (given
    relative to it: ``../corpus``) absolute, so the variant, one folder down, reads the same files."""
    keys = {m.group(1) for n in nodes(variant) for t in n.raw if (m := re.fullmatch(r"\$\{([\w.-]+)\}", t))}
    keys |= {"corpus.queries", "corpus.qrels", "runtime.cache_dir"}  # judgments inside the corpus are not raw inputs
    fixes = {}
    for key in sorted(keys):
        value = resolve_template("${" + key + "}", variant)
        if value not in ("", "None") and not Path(value).is_absolute() and not inside(base, value):
            fixes[key] = str((Path(base) / value).resolve())
    return fixes


def variant_folder(out: Path, name: str) -> Path:
    """``out/name``, made and marked as irforge's; an existing folder that irforge did not make is refused
    (``--out /data`` with a preset named after a folder of the user's must not write into it)."""
    root = Path(out) / name
    if root.exists() and any(root.iterdir()) and not (root / VARIANT_MARK).exists() \
            and not (root / "artifacts").is_dir():  # variant folders made before the mark had artifacts/
        raise owned.NotOwnedError(f"{root}: exists and is not a variant folder irforge made (no {VARIANT_MARK}); "
                                  "choose another --out or name")
    root.mkdir(parents=True, exist_ok=True)
    (root / VARIANT_MARK).touch()
    owned.claim(root)
    return root


def run_variant(name: str, overrides: dict[str, Any], base: Path, config: Config, out: Path) -> dict[str, Any]:
    root = variant_folder(out, name)
    dirty = dirty_nodes(config, overrides)
    variant_params = config.params.with_overrides(overrides)
    variant_config = validate(variant_params)
    if fixes := outside_inputs(variant_config, base):
        variant_config = validate(variant_params.with_overrides(fixes))
    owned.claim_project(root, variant_config.runtime.cache_dir)
    keys = {n.key for n in dirty}
    rerun = {o.path for n in dirty for o in n.outputs}
    # Untouched nodes' outputs, what the re-run nodes read but do not make, the raw inputs and the row caches
    # (keyed by content: variants reuse the base's and add to it) all come from the base project.
    shared = [o.path for n in nodes(variant_config) if n.key not in keys for o in n.outputs]
    shared += [i.path for n in dirty for i in n.inputs if i.path not in rerun]
    shared += [resolve_template(t, variant_config) for n in nodes(variant_config) for t in n.raw]
    shared.append(variant_config.runtime.cache_dir)
    for rel in dict.fromkeys(shared):
        if not inside(base, rel):
            continue  # the user's own file or folder (an absolute corpus, cache or judgments): read where it is
        link, target = root / rel, base / rel
        if not target.exists() or (link.is_symlink() and os.readlink(link) == str(target.absolute())):
            continue
        owned.symlink(target.absolute(), link)  # over what an earlier run of this variant left there
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
