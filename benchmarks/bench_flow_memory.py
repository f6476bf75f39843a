"""Peak memory of the whole DAG: `dvc repro` (a process per stage) against `irforge flow` (Prefect), side by side.

Each side runs the default params on the first N documents of the bundled Cranfield corpus without judgments (as a
user's folder of documents), in its own copy of the project with an empty row cache, so both load every model.
The peak is the largest resident set of any one process of the run (`/usr/bin/time -v`), which is what decides
whether the run fits the machine. `--flow-settings` adds flow runs with other runtime settings, e.g.
`runtime.flow_processes=false` (every stage in the flow's own process).

    python benchmarks/bench_flow_memory.py --docs 200 --flow-settings runtime.flow_processes=false \
        runtime.flow_processes=false,runtime.flow_parallel=4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import conditions

from irforge.contract import owned

REPO = Path(__file__).resolve().parents[1]
SKIP = {".venv", "artifacts", ".irforge-cache", "runs", "serve", ".git", "benchmarks/out"}


def copy_project(target: Path, docs: int) -> None:
    """The project's files (not its runs), with the corpus cut to ``docs`` documents and no judgments."""
    with tempfile.TemporaryFile() as buffer:
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(REPO, arcname=".", filter=lambda t: None if t.name.removeprefix("./") in SKIP else t)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            tar.extractall(target, filter="data")
    lines = (REPO / "data/cranfield/corpus.jsonl").read_text(encoding="utf-8").splitlines()[:docs]
    (target / "data/sample").mkdir(parents=True)
    (target / "data/sample/corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    params = (target / "params.yaml").read_text(encoding="utf-8")
    params = params.replace("  path: data/cranfield", "  path: data/sample", 1)
    params = re.sub(r"\n  queries: [^\n#]*", "\n  queries: null ", params, count=1)
    params = re.sub(r"\n  qrels: [^\n#]*", "\n  qrels: null ", params, count=1)
    (target / "params.yaml").write_text(params, encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)  # dvc needs a repository


def timed(command: list[str], cwd: Path) -> dict[str, float]:
    """Wall seconds and the largest resident set of any process of ``command`` (GNU time)."""
    report = cwd / "time.txt"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "IRFORGE_PROGRESS": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(["/usr/bin/time", "-v", "-o", str(report), *command], cwd=cwd, capture_output=True, text=True,
                          env=env)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed in {cwd}:\n{done.stderr[-3000:]}")
    text = report.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", text)
    hours, minutes, seconds = int(wall.group(1) or 0), int(wall.group(2)), float(wall.group(3))
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"wall_s": round(hours * 3600 + minutes * 60 + seconds, 1), "peak_gib": round(peak_kib / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200, help="documents of the bundled corpus to run on")
    parser.add_argument("--flow-settings", nargs="*", default=[],
                        help="extra flow runs, each with these settings (key=value, several joined by commas)")
    args = parser.parse_args()
    if not shutil.which("/usr/bin/time"):
        sys.exit("needs GNU time (/usr/bin/time): apt-get install time")
    print(f"conditions: {conditions.conditions()}; {args.docs} documents, default params, no judgments, cold row cache")
    runs = {"dvc repro": (["sh", "-c", "irforge dag --write >/dev/null && dvc repro -q"], None),
            "irforge flow": (["irforge", "flow"], None),
            **{f"irforge flow -S {s}": (["irforge", "flow", *(a for kv in s.split(",") for a in ("-S", kv))], s)
               for s in args.flow_settings}}
    rows = {}
    with owned.temp_dir(prefix="irforge-bench-flow-memory-") as work:
        for i, (name, (command, _)) in enumerate(runs.items()):
            project = work / f"p{i}"
            copy_project(project, args.docs)
            rows[name] = timed(command, project)
            print(f"{name:<48} peak {rows[name]['peak_gib']:.2f} GiB   wall {rows[name]['wall_s']:.0f} s", flush=True)
    base = rows["dvc repro"]["peak_gib"]
    for name, row in rows.items():
        print(f"{name:<48} peak / dvc repro's: {row['peak_gib'] / base:.2f}")
    print(f"after: {conditions.conditions()}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
