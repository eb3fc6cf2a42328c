"""rust-analyzer session benchmark on a real crate (numbers, not pass/fail).

    apt-get install -y librust-regex-syntax-dev          # sources in /usr/share/cargo/registry
    .venv/bin/python bench/ra_session.py                 # regex-syntax-*, all call sites
    .venv/bin/python bench/ra_session.py --crate regex-1.7.1 --max-sites 2000 --json

Measures, in one run:
  - session start -> ready (process start, initialize, workspace loaded: serverStatus quiescent);
  - the first hover (cold: RA infers on demand, there is no cache priming) separately;
  - hover and definition latency p50/p95 over every call site tree-sitter finds in src/
    (the callee name of each call_expression: path tail, method name, generic fn name);
  - overlay round trip p50/p95 (enter overlay with a candidate text, get that version's
    diagnostics, exit back to disk): the first candidate on a file (cold: RA infers all of the
    file's bodies), then warm candidates on the same file: body edits and an item edit
    (a new fn appended, which changes the crate's item tree);
  - peak RSS of the analyzer process (VmHWM).

The crate is copied to a temp workspace whose .cargo/config.toml replaces crates-io with the
Debian directory source /usr/share/cargo/registry, offline, so dependencies resolve without
network. Nothing under /usr/share is written.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tree_sitter_rust
from tree_sitter import Language, Parser

from parseltongue.adapters.cargo import debian_source_config
from parseltongue.adapters import rust_analyzer as ra

REGISTRY = Path("/usr/share/cargo/registry")
CARGO_CONFIG = debian_source_config(REGISTRY)


def pick_crate(name: str | None) -> Path:
    if name:
        path = REGISTRY / name
        if not path.is_dir():
            sys.exit(f"no crate {path}")
        return path
    found = sorted(glob.glob(str(REGISTRY / "regex-syntax-*")))
    if not found:
        sys.exit("no regex-syntax sources: apt-get install -y librust-regex-syntax-dev")
    return Path(found[-1])


def make_workspace(crate: Path, root: Path) -> Path:
    ws = root / crate.name
    shutil.copytree(crate, ws, ignore=shutil.ignore_patterns("target", ".cargo-checksum.json"))
    (ws / ".cargo").mkdir(exist_ok=True)
    (ws / ".cargo" / "config.toml").write_text(CARGO_CONFIG)
    return ws


# -- call sites -------------------------------------------------------------------


def _callee_name(fn_node):
    """The identifier naming the callee of a call_expression's function part."""
    node = fn_node
    while node is not None:
        if node.type == "identifier":
            return node
        if node.type == "scoped_identifier":
            node = node.child_by_field_name("name")
        elif node.type == "field_expression":
            return node.child_by_field_name("field")
        elif node.type == "generic_function":
            node = node.child_by_field_name("function")
        else:
            return None
    return None


def call_sites(ws: Path) -> list[tuple[str, int]]:
    """(relative path, byte offset of the callee name) for every call in src/."""
    parser = Parser(Language(tree_sitter_rust.language()))
    sites = []
    for path in sorted((ws / "src").rglob("*.rs")):
        data = path.read_bytes()
        stack = [parser.parse(data).root_node]
        while stack:
            node = stack.pop()
            if node.type == "call_expression":
                name = _callee_name(node.child_by_field_name("function"))
                if name is not None:
                    sites.append((path.relative_to(ws).as_posix(), name.start_byte))
            stack.extend(node.children)
    return sites


def first_fn_body_offset(data: bytes) -> int | None:
    """Byte offset just after the `{` of the first function body in the file."""
    parser = Parser(Language(tree_sitter_rust.language()))
    stack = [parser.parse(data).root_node]
    while stack:
        node = stack.pop(0)
        if node.type == "function_item":
            body = node.child_by_field_name("body")
            if body is not None:
                return body.start_byte + 1
        stack.extend(node.children)
    return None


# -- measurement -----------------------------------------------------------------------


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(samples_s: list[float]) -> dict:
    ms = [s * 1000 for s in samples_s]
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.5), 2), "p95_ms": round(pct(ms, 0.95), 2),
            "max_ms": round(max(ms), 1) if ms else None,
            "mean_ms": round(statistics.fmean(ms), 2) if ms else None}


def timed(fn, *args):
    t = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t, result


def bench_lookups(session: ra.RaSession, ws: Path, sites, request_timeout: float) -> dict:
    indexes: dict[str, ra.LineIndex] = {}
    hovers, defs = [], []
    resolved = signed = errors = 0
    first_hover = None
    for rel, offset in sites:
        idx = indexes.setdefault(rel, ra.LineIndex((ws / rel).read_bytes()))
        line, col = idx.position(offset)
        try:
            dt, sig = timed(session.hover, rel, line, col)
            if first_hover is None:
                first_hover = dt
            else:
                hovers.append(dt)
            signed += sig is not None
            dt, locs = timed(session.definition, rel, line, col)
            defs.append(dt)
            resolved += bool(locs)
        except ra.RaError:
            errors += 1
    return {
        "call_sites": len(sites), "files": len(indexes),
        "first_hover_s": round(first_hover or 0.0, 3),
        "hover": summary(hovers), "definition": summary(defs),
        "with_signature": signed, "resolved": resolved, "errors": errors,
    }


