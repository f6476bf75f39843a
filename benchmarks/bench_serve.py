"""Load test of `irforge serve` on the bundled corpus: throughput and latency per served system, and a hot swap
under load. Loopback only, bounded in time.

Needs the experiment's artifacts (`make repro` first). A temporary project links this project's artifacts, data,
params and vector cache, publishes each system (bm25, dense, splade, and `serve.system`, the fused one) under its
own name, and starts `irforge serve` for all of them on 127.0.0.1 in a separate process. N client threads (one
keep-alive HTTP/1.1 connection each) then send the bundled judged queries for --seconds per system; the client
measures each request's latency.

The swap: while the clients query the fused system, `irforge reindex --full` rebuilds every index of it and serves
the new version. Every request must succeed and name the version that answered it; the service picks the new
version up without a restart.

    python benchmarks/bench_serve.py --clients 4 --seconds 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import conditions
import numpy as np

from irforge.contract import owned

PROJECT = Path(__file__).resolve().parents[1]
SYSTEMS = {"bm25": "bm25", "dense": "dense", "splade": "splade"}  # served name -> evaluated system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def irforge(root: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "irforge", *args, "--root", str(root)], check=True, text=True,
                          capture_output=True, **kwargs)


def load(port: int, name: str, queries: list[str], clients: int, seconds: float,
         until: threading.Event | None = None) -> dict:
    """``clients`` threads sending queries for ``seconds`` (or until ``until`` is set); latencies, failures and the
    versions that answered, in order of arrival."""
    stop_at = time.perf_counter() + seconds
    latencies: list[float] = []
    failures: list[str] = []
    versions: dict[str, int] = {}
    sequence: list[str] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.perf_counter() < stop_at and not (until is not None and until.is_set()):
            path = "/search?" + urllib.parse.urlencode({"q": queries[i % len(queries)], "k": 10, "system": name})
            i += clients
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = json.loads(response.read())
                ok = response.status == 200 and body.get("version")
            except Exception as e:  # a failed request is what we count
                ok, body = False, {"detail": repr(e)}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                    versions[body["version"]] = versions.get(body["version"], 0) + 1
                    sequence.append(body["version"])
                else:
                    failures.append(str(body.get("detail")))
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"requests": len(latencies), "failed": len(failures), "failures": failures[:3], "versions": versions,
            "switches": sum(a != b for a, b in zip(sequence, sequence[1:])),
            "qps": len(latencies) / wall, "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=20, help="load per system")
    ap.add_argument("--swap-seconds", type=float, default=240, help="most time the load runs while a re-index swaps")
    args = ap.parse_args()
    for needed in ("artifacts/evaluate/metrics.json", "artifacts/index/bm25", "artifacts/index/dense", "artifacts/index/splade"):
        if not (PROJECT / needed).exists():
            sys.exit(f"{PROJECT / needed} is missing: run `make repro` first")
    conditions.header(f"serving: {args.clients} clients, server and clients on this machine")

    queries = [json.loads(line)["text"] for line in (PROJECT / "data/cranfield/queries.jsonl").read_text().splitlines()]
    root = owned.make_temp_dir(prefix="irforge-bench-serve-")
    server = None
    try:
        for name in ("artifacts", "data", ".irforge-cache"):
            owned.symlink(PROJECT / name, root / name)
        shutil.copy(PROJECT / "params.yaml", root / "params.yaml")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "IRFORGE_PROGRESS": "0", "PYTHONPATH": str(PROJECT)}
        for name, system in SYSTEMS.items():
            irforge(root, "publish", system, "--name", name, env=env)
        published = irforge(root, "publish", env=env).stdout.strip().splitlines()[0]
        print(f"published bm25, dense and splade as themselves; {published}")

        port = free_port()
        log = open(root / "serve.log", "w")  # noqa: SIM115 - the server's log, open while it runs
        server = subprocess.Popen([sys.executable, "-m", "irforge", "serve", "--root", str(root), "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            sys.exit(f"the service did not start; see {root / 'serve.log'}")

        load(port, "main", queries, 1, 3)  # warm-up: every model loaded, JIT paths taken
        print(f"\n{'system':<34}{'clients':>8}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'failed':>8}")
        for name in [*SYSTEMS, "main"]:
            label = name if name != "main" else "main = " + published.split()[1]
            for clients in sorted({1, args.clients}):
                r = load(port, name, queries, clients, args.seconds)
                print(f"{label:<34}{clients:>8}{r['qps']:>8.1f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}{r['failed']:>8}")

        # Hot swap: a full re-index of the served fused system while the clients keep querying it.
        print(f"\nhot swap: `irforge reindex --full` of main while {args.clients} clients query it")
        result: dict = {}

        def swap() -> None:
            started = time.perf_counter()
            out = irforge(root, "reindex", "--full", env=env)
            text = out.stdout
            result.update(json.loads(text[text.index("{"):]), took=time.perf_counter() - started)

        done = threading.Event()

        def swap_then_stop() -> None:
            try:
                swap()
            finally:
                time.sleep(3 * 2.0 + 5)  # serve.watch_seconds is 2: the watcher picks the new version up meanwhile
                done.set()

        reindexer = threading.Thread(target=swap_then_stop)
        reindexer.start()
        stats = load(port, "main", queries, args.clients, args.swap_seconds, until=done)  # one continuous load
        reindexer.join()
        print(f"re-index: {result.get('mode')} build of {result.get('system')} in {result.get('took', 0):.0f} s, "
              f"served {result.get('served')} (metrics {result.get('metrics')})")
        print(f"load across it: {stats['requests']} requests, {stats['failed']} failed, answered by "
              f"{stats['versions']}, version changes seen in the response stream: {stats['switches']}")
        if stats["failures"]:
            print(f"failures: {stats['failures']}")
        ok = stats["failed"] == 0 and stats["switches"] >= 1 and result.get("served") in stats["versions"]
        print(f"hot swap {'OK' if ok else 'FAILED'}: 0 failed requests, every response names its version, and the new "
              "version answered without a restart")
        conditions.footer()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        owned.remove(root)


if __name__ == "__main__":
    main()
