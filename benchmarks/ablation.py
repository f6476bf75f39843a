"""Ablation driver: re-run the part of the DAG a params override touches, once per variant, and tabulate.

Each variant is a name and params overrides (``key=value``, as ``irforge run -S`` takes them). The steps
whose params sections an override touches, and every step after them, run again in the variant's own folder
(``benchmarks/out/ablation/<name>``); the outputs of the untouched steps are linked from the base project
(which must have run: ``dvc repro``). So a ``train.*`` variant retrains and re-indexes the trained systems and
re-evaluates, while chunks, triples and the zero-shot indexes are shared. Results go to
``benchmarks/results/ablation.json`` (kept in git; the report stage shows it) and a table on stdout.

    python benchmarks/ablation.py                       # the default variants below
    python benchmarks/ablation.py --variant neg0 train.negatives=0 --variant ep2 train.dense.epochs=2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge import layout  # noqa: E402
from irforge.artifacts import write_text_atomic  # noqa: E402
from irforge.params import Params  # noqa: E402
from irforge.progress import setup_logging  # noqa: E402
from irforge.runner import load_stage, run_stage  # noqa: E402
from stages.report import ablation_rows  # noqa: E402
from pipelines.experiment import STEPS  # noqa: E402

log = logging.getLogger("ablation")

DEFAULT_VARIANTS: dict[str, dict[str, object]] = {
    "base": {},
    "no-hard-negatives": {"train.negatives": 0},
    "3-hard-negatives": {"train.negatives": 3},
    "1-query-per-chunk": {"train.queries_per_chunk": 1},
    "2-epochs": {"train.dense.epochs": 2, "train.splade.epochs": 2},
}


def dirty_steps(overrides: dict[str, object]) -> list:
    """Steps reading an overridden params section, and every step downstream of one."""
    sections = {key.split(".")[0] for key in overrides}
    dirty: set[str] = set()
    for step in STEPS:
        reads = set(load_stage(step.stage).STAGE.params)
        if reads & sections or any(dep in dirty for dep in step.after):
            dirty.add(step.key)
    return [s for s in STEPS if s.key in dirty]


def paths(dvc_yaml: Path, kinds: tuple[str, ...] = ("outs", "metrics", "plots")) -> dict[str, list[str]]:
    """Per dvc.yaml stage, the paths it lists under ``kinds`` (templated ones such as ${corpus.path} left out)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: [p for kind in kinds for o in spec.get(kind, []) if "${" not in (p := next(iter(o)) if isinstance(o, dict) else o)]
            for name, spec in stages.items()}


def run_variant(name: str, overrides: dict[str, object], base: Path, params: Params, out: Path) -> dict:
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    steps = dirty_steps(overrides)
    keys = {s.key for s in steps}
    outs, deps = paths(base / "dvc.yaml"), paths(base / "dvc.yaml", ("deps",))
    rerun = {p for stage in keys for p in outs[stage]}
    # Untouched stages' outputs, and whatever the re-run stages read that they do not make (the triples when
    # no mine stage is in the DAG, the corpus and judgments under data/), come from the base project.
    shared = [p for stage, ps in outs.items() if stage not in keys for p in ps]
    shared += [p for stage in keys for p in deps[stage] if p not in rerun and not p.endswith(".py")] + ["data"]
    # The row caches (generated queries, vectors) are keyed by content: variants reuse the base's and add to it.
    shared.append(str(layout.CACHE))
    for rel in dict.fromkeys(shared):
        link, target = root / rel, base / rel
        if target.exists() and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target.absolute(), link)
    variant_params = params.with_overrides(overrides)
    started = time.perf_counter()
    for step in steps:
        run_stage(step.stage, root, variant_params, **({"system": step.system} if step.system else {}))
    metrics = json.loads((root / layout.METRICS).read_text())
    trained = root / layout.TRAIN_METRICS
    examples = json.loads(trained.read_text())["train"]["examples"] if trained.exists() else None
    return {"name": name, "overrides": overrides, "steps": sorted(keys), "seconds": round(time.perf_counter() - started, 1),
            "examples": examples, "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="base project (already run)")
    parser.add_argument("--params", type=Path, default=None, help="params file (default ROOT/params.yaml)")
    parser.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                        help="a variant: its name then its overrides (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out", help="variant folders go to OUT/ablation")
    parser.add_argument("--table", type=Path, default=ROOT / "benchmarks/results/ablation.json",
                        help="results (kept in git; the report stage shows them: params report.ablation)")
    parser.add_argument("--measure", default="nDCG@10")
    parser.add_argument("--fresh", action="store_true", help="drop the rows of earlier invocations")
    args = parser.parse_args()
    setup_logging("INFO")
    variants = ({v[0]: {k: yaml.safe_load(x) for k, _, x in (item.partition("=") for item in v[1:])}
                 for v in args.variant} if args.variant else DEFAULT_VARIANTS)
    params = Params.load(args.params or args.root / "params.yaml")
    # Variants accumulate across invocations (one re-run replaces its own row), so a long ablation can go in parts.
    table = args.table
    rows = [] if args.fresh or not table.exists() else ablation_rows(table)
    for name, overrides in variants.items():
        log.info("variant %s: %s", name, overrides or "(base params)")
        row = run_variant(name, overrides, args.root, params, args.out / "ablation")
        rows = [r for r in rows if r["name"] != name] + [row]
        write_text_atomic(table, json.dumps({"measure": args.measure, "rows": rows}, indent=2))  # kept in git
    systems = sorted({s for r in rows for s in r["metrics"]})
    print("variant".ljust(22) + "".join(s[:22].rjust(24) for s in systems))
    for r in rows:
        print(r["name"].ljust(22) + "".join(f"{r['metrics'].get(s, {}).get(args.measure, float('nan')):24.4f}"
                                            for s in systems))


if __name__ == "__main__":
    main()
