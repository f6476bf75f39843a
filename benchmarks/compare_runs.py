"""Paired tests across runs: the same system (or two systems) of two evaluated projects, query by query.

Within one run, ``evaluate.compare`` tests a system against another; an ablation variant is a second run, so
"did this variant's dense beat the base's dense?" needs the two runs' per-query values side by side. For each
split (dev, test) this prints both means, the difference and the paired randomisation p-value.

    python benchmarks/compare_runs.py BASE VARIANT dense dense-zs "rrf(bm25+dense)"
    python benchmarks/compare_runs.py BASE VARIANT dense --against dense-zs    # VARIANT's dense vs BASE's dense-zs

BASE and VARIANT are project folders (or ablation variant folders) holding artifacts/evaluate/per_query.parquet and
artifacts/judgments/queries.parquet (the split). Splits come from BASE; both runs must have scored the same queries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.contract.artifacts import read_artifact  # noqa: E402
from irforge.corpus import splits_of  # noqa: E402
from irforge.evaluation.measures import significance  # noqa: E402


def per_query(root: Path, measure: str) -> dict[str, dict[str, float]]:
    table = read_artifact(root / "artifacts/evaluate/per_query.parquet", "per_query_metrics").to_pylist()
    out: dict[str, dict[str, float]] = {}
    for row in table:
        if row["measure"] == measure:
            out.setdefault(row["system"], {})[row["query_id"]] = row["value"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path)
    parser.add_argument("variant", type=Path)
    parser.add_argument("systems", nargs="+")
    parser.add_argument("--against", default=None, help="BASE's system to compare each with (default: the same one)")
    parser.add_argument("--measure", default="nDCG@10")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    base, variant = per_query(args.base, args.measure), per_query(args.variant, args.measure)
    splits = splits_of(read_artifact(args.base / "artifacts/judgments/queries.parquet", "queries"))
    print(f"{args.measure}: {args.variant} vs {args.base}")
    print(f"{'system':<34}{'split':>6}{'base':>8}{'variant':>9}{'delta':>9}{'p':>8}{'wins/losses':>13}")
    for system in args.systems:
        reference = args.against or system
        for split in ("dev", "test"):
            qids = [q for q in base[reference] if splits.get(q) == split]
            missing = [q for q in qids if q not in variant[system]]
            if missing:
                sys.exit(f"{args.variant}: {system} has no {args.measure} for query {missing[0]} (other queries?)")
            values = {"base": {q: base[reference][q] for q in qids}, "variant": {q: variant[system][q] for q in qids}}
            test = significance(values, "variant", "base", args.seed)
            mean = {k: sum(v.values()) / len(v) for k, v in values.items()}
            name = system if reference == system else f"{system} vs {reference}"
            print(f"{name:<34}{split:>6}{mean['base']:>8.4f}{mean['variant']:>9.4f}{test['delta']:>+9.4f}"
                  f"{test['p_randomisation']:>8.3g}{test['wins']:>7}/{test['losses']}")


if __name__ == "__main__":
    main()
