"""Run one stage: the single entry point behind `irforge run` (hence `dvc repro`), the Prefect flows and the
ablation driver."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from irforge.config import Config, Params
from irforge.engine.context import StageContext
from irforge.engine.dag import load_config, node, validate

log = logging.getLogger(__name__)


def run_stage(name: str, root: Path | str = ".", config: Config | Params | None = None, variant: str | None = None,
              ) -> dict[str, Any]:
    """Run stage ``name`` (for ``variant``, when it has variants) in the project at ``root``; ``config`` is the
    validated params (raw :class:`Params` are validated first; None: ``root/params.yaml``)."""
    root = Path(root)
    if config is None:
        config = load_config(root)
    elif isinstance(config, Params):
        config = validate(config)
    target = node(config, name, variant)
    ctx = StageContext(target, root, config)
    log.info("stage %s: start", target.key)
    started = time.perf_counter()
    summary = target.module.run(ctx) or {}
    log.info("stage %s: done in %.1fs %s", target.key, time.perf_counter() - started,
             {k: v for k, v in summary.items() if k != "metrics"})
    return summary
