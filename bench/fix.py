#!/usr/bin/env python3
"""Fix benchmark: `pt run fix` next to two rustc-suggestion baselines on the public corpus.

The corpus (/work/shared/corpus, see its README.md) is 150 real Debian crates with one injected
compile error each. Its own scorer (`score.py`) materializes each case, runs a fixer command in the
broken workspace and records compiles / faithful / equivalent / ... per case. This script runs,
in one invocation and on the same selected cases, one after the other (2 cores: never in parallel):

  pt                 <dir of sys.executable>/pt run fix --seed {seed_file} --yes
                     (deterministic engine alone: ANTHROPIC_API_KEY unset, PT_LLM=none)
  cargo_fix          cargo fix --broken-code --allow-no-vcs --allow-dirty -q
  naive_suggestions  python3 <corpus>/baselines/naive_fix.py

(the two baselines are the corpus's baselines/run_baselines.sh commands), each through
`score.py --name NAME --fixer CMD --out <out>/NAME.json` with its own PT_CORPUS_WS workspace name
(so its own cargo target dirs), then prints a markdown report and writes it to <out>/REPORT.md:
per-fixer totals (incl. "changed but does not compile", which must be 0 for pt), pt/cargo_fix
ratios, and compiles/faithful/equivalent per error code and per mutation kind.

Usage:
  .venv/bin/python bench/fix.py                                   # all 150 cases, 3 fixers
  .venv/bin/python bench/fix.py --reuse cargo_fix,naive_suggestions   # re-run pt only
  .venv/bin/python bench/fix.py --cases 'P0[0-2]' --only cargo_fix,naive_suggestions
  .venv/bin/python bench/fix.py --report-only                     # re-print from <out>/*.json

A fixer that is missing, crashes or times out is scored by score.py as not fixed (its rc and the
tail of its output are in <out>/NAME.json, its progress log in <out>/NAME.log).
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CORPUS = Path(os.environ.get("PT_CORPUS", "/work/shared/corpus"))
DEFAULT_OUT = Path("/tmp/pt-bench/fix")
# Workspaces (one per fixer) live here; score.py keys its cargo target dirs by the workspace's
# directory name, so every fixer gets its own name and never shares fingerprints with another run.
WORK_ROOT = Path(os.environ.get("PT_CORPUS_WORK", "/tmp/pt-corpus-work"))
FIXERS = ["pt", "cargo_fix", "naive_suggestions"]
PT_GRACE = 30  # s between timeout(1) around pt and score.py's own limit
TIMEOUT_RCS = ("timeout", 124, 137)  # score.py's marker; timeout(1): TERM, then KILL


def log(msg: str) -> None:
    print(f"[fix-bench] {msg}", file=sys.stderr, flush=True)


def pt_path() -> Path:
    return Path(sys.executable).parent / "pt"  # not resolved: the venv's bin/, where its `pt` lives


def fixer_commands(corpus: Path, timeout: int, pt_args: str = "") -> dict[str, str]:
    # pt runs under timeout(1), which kills its whole process group (cargo, rustc, rust-analyzer):
    # score.py's own timeout only kills the direct child, and an orphan still running would edit
    # the next case's workspace. score.py's limit for pt is set PT_GRACE s later (see run_fixer).
    return {
        "pt": f"timeout -k 10 {timeout} {pt_path()} run fix --seed {{seed_file}} --yes" + (f" {pt_args}" if pt_args else ""),
        "cargo_fix": "cargo fix --broken-code --allow-no-vcs --allow-dirty -q",
        "naive_suggestions": f"python3 {corpus / 'baselines' / 'naive_fix.py'}",
    }


def select_cases(corpus: Path, pattern: str | None, limit: int) -> list[dict]:
    """The cases score.py will run, in its order (sorted case dirs, regex search on the id, limit)."""
    index = {c["id"]: c for c in json.loads((corpus / "index.json").read_text())}
    out = []
    for d in sorted((corpus / "cases").iterdir()):
        if not (d / "case.json").is_file():
            continue
        meta = json.loads((d / "case.json").read_text())
        if pattern and not re.search(pattern, meta["id"]):
            continue
        out.append({"id": meta["id"], "crate": meta["crate"], "error_code": meta["error_code"],
                    "op": meta["mutation"]["op"] or index.get(meta["id"], {}).get("op")})
    return out[:limit] if limit else out


def fixer_env() -> dict:
    env = dict(os.environ)
    env.pop("ANTHROPIC_API_KEY", None)
    env["PT_LLM"] = "none"
    return env


def run_fixer(name: str, cmd: str, args, corpus: Path, out: Path) -> None:
    res = out / f"{name}.json"
    if res.exists():
        res.unlink()  # never report a stale file if this run dies half-way
    # score.py keys the cargo target dirs by the workspace's dir name: unique per fixer
    ws = WORK_ROOT / "ptbench-fix" / f"ptbench-fix-{name}"
    ws.parent.mkdir(parents=True, exist_ok=True)
    env = fixer_env()
    env["PT_CORPUS_WS"] = str(ws)
    limit = args.timeout + (PT_GRACE if name == "pt" else 0)
    argv = [sys.executable, str(corpus / "score.py"), "--name", name, "--fixer", cmd,
            "--timeout", str(limit), "--out", str(res)]
    if args.cases:
        argv += ["--cases", args.cases]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    if args.keep:
        keep = Path(args.keep) / name
        keep.mkdir(parents=True, exist_ok=True)
        argv += ["--keep", str(keep)]
    log(f"{name}: {cmd}")
    log(f"{name}: workspace {ws}, log {out / (name + '.log')}")
    t0 = time.time()
    with open(out / f"{name}.log", "w") as lf:
        p = subprocess.Popen(argv, cwd=corpus, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, bufsize=1)
        for line in p.stdout:
            lf.write(line)
            lf.flush()
            if line.startswith("["):  # per-case progress lines
                log(f"{name} {line.rstrip()}")
        rc = p.wait()
    log(f"{name}: score.py exited {rc} after {time.time() - t0:.0f} s")
    if rc != 0 or not res.exists():
        log(f"{name}: no result file (see {out / (name + '.log')})")


def load_run(out: Path, name: str, cases: list[dict]) -> dict | None:
    f = out / f"{name}.json"
    if not f.exists():
        return None
    data = json.loads(f.read_text())
    by_id = {r["id"]: r for r in data.get("results", [])}
    want = [c["id"] for c in cases]
    missing = [i for i in want if i not in by_id]
    if missing:
        log(f"{name}: {len(missing)} selected case(s) not in {f} (e.g. {missing[0]}): counted as not fixed")
    rows = []
    for c in cases:
        r = dict(by_id.get(c["id"]) or {"id": c["id"], "compiles": False, "faithful": False,
                                         "equivalent": False, "changed": False, "patch_lines": 0,
                                         "error": "not in result file"})
        r["error_code"], r["op"] = c["error_code"], c["op"]
        rows.append(r)
    extra = len(by_id) - (len(want) - len(missing))
    return {"name": name, "fixer": data.get("fixer"), "rustc": data.get("rustc"),
            "seconds": data.get("seconds"), "results": rows, "extra": extra, "file": str(f)}


def pct(a: int, n: int) -> str:
    return f"{a} ({100.0 * a / n:.1f}%)" if n else f"{a}"


def totals(rs: list[dict]) -> dict:
    n = len(rs)
    comp = [r for r in rs if r.get("compiles")]
    times = [r["fixer_s"] for r in rs if isinstance(r.get("fixer_s"), (int, float))]
    return {
        "n": n,
        "compiles": len(comp),
        "faithful": sum(bool(r.get("faithful")) for r in rs),
        "equivalent": sum(bool(r.get("equivalent")) for r in rs),
        "faithful_strict": sum(bool(r.get("faithful_strict")) for r in rs),
        "changed": sum(bool(r.get("changed")) for r in rs),
        "broken_change": [r["id"] for r in rs if r.get("changed") and not r.get("compiles")],
        "patch_lines": sum(r.get("patch_lines", 0) for r in comp) / len(comp) if comp else 0.0,
        "mean_s": sum(times) / len(times) if times else 0.0,
        "rc_nonzero": sum(1 for r in rs if r.get("fixer_rc") not in (0, None)),
        "timeouts": sum(1 for r in rs if r.get("fixer_rc") in TIMEOUT_RCS),
        "precheck_ok": sum(1 for r in rs if r.get("precheck_ok")),
        "score_errors": sum(1 for r in rs if r.get("error")),
    }


def ratio(a: int, b: int) -> str:
    return f"{a}/{b} = {a / b:.2f}x" if b else f"{a}/{b} = n/a"


def cell(rr: list[dict]) -> str:
    return (f"{sum(bool(x.get('compiles')) for x in rr)}/{sum(bool(x.get('faithful')) for x in rr)}/"
            f"{sum(bool(x.get('equivalent')) for x in rr)}")


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def report(runs: dict[str, dict], cases: list[dict], args, ran: list[str]) -> str:
    names = [n for n in FIXERS if n in runs]
    T = {n: totals(runs[n]["results"]) for n in names}
    L = []
    L.append("# Fix benchmark (public corpus)\n")
    L.append(f"{datetime.datetime.now():%Y-%m-%d %H:%M}; {len(cases)} cases"
             + (f" (--cases {args.cases!r})" if args.cases else "") + (f" (--limit {args.limit})" if args.limit else "")
             + f"; rustc `{next((runs[n]['rustc'] for n in names if runs[n].get('rustc')), '?')}`"
             + f"; repo {git_rev()}; corpus {args.corpus}")
    L.append("")
    for n in names:
        how = "run now" if n in ran else "reused"
        L.append(f"- `{n}` ({how}, {runs[n]['file']}): `{runs[n]['fixer']}`")
    L.append("")
    if "pt" in T:
        b = T["pt"]["broken_change"]
        if b:
            L.append(f"**!! pt changed but does not compile: {len(b)} case(s) (must be 0): {', '.join(b)}**\n")
        else:
            L.append(f"**pt changed but does not compile: 0 of {T['pt']['n']} (must be 0): OK**\n")
        if T["pt"]["n"] and T["pt"]["rc_nonzero"] == T["pt"]["n"]:
            L.append(f"**!! pt exited non-zero on every case: is `pt run fix` there? "
                     f"(fixer_tail in {runs['pt']['file']})**\n")
    L.append("| fixer | n | compiles | faithful | equivalent | faithful_strict | changed | "
             "changed but does not compile | mean patch lines (compiling) | mean s/case | scorer wall s | rc != 0 | timeouts | precheck ok |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        t = T[n]
        L.append(f"| {n} | {t['n']} | {pct(t['compiles'], t['n'])} | {pct(t['faithful'], t['n'])} | "
                 f"{pct(t['equivalent'], t['n'])} | {pct(t['faithful_strict'], t['n'])} | {t['changed']} | "
                 f"**{len(t['broken_change'])}** | {t['patch_lines']:.1f} | {t['mean_s']:.1f} | {runs[n].get('seconds')} | "
                 f"{t['rc_nonzero']} | {t['timeouts']} | {t['precheck_ok']} |")
    errs = {n: T[n]["score_errors"] for n in names if T[n]["score_errors"]}
    if errs:
        L.append(f"\nnot scored (score.py error, or case missing from a reused file; counted as not fixed): {errs}")
    if "pt" in T and "cargo_fix" in T:
        L.append("\n| ratio | pt / cargo_fix |")
        L.append("|---|---|")
        for k in ("faithful", "compiles", "equivalent"):
            L.append(f"| {k} | {ratio(T['pt'][k], T['cargo_fix'][k])} |")
    for title, key in (("error code", "error_code"), ("mutation kind", "op")):
        L.append(f"\n## Per {title} (compiles/faithful/equivalent of n)\n")
        L.append(f"| {title} | n | " + " | ".join(names) + " |")
        L.append("|---|---|" + "---|" * len(names))
        groups = sorted({c[key] for c in cases})
        for g in groups:
            k = sum(1 for c in cases if c[key] == g)
            L.append(f"| {g} | {k} | " + " | ".join(
                cell([r for r in runs[n]["results"] if r[key] == g]) for n in names) + " |")
    if "pt" in runs and len(names) > 1:
        pt_f = {r["id"] for r in runs["pt"]["results"] if r.get("faithful")}
        pt_c = {r["id"] for r in runs["pt"]["results"] if r.get("compiles")}
        base_f = set().union(*({r["id"] for r in runs[n]["results"] if r.get("faithful")} for n in names if n != "pt"))
        lost = sorted(base_f - pt_f)
        L.append(f"\n## Cases a baseline restores faithfully but pt does not ({len(lost)})\n")
        L.append(", ".join(f"{i}{' (pt compiles)' if i in pt_c else ''}" for i in lost) or "none")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="regex on case ids (re.search), as score.py")
    ap.add_argument("--limit", type=int, default=0, help="first N selected cases")
    ap.add_argument("--timeout", type=int, default=300, help="per fixer run, seconds (score.py default 300)")
    ap.add_argument("--keep", default=None, help="keep every fixed workspace under DIR/<fixer>/<case>")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"result dir (default {DEFAULT_OUT})")
    ap.add_argument("--only", default=",".join(FIXERS), help="fixers to include, comma-separated "
                    f"({','.join(FIXERS)})")
    ap.add_argument("--reuse", default="", help="fixers NOT re-run when <out>/NAME.json exists")
    ap.add_argument("--pt-args", default="", help="extra `pt run fix` options, e.g. --allow-signature-change "
                    "(use another --out: the report names the run pt either way)")
    ap.add_argument("--report-only", action="store_true", help="run nothing, report from <out>/*.json")
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS), help=f"corpus dir (default {DEFAULT_CORPUS})")
    args = ap.parse_args()

    corpus = Path(args.corpus).resolve()
    out = Path(args.out).resolve()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    reuse = {s.strip() for s in args.reuse.split(",") if s.strip()}
    bad = [n for n in only + sorted(reuse) if n not in FIXERS]
    if bad:
        ap.error(f"unknown fixer(s) {bad}; known: {FIXERS}")
    if not (corpus / "score.py").is_file():
        ap.error(f"{corpus}/score.py not found (--corpus)")
    if out == (corpus / "results").resolve() or corpus in out.parents:
        ap.error("--out must not be inside the corpus (its results/ holds the published baselines)")
    cases = select_cases(corpus, args.cases, args.limit)
    if not cases:
        ap.error("no cases selected")
    out.mkdir(parents=True, exist_ok=True)
    cmds = fixer_commands(corpus, args.timeout, args.pt_args)
    if "pt" in only and not pt_path().exists():
        log(f"warning: {pt_path()} does not exist; pt will be scored as not fixing anything")

    ran = []
    if not args.report_only:
        # one benchmark at a time: the per-fixer workspaces and target dirs are fixed paths
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        lock = open(WORK_ROOT / "ptbench-fix.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another bench/fix.py holds {WORK_ROOT / 'ptbench-fix.lock'}; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        for n in only:
            if n in reuse and (out / f"{n}.json").exists():
                log(f"{n}: reusing {out / (n + '.json')}")
                continue
            if n in reuse:
                log(f"{n}: --reuse but {out / (n + '.json')} missing: running it")
            run_fixer(n, cmds[n], args, corpus, out)
            ran.append(n)
        lock.close()

    runs = {}
    for n in only:
        r = load_run(out, n, cases)
        if r is None:
            log(f"{n}: no results in {out}; left out of the report")
            continue
        if n not in ran and r["fixer"] != cmds[n]:
            log(f"{n}: note: reused results were made with fixer `{r['fixer']}`")
        runs[n] = r
    if not runs:
        log("nothing to report")
        return 1
    text = report(runs, cases, args, ran)
    (out / "REPORT.md").write_text(text)
    print(text)
    log(f"report -> {out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
