"""Run one stage by name: the single entry point used by the CLI (hence `dvc repro`) and the Prefect flows."""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from irforge.params import Params
from irforge.stage import StageContext

log = logging.getLogger(__name__)

# Stage name -> module. One module per stage; each exposes STAGE and run(ctx, **kwargs).
STAGES: dict[str, str] = {
    "chunk": "stages.chunk",
    "doc2query": "stages.doc2query",
    "synthesize": "stages.synthesize",
    "filter": "stages.filter",
    "mine": "stages.mine",
    "train": "stages.train",
    "index": "stages.index",
    "evaluate": "stages.evaluate",
    "report": "stages.report",
}


def load_stage(name: str) -> ModuleType:
    if name not in STAGES:
        raise KeyError(f"unknown stage '{name}' (stages: {', '.join(STAGES)})")
    return importlib.import_module(STAGES[name])


def run_stage(name: str, root: Path | str = ".", params: Params | None = None, **kwargs: Any) -> dict[str, Any]:
    root = Path(root)
    params = params or Params.load(root / "params.yaml")
    module = load_stage(name)
    ctx = StageContext.for_module(module, root, params)
    label = " ".join([name, *map(str, kwargs.values())])
    log.info("stage %s: start", label)
    started = time.perf_counter()
    summary = module.run(ctx, **kwargs) or {}
    log.info("stage %s: done in %.1fs %s", label, time.perf_counter() - started,
             {k: v for k, v in summary.items() if k != "metrics"})
    return summary
