"""PreFlight cost against a plain warm `cargo check`, on a real Debian-packaged crate.

    .venv/bin/python bench/preflight.py                 # text report
    .venv/bin/python bench/preflight.py --json          # one JSON object on stdout
    .venv/bin/python bench/preflight.py --crate regex-syntax-0.6.27 --samples 7

What it does, in one run (DESIGN.md §5 target: a PreFlight check costs at most 1.2x a warm
`cargo check` of the same crate):
1. Copies the crate from /usr/share/cargo/registry/ to a scratch workspace with a
   `.cargo/config.toml` pointing crates-io at that directory, offline.
2. Plain cargo, in the scratch tree itself with its own target dir: a cold `cargo check`, a warm
   no-op one, and a warm one after a one-file edit (the same edits PreFlight checks, alternating
   between two variants so every check recompiles the crate).
3. `pt ingest` of the tree (not part of PreFlight: the graph exists when fixes are proposed).
4. PreFlight of a node edit through the Python API (`build_from_nodes` + `run_preflight`), first
   cold (no mirror, no target dir, no baseline), then warm N times, interleaved with the plain
   warm checks so that machine load hits both alike. Per run: total, mirror sync, cargo stage.
5. Mirror sync after a one-file change in the user's tree, and with no change.
6. One `pt preflight` through the CLI (includes Python start-up), for reference.

Wall times on a shared machine are upper bounds; the load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REGISTRY = Path("/usr/share/cargo/registry")
REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cargo_check(ws: Path, target: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(["cargo", "check", "--offline", "--message-format=json"], cwd=ws, capture_output=True,
                         text=True, env={**os.environ, "CARGO_TARGET_DIR": str(target), "CARGO_TERM_COLOR": "never"})
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"cargo check failed in {ws}:\n{out.stderr[-2000:]}")
    return elapsed


def setup(crate: str, root: Path) -> Path:
    src = REGISTRY / crate
    if not (src / "Cargo.toml").is_file():
        raise SystemExit(f"{src} not found: install the Debian package (e.g. librust-regex-syntax-dev)")
    ws = root / "ws"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns(".cargo-checksum.json", ".cargo_vcs_info.json"))
    (ws / ".cargo").mkdir(exist_ok=True)
    (ws / ".cargo" / "config.toml").write_text(
        f'[source.crates-io]\nreplace-with = "vendored"\n\n[source.vendored]\ndirectory = "{REGISTRY}"\n\n'
        f'[net]\noffline = true\n')
    return ws


def pick_fn(pt, ws: Path, file: str) -> dict:
    """A mid-sized fn with a block body: the edit inserts a statement at its start."""
    rows = pt.query("retrieval.list_nodes_by_file", file=file)
    fns = [r for r in rows if r["kind"] == "fn" and 8 <= r["line_end"] - r["line_start"] <= 60]
    if not fns:
        raise SystemExit(f"no suitable fn in {file}")
    fn = sorted(fns, key=lambda r: r["id"])[len(fns) // 2]
    return pt.query("codegraph.node_spans", ids=[fn["id"]])[0]


def variant(code: str, n: int) -> str:
    brace = code.index("{", code.index("fn "))
    return code[:brace + 1] + f"\n        let _pt_bench = {n}u32;" + code[brace + 1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crate", default="regex-syntax-0.6.27")
    ap.add_argument("--file", default="src/ast/parse.rs", help="file whose fn the candidate edits")
    ap.add_argument("--samples", type=int, default=7)
    ap.add_argument("--root", default="/tmp/pt-bench/preflight")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from parseltongue.runner.api import Pt
    from parseltongue.runner.ingest import ingest
    from parseltongue.adapters.mirror import Mirror
    from parseltongue.runner.candidate import NodeEdit, build_from_nodes
    from parseltongue.runner.preflight import run_preflight

    load0 = os.getloadavg()
    root = Path(args.root)
    ws = setup(args.crate, root)
    rs = list(ws.rglob("*.rs"))
    lines = sum(p.read_bytes().count(b"\n") for p in rs)
    log(f"{args.crate}: {len(rs)} .rs files, {lines} lines -> {ws}")
    res: dict = {"crate": args.crate, "rs_files": len(rs), "lines": lines, "samples": args.samples,
                 "cpus": os.cpu_count()}

    plain_target = root / "plain-target"
    res["plain_cold_s"] = cargo_check(ws, plain_target)
    res["plain_noop_s"] = statistics.median(cargo_check(ws, plain_target) for _ in range(3))
    log(f"plain cargo check: cold {res['plain_cold_s']:.2f}s, warm no-op {res['plain_noop_s']:.2f}s")

    (ws / ".parseltongue").mkdir()
    pt = Pt.open(ws)
    t0 = time.perf_counter()
    ingest(ws, pt.store)
    res["ingest_s"] = time.perf_counter() - t0
    fn = pick_fn(pt, ws, args.file)
    original = (ws / fn["file_path"]).read_bytes()
    code = original[fn["span_start"]:fn["span_end"]].decode()
    res["edited_node"] = fn["id"]
    log(f"ingest {res['ingest_s']:.2f}s; candidate edits {fn['id']}")

    def plain_after_edit(n: int) -> float:
        """The same one-file edit in the plain tree, checked, then put back (untimed)."""
        path = ws / fn["file_path"]
        path.write_bytes(original[:fn["span_start"]] + variant(code, n).encode() + original[fn["span_end"]:])
        try:
            return cargo_check(ws, plain_target)
        finally:
            path.write_bytes(original)

    def preflight(n: int) -> dict:
        t = time.perf_counter()
        cand = build_from_nodes(pt, [NodeEdit(fn["id"], "Edit", variant(code, n))])
        rep = run_preflight(pt, cand)
        total = time.perf_counter() - t
        if rep.verdict != "passed":
            raise SystemExit(f"candidate failed: {rep.diagnostics[:3]}")
        st = {s.stage: s for s in rep.stages}
        return {"total_s": total, "sync_s": rep.sync["elapsed_s"], "cargo_s": st["cargo"].elapsed_ms / 1000,
                "baseline_built": bool(st["cargo"].baseline), "copied": rep.sync["copied"]}

    cold = preflight(1)
    res["preflight_cold"] = cold
    log(f"PreFlight cold: {cold['total_s']:.2f}s (sync {cold['sync_s']:.3f}s, {cold['copied']} files copied)")
    # The plain tree has been checked since (and ingest re-read it); one untimed round of each
    # gets both into the steady state before sampling.
    plain_after_edit(2)
    preflight(2)
    warm, plain = [], []
    for i in range(args.samples):
        plain.append(plain_after_edit(10 + i))
        warm.append(preflight(10 + i))
        log(f"  sample {i + 1}: plain {plain[-1]:.2f}s, PreFlight {warm[-1]['total_s']:.2f}s "
            f"(cargo {warm[-1]['cargo_s']:.2f}s, sync {warm[-1]['sync_s']:.3f}s)")
    res["plain_after_edit_s"] = {"median": statistics.median(plain), "min": min(plain), "max": max(plain)}
    res["preflight_warm_s"] = {"median": statistics.median(w["total_s"] for w in warm),
                               "min": min(w["total_s"] for w in warm), "max": max(w["total_s"] for w in warm),
                               "cargo_median": statistics.median(w["cargo_s"] for w in warm),
                               "sync_median": statistics.median(w["sync_s"] for w in warm)}
    res["ratio_warm_vs_plain"] = res["preflight_warm_s"]["median"] / res["plain_after_edit_s"]["median"]
    res["ratio_cold_vs_plain_cold"] = cold["total_s"] / res["plain_cold_s"]

    # Mirror sync after a one-file change in the user's tree (and with nothing changed).
    m = Mirror(ws)
    noop, one = [], []
    victim = ws / "src" / "lib.rs"
    keep = victim.read_bytes()
    with m.locked():
        m.sync()
        for i in range(args.samples):
            noop.append(m.sync().elapsed_s)
            victim.write_bytes(keep + f"// touched {i}\n".encode())
            rep = m.sync()
            assert rep.copied == 1, rep
            one.append(rep.elapsed_s)
        victim.write_bytes(keep)
        m.sync()
    res["sync_one_file_ms"] = {"median": statistics.median(one) * 1000, "max": max(one) * 1000}
    res["sync_no_change_ms"] = {"median": statistics.median(noop) * 1000, "max": max(noop) * 1000}
    res["mirror_files"] = rep.files
    pt.close()

    # The CLI once, for reference (Python start-up and imports included).
    cf = root / "code.rs"
    cf.write_text(variant(code, 999))
    t = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).parent / "pt"), "-C", str(ws), "preflight", "--node", fn["id"],
                          "--code", str(cf), "--json"], capture_output=True, text=True)
    res["cli_preflight_s"] = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"pt preflight failed: {out.stderr[-1000:]}")
    res["loadavg_before"] = [round(x, 2) for x in load0]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    if args.json:
        print(json.dumps(res, indent=2))
        return
    w, p = res["preflight_warm_s"], res["plain_after_edit_s"]
    print(f"crate            {args.crate} ({len(rs)} files, {lines} lines); edited {fn['id']}")
    print(f"plain cargo      cold {res['plain_cold_s']:.2f}s   warm no-op {res['plain_noop_s']:.2f}s   "
          f"warm after one-file edit median {p['median']:.2f}s (min {p['min']:.2f}, max {p['max']:.2f})")
    print(f"PreFlight        cold {cold['total_s']:.2f}s (ratio to plain cold {res['ratio_cold_vs_plain_cold']:.2f}x)   "
          f"warm median {w['median']:.2f}s (min {w['min']:.2f}, max {w['max']:.2f}; cargo {w['cargo_median']:.2f}s, "
          f"sync {w['sync_median'] * 1000:.1f}ms)")
    print(f"ratio            warm PreFlight / warm cargo check after the same edit = {res['ratio_warm_vs_plain']:.2f}x "
          f"(target <= 1.2x)")
    print(f"mirror sync      one changed file {res['sync_one_file_ms']['median']:.1f}ms median "
          f"(max {res['sync_one_file_ms']['max']:.1f}); no change {res['sync_no_change_ms']['median']:.1f}ms "
          f"({res['mirror_files']} files)")
    print(f"pt preflight CLI {res['cli_preflight_s']:.2f}s (one run, Python start-up included); ingest {res['ingest_s']:.2f}s")
    print(f"load average     before {res['loadavg_before']}, after {res['loadavg_after']} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
