"""Publishing: an evaluated system of the experiment becomes a served version (``irforge publish``).

Nothing is recomputed: the indexes, chunks and trained models the system's plan needs are hard-linked from
``artifacts/`` into a new version folder (artifacts are replaced by rename, never rewritten, so the version
stays as published whatever `dvc repro` does next), with ``system.json`` (the plan) and a manifest recording the
experiment's provenance: each index's params hash and inputs, the models' sha256, the system's metrics in the
experiment, and its score as a re-index scores a version (what the re-index gate compares with). The switch is
the re-index's: one atomic pointer swap for all of the system's indexes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from irforge.config import Config
from irforge.contract import artifacts, owned
from irforge.ops import serving
from irforge.ops.refresh import link_tree
from irforge.ops.reindex import build_key, evaluate, model_folders, models_of
from irforge.ops.search import CHUNKS, INDEXES, SYSTEM_SPEC, system_spec, verdict_choice
from irforge.retrieval import read_system

log = logging.getLogger(__name__)


def publish(root: str | Path, config: Config, system: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Serve the experiment's ``system`` (default ``serve.system``) as ``serve/<name>`` (default ``serve.name``)."""
    from irforge.engine import created_at

    root = Path(root)
    serve = config.section("serve")
    name = name or serve.name
    target, why = system or serve.system, None
    if target == "best":  # the verdict's choice, and why (the default kept, or a system better with confidence)
        target, why = verdict_choice(root)
    spec = system_spec(config, target, root)
    spec["name"] = name
    needed = [root / CHUNKS, *(root / INDEXES / s for s in spec["plan"]["systems"]), *(root / m for m in model_folders(spec))]
    missing = [str(p.relative_to(root)) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"cannot publish {spec['plan']['target']}: {', '.join(missing)} missing; run "
                                "`dvc repro` (or `make repro`) first")
    for s in spec["plan"]["systems"]:
        read_system(root / INDEXES / s)  # a folder that is not a finished index fails here, naming it
    metrics_path = root / "artifacts" / "evaluate" / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
    with serving.exclusive(root, name):
        previous = serving.served_version(root, name)
        version, folder = serving.begin_version(root, name)
        try:
            for path in needed + [root / "artifacts/chunk/quarantine.parquet"]:
                if path.exists():
                    link_tree(path, folder / path.relative_to(root))
            spec["models"] = models_of(folder, spec)
            (folder / SYSTEM_SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            # Scored as a re-index scores its versions (reindex.measures at reindex.eval_depth), so the first
            # refresh's gate compares like with like; the experiment's own numbers are kept beside.
            scored = evaluate(root, config, folder)
            manifest = {
                "version": version, "name": name, "system": spec["plan"]["target"], "mode": "publish",
                "reason": "published from the experiment", "why": why, "changes": {}, "served_before": previous,
                "build_key": build_key(config, spec), "incremental_since_full": 0, "created_at": created_at(),
                "metrics": scored, "experiment_metrics": _headline(metrics.get(spec["plan"]["target"])), "held": None,
                "chunks": artifacts.read_artifact(root / CHUNKS, "chunks", ["chunk_id"]).num_rows,
                "experiment": {"root": str(root.resolve()), "indexes": _provenance(root, spec)},
            }
            (folder / serving.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            serving.commit_version(root, name, version, folder)
        finally:
            owned.remove(folder)
        serving.switch(root, name, version)
        pruned = serving.prune(root, name, config.section("reindex").keep)
    log.info("serving %s as %s %s", spec["plan"]["target"], name, version)
    return {**manifest, "pruned": pruned}


def _headline(values: dict[str, Any] | None) -> dict[str, Any] | None:
    """The system's metrics (all judged queries, and the dev/test splits) without the significance tests."""
    if not values:
        return None
    keep = lambda d: {k: v for k, v in d.items() if not isinstance(v, dict) and "_vs_" not in k}  # noqa: E731
    return keep(values) | {split: keep(values[split]) for split in ("dev", "test") if isinstance(values.get(split), dict)}


def _provenance(root: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Each index's provenance summary: params hash, the code that built it, its inputs' sha256."""
    out = {}
    for s in spec["plan"]["systems"]:
        path = root / INDEXES / s / artifacts.DIR_PROVENANCE
        record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        out[s] = {k: record.get(k) for k in ("params_hash", "code_sha256", "created_at")}
        out[s]["inputs"] = {i["path"]: i.get("sha256") for i in record.get("inputs", [])}
    return out
