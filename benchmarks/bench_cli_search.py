"""Wall time of one `irforge search "query"` from the command line: in its own process (the system opened first),
through a running `irforge serve` of the same project, and, with --baseline, as an older checkout's code did it.

Needs a project with served systems (`make repro` then `irforge publish`; or any folder with serve/<name>/served).
Each side is the whole command a user types, timed from the outside (Python's start, imports, params, search,
printing); the sides alternate over rounds.

    python benchmarks/bench_cli_search.py --root . --names main bm25
    python benchmarks/bench_cli_search.py --root /tmp/p --baseline /tmp/head   # /tmp/head: `git archive HEAD` unpacked

`local` is `irforge search --no-service`; `service` asks `irforge serve` (started here, on a free loopback port,
for the names measured, and stopped at the end); `baseline` runs `irforge search` with the --baseline checkout
first on PYTHONPATH (before the service path existed: it always opened the system itself). The service is
another process: the CPU it spends answering shows in the "other processes" line of the conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import conditions

QUERY = "flow over a flat plate boundary layer transition"
IRFORGE = str(Path(sys.executable).with_name("irforge"))  # the venv's console script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search(root: Path, params: str, name: str, query: str, *extra: str, pythonpath: str | None = None) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    # The console script, as a user runs it (and `python -m` would put the current folder before PYTHONPATH).
    done = subprocess.run([IRFORGE, "search", query, "-k", "10", "--name", name, "--root", str(root), "--params",
                           params, *extra], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"irforge search failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stderr


def start_service(root: Path, params: str, names: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [IRFORGE, "serve", "--port", str(port), "--root", str(root), "--params", params]
    for name in names:
        args += ["--name", name]
    server = subprocess.Popen(args, env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if json.load(response)["status"] == "ok":
                    time.sleep(5)  # the JVM's compiler threads settle after the start
                    return server, url
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"irforge serve did not start (exit {server.poll()})")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=conditions.ROOT, help="the project (with serve/<name>/served)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--names", nargs="+", default=None, help="served systems (default: every one under serve/)")
    parser.add_argument("--query", default=QUERY)
    parser.add_argument("--baseline", default=None, help="a checkout of older code to time too (PYTHONPATH)")
    conditions.add_arguments(parser, rounds=3)
    args = parser.parse_args()
    root = args.root.resolve()
    names = args.names or sorted(p.name for p in (root / "serve").glob("*") if (p / "served").is_symlink())
    if not names:
        raise SystemExit(f"nothing is served under {root / 'serve'}: run `irforge publish` first")

    server, url = start_service(root, args.params, names)  # before the header: its start is not measured
    conditions.header(f"irforge search from the command line: {root}, served {', '.join(names)}, query {args.query!r}")
    with conditions.competing_job(args.load, root / ".irforge-cache"):
        try:
            for name in names:
                sides = {"local (--no-service)": lambda n=name: search(root, args.params, n, args.query, "--no-service")}
                if args.baseline:
                    sides["baseline (older code)"] = lambda n=name: search(root, args.params, n, args.query,
                                                                           pythonpath=args.baseline)
                sides["service"] = lambda n=name: search(root, args.params, n, args.query)
                times, said = conditions.alternate(sides, args.rounds)
                if f"answered by irforge serve at {url}" not in said["service"]:
                    raise SystemExit(f"the service did not answer: {said['service'][-500:]}")
                print(f"{name}:")
                conditions.summary(times)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    conditions.footer()


if __name__ == "__main__":
    main()