def bench_overlays(session: ra.RaSession, ws: Path, rounds: int, seed: int) -> dict:
    """Per file: a first candidate (cold: RA infers every body of the file for
    its diagnostics, there is no cache priming), then three more candidates on
    the same file (warm: what PreFlight pays per extra candidate)."""
    files = sorted((ws / "src").rglob("*.rs"), key=lambda p: p.stat().st_size, reverse=True)
    # The biggest files first (the expensive case), then the rest in random order.
    head = files[: max(1, rounds // 4)]
    rest = files[len(head):]
    random.Random(seed).shuffle(rest)
    cold, warm_body, warm_item, diag_counts, per_file = [], [], [], [], []
    for path in head + rest:
        if len(per_file) >= rounds:
            break
        rel = path.relative_to(ws).as_posix()
        data = path.read_bytes()
        at = first_fn_body_offset(data)
        if at is None:
            continue
        n = len(per_file)

        def body(k: int) -> str:
            return (data[:at] + f" let _pt_bench = {k};".encode() + data[at:]).decode()

        item = data.decode() + f"\nfn pt_bench_item_{n}() -> u32 {{ 1 }}\n"
        candidates = [(body(0), cold), (body(1), warm_body), (body(2), warm_body), (item, warm_item)]
        times = []
        for text, bucket in candidates:
            t = time.perf_counter()
            with session.overlay({rel: text}) as ov:
                diags = ov.diagnostics(timeout=60)
            times.append(time.perf_counter() - t)
            bucket.append(times[-1])
            diag_counts.append(len(diags[rel]))
        per_file.append({"file": rel, "lines": data.count(b"\n"),
                         "cold_ms": round(times[0] * 1000, 1),
                         "warm_ms": [round(t * 1000, 1) for t in times[1:]]})
    return {"cold_first_candidate": summary(cold), "warm_body_edit": summary(warm_body),
            "warm_item_edit": summary(warm_item), "warm_all": summary(warm_body + warm_item),
            "diagnostics_per_overlay_median": statistics.median(diag_counts) if diag_counts else None,
            "per_file": per_file}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crate", help="directory name under /usr/share/cargo/registry (default: regex-syntax-*)")
    ap.add_argument("--max-sites", type=int, default=0, help="cap call sites (0 = all)")
    ap.add_argument("--overlay-rounds", type=int, default=20, help="files edited (x2 edits each)")
    ap.add_argument("--request-timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-file overlay times")
    args = ap.parse_args()

    binary, notes = ra.probe_rust_analyzer()
    if binary is None:
        sys.exit("rust-analyzer unavailable: " + "; ".join(notes))
    crate = pick_crate(args.crate)
    with tempfile.TemporaryDirectory(prefix="pt-ra-bench-") as tmp:
        ws = make_workspace(crate, Path(tmp))
        sites = call_sites(ws)
        if args.max_sites:
            sites = random.Random(args.seed).sample(sites, min(args.max_sites, len(sites)))
        lines = sum(p.read_bytes().count(b"\n") for p in (ws / "src").rglob("*.rs"))
        session = ra.RaSession(ws, binary, request_timeout=args.request_timeout, ready_timeout=300)
        try:
            t0 = time.perf_counter()
            session.start()
            t_init = time.perf_counter() - t0
            session.wait_ready()
            t_ready = time.perf_counter() - t0
            lookups = bench_lookups(session, ws, sites, args.request_timeout)
            rss_after_lookups = session.peak_rss_mb()
            overlays = bench_overlays(session, ws, args.overlay_rounds, args.seed)
            report = {
                "crate": crate.name, "src_lines": lines,
                "binary": ra.describe(binary, session.config)["summary"],
                "start_to_initialized_s": round(t_init, 3), "start_to_ready_s": round(t_ready, 3),
                "lookups": lookups, "overlay_round_trip": overlays,
                "peak_rss_mb_after_lookups": round(rss_after_lookups or 0, 1),
                "peak_rss_mb": round(session.peak_rss_mb() or 0, 1),
                "restarts": session.restarts,
            }
        finally:
            session.shutdown()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lk, ov = report["lookups"], report["overlay_round_trip"]
    print(f"crate            {report['crate']} ({report['src_lines']} lines in src/)")
    print(f"analyzer         {report['binary']}")
    print(f"start -> init    {report['start_to_initialized_s']:.3f} s")
    print(f"start -> ready   {report['start_to_ready_s']:.3f} s")
    print(f"first hover      {lk['first_hover_s']:.3f} s (cold, no cache priming)")
    print(f"call sites       {lk['call_sites']} in {lk['files']} files; signature for {lk['with_signature']}, "
          f"definition for {lk['resolved']}, errors {lk['errors']}")
    for name in ("hover", "definition"):
        s = lk[name]
        print(f"{name:<16} p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  max {s['max_ms']} ms  (n={s['n']})")
    for name in ("cold_first_candidate", "warm_body_edit", "warm_item_edit", "warm_all"):
        s = ov[name]
        print(f"overlay {name:<21} p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  max {s['max_ms']} ms  (n={s['n']})")
    if args.verbose:
        for row in ov["per_file"]:
            print(f"  {row['file']:<40} {row['lines']:>6} lines  cold {row['cold_ms']} ms  warm {row['warm_ms']} ms")
    print(f"peak RSS         {report['peak_rss_mb_after_lookups']} MB after lookups, {report['peak_rss_mb']} MB at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
