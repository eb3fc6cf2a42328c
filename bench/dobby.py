#!/usr/bin/env python3
"""Dobby benchmark: `pt` commands through a running Dobby (A) vs cold (B: PT_DOBBY=0), on a copy
of examples/shapes.

A and B run in turn (A B A B ..., after one unmeasured pair); the ratio A/B is taken pair by
pair and its median printed with each side's median wall time and median CPU of the `pt`
process itself (Dobby's and its workers' CPU is not in A's figure: that is the point of a
daemon, and why wall time is the figure to quote). Commands:

  two_hop          pt query two_hop -p seeds=["fn:src/geometry.rs::total_area"]
  fix              pt run fix --seed src/report.rs --dry-run (PreFlight's stage ra off: the default)
  fix_stage_ra     the same with the policy's stage_ra on (a rust-analyzer overlay before cargo)
  ingest_hydrate   one edited file (a comment line appended, not timed), then pt ingest --hydrate

Before the runs Dobby opens a CPU worker with a warm rust-analyzer for the workspace
(`open_worker {kind: cpu, ra: true, workspace}`); PreFlight's mirror gets its session at the
first fix_stage_ra run (the unmeasured pair). B starts rust-analyzer in every run that needs one.

Ray runs only in a loopback-only network + PID namespace: this re-runs itself under
`unshare -n -p -f --mount-proc` (root).

Usage:
  .venv/bin/python bench/dobby.py [-n 10] [--only fix,fix_stage_ra] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = "fn:src/geometry.rs::total_area"
BENCHES = ("two_hop", "fix", "fix_stage_ra", "ingest_hydrate")


def pt_exe() -> str:
    return str(Path(sys.executable).with_name("pt"))


def log(msg: str) -> None:
    print(f"[bench/dobby] {msg}", file=sys.stderr, flush=True)


def run(args: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s of the process and what it waited for); a failing command stops the bench."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> exit {r.returncode}: {r.stderr.strip()[-1500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_namespace(argv: list[str]) -> int:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise SystemExit("bench/dobby.py needs root and unshare: Ray runs only in a loopback-only network namespace")
    inner = "ip link set lo up && exec " + " ".join([sys.executable, str(Path(__file__).resolve()), *argv])
    env = {**os.environ, "PT_BENCH_NETNS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", inner], env=env).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10, help="measured pairs per command")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
    only = [b for b in opts.only.split(",") if b]
    if unknown := set(only) - set(BENCHES):
        ap.error(f"unknown: {', '.join(sorted(unknown))}")
    if os.environ.get("PT_BENCH_NETNS") != "1":
        return in_namespace(sys.argv[1:])

    from parseltongue.runner.dobby import client

    scratch = Path(tempfile.mkdtemp(prefix="pt-bench-dobby-", dir="/tmp"))
    ws = scratch / "shapes"
    shutil.copytree(REPO / "examples" / "shapes", ws)
    home = scratch / "home"
    home.mkdir()
    base = {**os.environ, "PARSELTONGUE_HOME": str(home), "SOCKET_PATH": str(home / "dobby.sock"),
            "PT_CACHE_DIR": str(scratch / "cache")}
    cold_env, cold_db = {**base, "PT_DOBBY": "0"}, str(scratch / "cold.db")
    pt = pt_exe()
    run([pt, "ingest"], cold_env, ws)
    run([pt, "--db", cold_db, "ingest"], cold_env, ws)
    daemon = subprocess.Popen([pt, "dobby", "serve"], env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                client.call(base["SOCKET_PATH"], "ping", {}, timeout=5)
                break
            except client.DobbyError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError("Dobby did not start")
                time.sleep(0.3)
        client.call(base["SOCKET_PATH"], "open_worker", {"kind": "cpu", "ra": True, "workspace": str(ws)}, timeout=300,
                    on_progress=lambda p: None)
        commands = {
            "two_hop": ["query", "two_hop", "-p", f'seeds=["{SEED}"]'],
            "fix": ["run", "fix", "--seed", "src/report.rs", "--dry-run"],
            "fix_stage_ra": ["run", "fix", "--seed", "src/report.rs", "--dry-run"],
            "ingest_hydrate": ["ingest", "--hydrate"],
        }
        edited = ws / "src" / "geometry.rs"
        for name in only:
            if name == "fix_stage_ra":
                for db in (None, cold_db):
                    run([pt, *(["--db", db] if db else []), "query", "preflight.set_policy", "-p", "key=stage_ra",
                         "-p", "value=true"], cold_env, ws)
            log(f"{name}: {opts.n} pairs")
            pairs = []
            for i in range(opts.n + 1):
                side = []
                for env, db in ((base, None), (cold_env, cold_db)):
                    if name == "ingest_hydrate":
                        with open(edited, "a", encoding="utf-8") as fh:
                            fh.write(f"// edit {i}\n")
                    side.append(run([pt, *(["--db", db] if db else []), *commands[name]], env, ws))
                if i:  # the first pair warms caches on both sides
                    pairs.append(side)
            if name == "fix_stage_ra":
                for db in (None, cold_db):
                    run([pt, *(["--db", db] if db else []), "query", "preflight.set_policy", "-p", "key=stage_ra",
                         "-p", "value=false"], cold_env, ws)
            med = statistics.median
            results[name] = {"pairs": len(pairs), "dobby_wall_s": round(med(a[0] for a, _ in pairs), 3),
                             "cold_wall_s": round(med(b[0] for _, b in pairs), 3),
                             "ratio": round(med(a[0] / b[0] for a, b in pairs), 3),
                             "dobby_client_cpu_s": round(med(a[1] for a, _ in pairs), 3),
                             "cold_cpu_s": round(med(b[1] for _, b in pairs), 3)}
        status = client.call(base["SOCKET_PATH"], "get_status", {}, timeout=30)
        results["ra_sessions"] = [s for w in status["workers"] for s in w.get("ra_sessions", [])]
        client.call(base["SOCKET_PATH"], "shutdown", {"graceful_timeout": 30}, timeout=30)
        daemon.wait(120)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        shutil.rmtree(scratch, ignore_errors=True)
    results["load_avg"] = [round(x, 1) for x in os.getloadavg()]
    if opts.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'command':<16} {'via Dobby':>10} {'cold':>8} {'A/B (pairwise median)':>22} {'client CPU A / B':>18}")
    for name in only:
        r = results[name]
        print(f"{name:<16} {r['dobby_wall_s']:>9.2f}s {r['cold_wall_s']:>7.2f}s {r['ratio']:>22.2f} "
              f"{r['dobby_client_cpu_s']:>8.2f} / {r['cold_cpu_s']:.2f}s")
    for s in results["ra_sessions"]:
        print(f"warm rust-analyzer {s['root']}: started {s['starts']}x, {s['reloaded']} files handed over")
    print(f"load average at the end: {results['load_avg']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
