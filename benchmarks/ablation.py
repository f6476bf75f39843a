"""Ablation driver: re-run the part of the DAG a params override touches, once per variant, and tabulate.

The variant runner is :mod:`irforge.ops.ablation` (see it for what is re-run and what is shared). Results go to
``benchmarks/results/ablation.json`` (kept in git; the report stage shows it) and a table on stdout.

    python benchmarks/ablation.py                       # the default variants below
    python benchmarks/ablation.py --variant neg0 train.negatives=0 --variant ep2 train.dense.epochs=2
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.config import parse_overrides  # noqa: E402
from irforge.contract import owned  # noqa: E402
from irforge.engine import load_config  # noqa: E402
from irforge.evaluation import ablation_corpus, ablation_rows, corpus_identity, same_corpus, write_ablation  # noqa: E402
from irforge.ops.ablation import run_variant  # noqa: E402
from irforge.runtime import setup_logging  # noqa: E402

log = logging.getLogger("ablation")

DEFAULT_VARIANTS: dict[str, dict[str, object]] = {
    "base": {},
    "no-hard-negatives": {"train.negatives": 0},
    "3-hard-negatives": {"train.negatives": 3},
    "1-query-per-chunk": {"train.queries_per_chunk": 1},
    "2-epochs": {"train.dense.epochs": 2, "train.splade.epochs": 2},
}


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
    variants = {v[0]: parse_overrides(v[1:]) for v in args.variant} if args.variant else DEFAULT_VARIANTS
    config = load_config(args.root, args.params or "params.yaml")
    # Variants accumulate across invocations (one re-run replaces its own row), so a long ablation can go in parts.
    rows = [] if args.fresh or not args.table.exists() else ablation_rows(args.table)
    corpus = corpus_identity(args.root / "artifacts/chunk/chunks.parquet")
    if rows and not same_corpus(ablation_corpus(args.table), corpus):
        sys.exit(f"{args.table} holds runs on another corpus ({ablation_corpus(args.table)}); pass --fresh to start "
                 f"it over for {corpus and corpus['path']}, or --table another file")
    for name, overrides in variants.items():
        log.info("variant %s: %s", name, overrides or "(base params)")
        row = run_variant(name, overrides, args.root, config, args.out / "ablation")
        rows = [r for r in rows if r["name"] != name] + [row]
        owned.claim(args.table, itself=True)
        write_ablation(args.table, rows, args.measure, {"corpus": corpus})  # kept in git
    systems = sorted({s for r in rows for s in r["metrics"]})
    print("variant".ljust(22) + "".join(s[:22].rjust(24) for s in systems))
    for r in rows:
        print(r["name"].ljust(22) + "".join(f"{r['metrics'].get(s, {}).get(args.measure, float('nan')):24.4f}"
                                            for s in systems))


if __name__ == "__main__":
    main()
