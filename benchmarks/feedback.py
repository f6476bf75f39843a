"""Pseudo-relevance feedback: tune on the dev split, report on the test split.

Every feedback setting of a small grid is evaluated as its own system in ONE evaluate run (the plain systems
are searched once), on a project whose zero-shot indexes exist (``dvc repro``, or ``irforge run`` of chunk,
judgments and index bm25 / dense-zs / splade-zs). The best setting of each family is chosen on the dev split
only; then those choices, and fusions with them, are evaluated again and shown on dev and test with paired
randomisation tests. Test numbers never feed a choice.

    python benchmarks/feedback.py --root .                                   # Cranfield (the bundled project)
    python benchmarks/feedback.py --root /work/collections/proj-cisi --out /tmp/fb-cisi

Variant folders link the project's indexes and judgments (nothing there is written); results are printed and
written to OUT/feedback.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from irforge.config import parse_overrides  # noqa: E402
from irforge.contract import owned  # noqa: E402
from irforge.engine import load_config, run_stage  # noqa: E402
from irforge.ops.ablation import inside  # noqa: E402
from irforge.runtime import setup_logging  # noqa: E402

log = logging.getLogger("feedback")
ZERO_SHOT = ["bm25", "dense-zs", "splade-zs"]
MAIN = "nDCG@10"


def grid(dense: list[str]) -> dict[str, list[dict]]:
    """Families of settings; each family's dev-best setting goes on to the test split."""
    families = {"bm25-rm3": [{"system": "bm25", "method": "rm3", "docs": d, "terms": t, "query_weight": w}
                             for d, t, w in itertools.product((5, 10), (10, 20), (0.5, 0.7))]}
    for system in dense:
        options = list(itertools.product((3, 5, 10), (0.5, 1.0)))
        families[f"{system}-prf"] = [{"system": system, "docs": d, "beta": b} for d, b in options]
        families[f"{system}-prf-fused"] = [{"system": system, "feedback": f"rrf(bm25+{system})", "docs": d, "beta": b}
                                           for d, b in options]
    return families


def evaluate(root: Path, out: Path, name: str, overrides: dict) -> dict:
    """Run evaluate with ``overrides`` in OUT/name, linking the project's indexes, judgments and caches."""
    folder = out / name
    config = load_config(root, overrides=overrides)
    owned.claim(folder)
    for rel in ("artifacts/judgments", "artifacts/chunk",  # SPLADE feedback reads the passages' vectors
                *(f"artifacts/index/{s}" for s in config.section("evaluate").systems),
                config.runtime.cache_dir):
        link = folder / rel
        if not link.exists() and inside(root, rel):  # an absolute cache or corpus is read where it is
            owned.symlink((root / rel).absolute(), link)
    return run_stage("evaluate", folder, config)["metrics"]


def base_overrides(systems: list[str], feedback: dict, fusions: list, compare: list) -> dict:
    return {"evaluate.systems": systems, "evaluate.feedback": feedback, "evaluate.fusions": fusions,
            "evaluate.compare": compare, "evaluate.measures": [MAIN, "R@100"], "evaluate.depth": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="project whose zero-shot indexes exist")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/feedback")
    parser.add_argument("--dense", nargs="+", default=["dense-zs"],
                        help="faiss or impact (SPLADE) systems to give vector feedback, e.g. dense-zs splade-zs")
    parser.add_argument("-S", "--set", nargs="*", default=[], help="params overrides (e.g. an extra index system)")
    args = parser.parse_args()
    setup_logging("WARNING")
    root = args.root.resolve()
    extra = parse_overrides(args.set)
    systems = [*ZERO_SHOT, *(d for d in args.dense if d not in ZERO_SHOT)]
    families = grid(args.dense)
    settings = {f"{family}-{i}": s for family, options in families.items() for i, s in enumerate(options)}
    first = [["bm25", d] for d in args.dense]
    metrics = evaluate(root, args.out, "grid", {**extra, **base_overrides(systems, settings, first, [])})
    print(f"{'setting':<28}{'dev ' + MAIN:>12}  params")
    chosen: dict[str, dict] = {}
    for family, options in families.items():
        names = [f"{family}-{i}" for i in range(len(options))]
        for n in names:
            print(f"{n:<28}{metrics[n]['dev'][MAIN]:>12.4f}  {settings[n]}")
        best = max(names, key=lambda n: (metrics[n]["dev"][MAIN], -names.index(n)))  # ties: the first listed
        chosen[family] = settings[best]
        print(f"-> {family}: {best} {settings[best]}")
    for system in [*systems, *(f"rrf(bm25+{d})" for d in args.dense)]:
        print(f"{system:<28}{metrics[system]['dev'][MAIN]:>12.4f}")

    # The dev-chosen settings, alone and fused, on both splits.
    reference = "rrf(bm25+dense-zs+splade-zs)"
    fusions = [["bm25", "dense-zs", "splade-zs"], *first]
    compare = [["bm25-rm3", "bm25"]]
    for d in args.dense:
        fusions += [["bm25-rm3", d], ["bm25-rm3", f"{d}-prf"], ["bm25-rm3", f"{d}-prf-fused"],
                    ["bm25-rm3", f"{d}-prf-fused", "splade-zs"]]
        compare += [[f"{d}-prf", d], [f"{d}-prf-fused", d], [f"rrf(bm25-rm3+{d}-prf-fused+splade-zs)", reference],
                    [f"rrf(bm25-rm3+{d}-prf-fused)", reference]]
    if len(args.dense) > 1:
        fusions += [["bm25-rm3", *(f"{d}-prf-fused" for d in args.dense), "splade-zs"]]
        compare += [["rrf(" + "+".join(["bm25-rm3", *(f"{d}-prf-fused" for d in args.dense), "splade-zs"]) + ")",
                     reference]]
    final = evaluate(root, args.out, "chosen", {**extra, **base_overrides(systems, chosen, fusions, compare)})
    print(f"\n{'system':<52}{'dev':>8}{'test':>8}{'test Δ':>9}{'p':>8}  {'vs':<30}{'latency ms':>10}")
    references = dict(map(tuple, compare))
    for system, m in final.items():
        ref = references.get(system, "")
        test = m.get("test", {})
        print(f"{system:<52}{m['dev'][MAIN]:>8.4f}{test.get(MAIN, float('nan')):>8.4f}"
              f"{test.get(f'delta_vs_{ref}', float('nan')):>+9.4f}{test.get(f'p_randomisation_vs_{ref}', float('nan')):>8.3g}"
              f"  {ref:<30}{m['latency_mean_ms']:>10.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "feedback.json").write_text(json.dumps({"root": str(root), "chosen": chosen, "grid": {
        n: metrics[n]["dev"][MAIN] for n in settings}, "final": final}, indent=2))


if __name__ == "__main__":
    main()
