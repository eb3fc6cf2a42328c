#!/usr/bin/env python3
"""Hydration benchmark: rust-analyzer facts on the fixture workspaces and on a real crate.

    .venv/bin/python bench/hydrate.py                    # fixtures + regex-syntax, text report
    .venv/bin/python bench/hydrate.py --json             # one JSON object on stdout
    .venv/bin/python bench/hydrate.py --crate /usr/share/cargo/registry/regex-1.7.1 --no-fixtures

Measured per workspace, in one run (numbers, not pass/fail):
  * session start -> ready: process start, initialize, workspace loaded (serverStatus quiescent);
  * hydration: wall time of `hydrate()` (requests + writes), files, signatures, diagnostics,
    macro items; definition requests timed one by one: call sites resolved per second (RA
    returned a location) and requests per second;
  * agreement between rust-analyzer and the heuristic CALLS edges of `pt ingest`, as counted by
    the read-only rule program `hydrate.edge_agreement` before each batch is written: the share
    of heuristic edges RA confirms (same src and dst), contradicts (resolves their call sites
    elsewhere), leaves unverified (no answer, e.g. std receivers under noSysroot), and the RA
    edges it adds where the heuristic had none (as a share of the heuristic edges);
  * peak RSS of the analyzer.

Every workspace is copied to a scratch directory first (rust-analyzer's cargo metadata writes
Cargo.lock; nothing under tests/ or /usr/share is touched). A Debian crate gets a
.cargo/config.toml that replaces crates-io with the directory source /usr/share/cargo/registry,
offline. Each workspace is ingested with pt first (in-process, a SQLite graph in the scratch dir).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from parseltongue.adapters.cargo import debian_source_config
from parseltongue.adapters import rust_analyzer as ra
from parseltongue.adapters.store import open_store
from parseltongue.runner.api import Pt
from parseltongue.runner.hydrate import hydrate
from parseltongue.runner.ingest import ingest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"
DEFAULT_FIXTURES = ["hydrate_ws", "ra_basic", "ingest_ws", "multi", "broken"]
REGISTRY = Path("/usr/share/cargo/registry")
DEFAULT_CRATE = REGISTRY / "regex-syntax-0.6.27"
CARGO_CONFIG = debian_source_config(REGISTRY)


def log(msg: str) -> None:
    print(f"[hydrate-bench] {msg}", file=sys.stderr, flush=True)


def prepare(src: Path, scratch: Path, debian: bool) -> Path:
    ws = scratch / src.name
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    ws.chmod(0o755)
    for p in ws.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    if debian:
        (ws / ".cargo").mkdir(exist_ok=True)
        (ws / ".cargo" / "config.toml").write_text(CARGO_CONFIG)
        (ws / ".cargo-checksum.json").unlink(missing_ok=True)
    return ws


class _Timed:
    """Wraps one request method of the session to time every call (instance attribute shadows
    the method; the flow calls it per item, per call site, per file)."""

    def __init__(self, session: ra.RaSession, method: str):
        self.inner = getattr(session, method)
        self.seconds = 0.0
        self.requests = 0
        self.answered = 0
        setattr(session, method, self)

    def __call__(self, *args):
        t = time.perf_counter()
        try:
            out = self.inner(*args)
        finally:
            self.seconds += time.perf_counter() - t
            self.requests += 1
        self.answered += bool(out)
        return out


REQUESTS = ("document_symbols", "hover", "definition", "expand_macro", "diagnostics")


def bench_workspace(src: Path, scratch: Path, debian: bool, budget_s: float) -> dict:
    ws = prepare(src, scratch, debian)
    store = open_store(ws / ".parseltongue" / "graph.db")
    pt = Pt(ws, store)
    out: dict = {"workspace": str(src)}
    try:
        t = time.perf_counter()
        rep = ingest(ws, store)
        out["ingest"] = {"files": rep.files_total, "nodes": rep.nodes, "edges": rep.edges,
                         "seconds": round(time.perf_counter() - t, 3)}
        out["ingest"]["heuristic_calls"] = _heuristic_calls(pt)
        log(f"{src.name}: ingested {rep.files_total} files, {rep.nodes} nodes, {rep.edges} edges")

        binary = ra.find_rust_analyzer()
        if binary is None:
            out["error"] = "no rust-analyzer binary"
            return out
        session = ra.RaSession(ws, binary, request_timeout=30, ready_timeout=300)
        t = time.perf_counter()
        try:
            session.__enter__()
        except ra.RaError as exc:
            out["error"] = str(exc)
            return out
        out["start_to_ready_s"] = round(time.perf_counter() - t, 3)
        timers = {m: _Timed(session, m) for m in REQUESTS}
        timed = timers["definition"]
        try:
            t = time.perf_counter()
            report = hydrate(ws, store, session=session, budget_s=budget_s)
            wall = time.perf_counter() - t
            out["rss_peak_mb"] = round(session.peak_rss_mb() or 0.0, 1)
        finally:
            session.shutdown()
        out["hydrate"] = {
            "seconds": round(wall, 3), "files": report.files_hydrated, "files_pending": report.files_pending,
            "deferred": len(report.files_deferred), "skipped": len(report.files_skipped),
            "signatures": report.signatures, "symbols": report.symbols, "symbols_matched": report.symbols_matched,
            "diagnostics": report.diagnostics, "macro_expansions": report.macro_expansions,
            "macro_items": report.macro_items, "request_errors": report.request_errors,
            "warning": report.warning, "timings": report.timings,
        }
        out["definitions"] = {
            "requests": timed.requests, "resolved": timed.answered, "seconds": round(timed.seconds, 3),
            "resolved_per_s": round(timed.answered / timed.seconds, 1) if timed.seconds else 0.0,
            "requests_per_s": round(timed.requests / timed.seconds, 1) if timed.seconds else 0.0,
            "resolved_per_s_end_to_end": round(timed.answered / wall, 1) if wall else 0.0,
        }
        out["requests"] = {m: {"n": t.requests, "seconds": round(t.seconds, 3),
                               "mean_ms": round(1000 * t.seconds / t.requests, 2) if t.requests else 0.0}
                           for m, t in timers.items()}
        out["agreement"] = report.agreement
        out["shares"] = report.shares()
        out["check"] = pt.query("hydrate.check")
        log(f"{src.name}: hydrated {report.files_hydrated} files in {wall:.2f}s")
    finally:
        store.close()
    return out


def _heuristic_calls(pt: Pt) -> int:
    rows = pt.run("retrieval.counts").rows  # [what, key, count]
    return next((r[2] for r in rows if r[0] == "edges_by_provenance" and r[1] == "CALLS/heuristic"), 0)


def text_report(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"== {r['workspace']}")
        if "ingest" in r:
            i = r["ingest"]
            lines.append(f"  ingest: {i['files']} files, {i['nodes']} nodes, {i['edges']} edges "
                         f"({i['heuristic_calls']} heuristic CALLS) in {i['seconds']:.2f}s")
        if "error" in r:
            lines.append(f"  error: {r['error']}")
            continue
        h, d, a, s = r["hydrate"], r["definitions"], r["agreement"], r["shares"]
        lines.append(f"  session start -> ready: {r['start_to_ready_s']:.2f}s; analyzer peak RSS {r['rss_peak_mb']:.0f} MB")
        lines.append(f"  hydrate: {h['files']}/{h['files_pending']} files in {h['seconds']:.2f}s "
                     f"(requests {h['timings'].get('requests_s', 0):.2f}s, writes {h['timings'].get('write_s', 0):.2f}s); "
                     f"{h['signatures']} signatures, {h['symbols_matched']}/{h['symbols']} symbols matched, "
                     f"{h['diagnostics']} diagnostics, {h['macro_items']} macro items from {h['macro_expansions']} expansions"
                     + (f"; {h['request_errors']} request errors" if h["request_errors"] else "")
                     + (f"; warning: {h['warning']}" if h["warning"] else ""))
        lines.append(f"  definitions: {d['requests']} call sites, {d['resolved']} resolved in {d['seconds']:.2f}s: "
                     f"{d['resolved_per_s']:.0f} resolved/s ({d['requests_per_s']:.0f} requests/s; "
                     f"{d['resolved_per_s_end_to_end']:.0f} resolved/s over the whole hydration)")
        lines.append("  requests: " + ", ".join(f"{m} {q['n']} x {q['mean_ms']:.1f} ms" for m, q in r["requests"].items()))
        lines.append(f"  heuristic CALLS edges {a.get('heuristic_edges', 0)}: confirmed {a.get('confirmed', 0)} "
                     f"({s['confirmed']:.1%}), contradicted {a.get('contradicted', 0)} ({s['contradicted']:.1%}), "
                     f"unverified {a.get('unverified', 0)} ({s['unverified']:.1%}); RA adds {a.get('added', 0)} "
                     f"({s['added']:.1%} of heuristic); RA edges {a.get('ra_edges', 0)}")
        lines.append(f"  call sites {a.get('sites', 0)}: answered {a.get('sites_answered', 0)}, "
                     f"to graph nodes {a.get('sites_to_nodes', 0)}; consistency problems: {len(r['check'])}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--crate", type=Path, default=DEFAULT_CRATE, help=f"a Debian crate directory (default {DEFAULT_CRATE})")
    ap.add_argument("--no-crate", action="store_true", help="fixtures only")
    ap.add_argument("--fixtures", default=",".join(DEFAULT_FIXTURES), help="comma-separated tests/fixtures/ names")
    ap.add_argument("--no-fixtures", action="store_true")
    ap.add_argument("--budget-s", type=float, default=0.0, help="hydration budget per workspace (0 = none)")
    args = ap.parse_args()

    binary = ra.find_rust_analyzer()
    meta = {"rust_analyzer": f"{binary.path} ({binary.version})" if binary else None,
            "mode": ra.describe(binary, ra.ra_config(Path.cwd()))["mode"] if binary else None}
    results = []
    with tempfile.TemporaryDirectory(prefix="pt-hydrate-bench-") as tmp:
        scratch = Path(tmp)
        if not args.no_fixtures:
            for name in [n for n in args.fixtures.split(",") if n]:
                results.append(bench_workspace(FIXTURES / name, scratch, False, args.budget_s))
        if not args.no_crate:
            if args.crate.is_dir():
                results.append(bench_workspace(args.crate, scratch, True, args.budget_s))
            else:
                results.append({"workspace": str(args.crate),
                                "error": "not installed (apt-get install librust-regex-syntax-dev)"})
    if args.json:
        json.dump({"meta": meta, "results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"rust-analyzer: {meta['rust_analyzer']} mode={meta['mode']}")
        print(text_report(results))


if __name__ == "__main__":
    main()
