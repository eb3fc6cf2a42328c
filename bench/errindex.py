#!/usr/bin/env python3
"""Error-index benchmark: pt next to cargo fix and "apply every rustc suggestion" on the erroneous
examples of rustc's own error index (the pages the toolchain ships, one per error code).

Each page's code blocks marked `compile_fail` (not `ignore`, no `#![feature]`: this is stable
rustc) become a one-file binary crate: the block as the page shows it, hidden lines included (the
pages already wrap statements in `fn main`). A case counts only if `cargo check` on it fails with
the block's error code ("precheck"). By default the first such example of each code is used
(`--all-examples` for every one).

Per case and fixer (in a fresh copy, one fixer after the other; 2 cores):
  pt                 <venv>/pt run fix --seed src/main.rs --yes   (PT_LLM=none, no API key)
  cargo_fix          cargo fix --broken-code --allow-no-vcs --allow-dirty -q
  naive_suggestions  python3 <corpus>/baselines/naive_fix.py
scored as
  ok         `cargo check` passes AND every item of the example is still there (the multiset of
             `fn/struct/enum/union/trait/type/const/static/mod/macro_rules! NAME`, of `impl`
             headers and of `pub use` re-exports before is contained in the one after): deleting code is not a fix
  compiles   `cargo check` passes
  broken     the fixer changed the file and it does not compile (must be 0 for pt)

Usage:
  .venv/bin/python bench/errindex.py                         # every code, 3 fixers
  .venv/bin/python bench/errindex.py --codes 'E03(8|9)' --only pt
  .venv/bin/python bench/errindex.py --reuse cargo_fix,naive_suggestions   # re-run pt only
  .venv/bin/python bench/errindex.py --list                  # the cases, nothing run
  .venv/bin/python bench/errindex.py --rescore               # re-judge the last run's workspaces
Writes <out>/<fixer>.json per fixer, <out>/REPORT.md (per-code table) and keeps each fixed
workspace in <out>/work/<fixer>/<case>.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fix import DEFAULT_CORPUS, FIXERS, fixer_env, git_rev, pct, pt_path  # noqa: E402

PAGES = Path(os.environ.get(
    "PT_ERROR_INDEX",
    Path.home() / ".rustup/toolchains/stable-x86_64-unknown-linux-gnu/share/doc/rust/html/error_codes"))
DEFAULT_OUT = Path("/tmp/pt-bench/errindex")
CACHE = Path(os.environ.get("PT_ERRINDEX_CACHE", "/tmp/pt-errindex-cases"))  # prechecked examples
BLOCK = re.compile(r'<code class="language-rust([^"]*)">(.*?)</code>', re.S)
ITEM = re.compile(r"\b(fn|struct|enum|union|trait|type|const|static|mod|macro_rules!)\s+([A-Za-z_]\w*)")
REEXPORT = re.compile(r"\bpub(?:\([^)]*\))?\s+use\s+[^;]*;")  # a re-export is API; a plain `use` may go
IMPL = re.compile(r"^\s*(?:unsafe\s+)?impl\b[^{;]*", re.M)


def log(msg: str) -> None:
    print(f"[errindex] {msg}", file=sys.stderr, flush=True)


def examples(code: str) -> list[tuple[str, str]]:
    """(expected code, program text) of each usable compile_fail block of one page."""
    page = PAGES / f"{code}.html"
    out = []
    for classes, body in BLOCK.findall(page.read_text(encoding="utf-8", errors="replace")):
        tags = classes.split()
        if "compile_fail" not in tags or "ignore" in tags:
            continue
        text = html.unescape(re.sub(r"<[^>]+>", "", body))
        if "#![feature" in text or "extern crate" in text:
            continue  # nightly-only, or needs another crate of the doc build
        want = next((t for t in tags if re.fullmatch(r"E\d{4}", t)), code)
        edition = next((t[len("edition"):] for t in tags if t.startswith("edition")), "2015")
        out.append((want, text, edition))
    return out


def write_crate(d: Path, name: str, text: str, edition: str) -> None:
    if d.exists():
        shutil.rmtree(d)
    (d / "src").mkdir(parents=True)
    (d / "Cargo.toml").write_text(f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "{edition}"\n\n'
                                  "[workspace]\n")
    (d / "src" / "main.rs").write_text(text if text.endswith("\n") else text + "\n")


def check(d: Path, target: str = "target") -> tuple[int, set[str]]:
    p = subprocess.run(["cargo", "check", "--offline", "--message-format=json", "-q", "--target-dir",
                        target], cwd=d, capture_output=True, text=True, timeout=300)
    codes = set()
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            m = json.loads(line)
            if m.get("reason") == "compiler-message" and m["message"].get("level") == "error":
                c = (m["message"].get("code") or {}).get("code")
                if c:
                    codes.add(c)
    return p.returncode, codes


def items(text: str) -> Counter:
    return Counter([f"{k} {n}" for k, n in ITEM.findall(text)] +
                   ["impl " + " ".join(h.split()) for h in IMPL.findall(text)] +
                   [" ".join(u.split()) for u in REEXPORT.findall(text)])


def cases(codes_re: str | None, all_examples: bool, limit: int) -> list[dict]:
    """Every usable example, prechecked (cached in CACHE/cases.json: the precheck is a cargo check)."""
    cache = CACHE / "cases.json"
    known = {c["id"]: c for c in json.loads(cache.read_text())} if cache.exists() else {}
    out = []
    for page in sorted(PAGES.glob("E[0-9][0-9][0-9][0-9].html")):
        code = page.stem
        if codes_re and not re.search(codes_re, code):
            continue
        for i, (want, text, edition) in enumerate(examples(code)):
            cid = f"{code}_{i}"
            c = known.get(cid)
            if c is None or c["text"] != text:
                d = CACHE / "pre" / cid
                write_crate(d, cid.lower(), text, edition)
                rc, got = check(d)
                c = {"id": cid, "code": want, "page": code, "edition": edition, "text": text,
                     "precheck": rc != 0 and want in got, "got": sorted(got)}
                known[cid] = c
            if c["precheck"]:
                out.append(c)
                if not all_examples:
                    break
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}")  # several runs at once: whole file or none
    tmp.write_text(json.dumps(sorted(known.values(), key=lambda c: c["id"]), indent=0))
    tmp.replace(cache)
    return out[:limit] if limit else out


def fixer_cmd(name: str, corpus: Path, timeout: int) -> list[str]:
    return {"pt": ["timeout", "-k", "10", str(timeout), str(pt_path()), "run", "fix", "--seed",
                   "src/main.rs", "--yes"],
            "cargo_fix": ["timeout", "-k", "10", str(timeout), "cargo", "fix", "--broken-code",
                          "--allow-no-vcs", "--allow-dirty", "-q"],
            "naive_suggestions": ["timeout", "-k", "10", str(timeout), "python3",
                                  str(corpus / "baselines" / "naive_fix.py")]}[name]


def run_case(d: Path, name: str, c: dict, corpus: Path, timeout: int) -> dict:
    write_crate(d, c["id"].lower(), c["text"], c["edition"])
    t0 = time.monotonic()
    p = subprocess.run(fixer_cmd(name, corpus, timeout), cwd=d, env=fixer_env(), capture_output=True,
                       text=True)
    run = {"id": c["id"], "code": c["code"], "rc": p.returncode, "secs": round(time.monotonic() - t0, 2),
           "tail": (p.stdout + p.stderr)[-400:] if p.returncode else ""}
    return run | score(d, c)


def score(d: Path, c: dict) -> dict:
    """Judge the fixed workspace `d` of case `c` (also re-judges an earlier run: --rescore)."""
    after = (d / "src" / "main.rs").read_text(errors="replace")
    # A target dir of its own, made afresh: `cargo fix` builds with lints capped, and a later check
    # in its target dir replays that build as fresh (a deny-by-default lint error scored as fixed).
    shutil.rmtree(d / "target-score", ignore_errors=True)
    rc, left = check(d, "target-score")
    changed = after != (c["text"] if c["text"].endswith("\n") else c["text"] + "\n")
    keeps = not (items(c["text"]) - items(after))
    return {"compiles": rc == 0, "keeps_items": keeps, "ok": rc == 0 and keeps, "changed": changed,
            "broken": changed and rc != 0, "errors_left": sorted(left)}


def report(runs: dict[str, list[dict]], cs: list[dict], ran: list[str]) -> str:
    names = [n for n in FIXERS if n in runs]
    n = len(cs)
    lines = [f"# Error-index benchmark\n",
             f"{time.strftime('%Y-%m-%d %H:%M')}; {n} examples of {len({c['page'] for c in cs})} "
             f"error codes; rustc `{subprocess.run(['rustc', '-V'], capture_output=True, text=True).stdout.strip()}`; "
             f"repo {git_rev()}; run now: {', '.join(ran) or 'none (reused)'}\n",
             "| fixer | ok (compiles, every item kept) | compiles | changed | broken | median s/case |",
             "|---|---|---|---|---|---|"]
    for name in names:
        rs = runs[name]
        secs = sorted(r["secs"] for r in rs) or [0]
        lines.append(f"| {name} | {pct(sum(r['ok'] for r in rs), n)} | {pct(sum(r['compiles'] for r in rs), n)} | "
                     f"{sum(r['changed'] for r in rs)} | **{sum(r['broken'] for r in rs)}** | "
                     f"{secs[len(secs) // 2]:.1f} |")
    by = {name: defaultdict(list) for name in names}
    for name in names:
        for r in runs[name]:
            by[name][r["code"]].append(r)
    lines += ["", "## Per error code (ok of n)", "",
              "| code | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for code in sorted({c["code"] for c in cs}):
        k = sum(1 for c in cs if c["code"] == code)
        lines.append(f"| {code} | {k} | " + " | ".join(
            str(sum(r["ok"] for r in by[name][code])) for name in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codes", help="regex on the error code (page), e.g. 'E03[0-9][0-9]'")
    ap.add_argument("--all-examples", action="store_true", help="every example, not the first per code")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--only", default=",".join(FIXERS), help="fixers to run (comma list)")
    ap.add_argument("--reuse", default="", help="fixers whose <out>/NAME.json is reused, not re-run")
    ap.add_argument("--timeout", type=int, default=180, help="per case and fixer, s")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="for baselines/naive_fix.py")
    ap.add_argument("--list", action="store_true", help="print the cases and stop")
    ap.add_argument("--rescore", action="store_true",
                    help="judge the workspaces the last run of each --only fixer left, run nothing")
    args = ap.parse_args()
    if not PAGES.is_dir():
        print(f"errindex: no error-index pages at {PAGES} (set PT_ERROR_INDEX)", file=sys.stderr)
        return 2
    cs = cases(args.codes, args.all_examples, args.limit)
    if args.list:
        for c in cs:
            print(c["id"], c["code"], c["edition"], sep="\t")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    ids = {c["id"] for c in cs}
    runs, ran = {}, []
    for name in [x for x in args.reuse.split(",") if x]:
        f = args.out / f"{name}.json"
        if not f.exists():
            print(f"errindex: --reuse {name}: no {f}", file=sys.stderr)
            return 2
        runs[name] = [r for r in json.loads(f.read_text()) if r["id"] in ids]
    for name in [x for x in args.only.split(",") if x and x not in runs]:
        if name not in FIXERS:
            print(f"errindex: unknown fixer {name!r} (one of {', '.join(FIXERS)})", file=sys.stderr)
            return 2
        rs, last = [], {}
        if args.rescore:
            f = args.out / f"{name}.json"
            last = {r["id"]: r for r in json.loads(f.read_text())} if f.exists() else {}
        for i, c in enumerate(cs, 1):
            d = args.out / "work" / name / c["id"]  # per --out: runs side by side never share one
            if args.rescore and c["id"] in last and d.is_dir():
                r = last[c["id"]] | score(d, c)
            else:
                r = run_case(d, name, c, args.corpus, args.timeout)
            rs.append(r)
            log(f"{name} {i}/{len(cs)} {c['id']}: {'ok' if r['ok'] else 'compiles' if r['compiles'] else 'no'}"
                f"{' BROKEN' if r['broken'] else ''} ({r['secs']} s)")
        (args.out / f"{name}.json").write_text(json.dumps(rs, indent=1))
        runs[name], ran = rs, ran + [name]
    text = report(runs, cs, ran)
    (args.out / "REPORT.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
