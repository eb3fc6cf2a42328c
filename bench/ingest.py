#!/usr/bin/env python3
"""Ingest benchmark: `pt ingest` on >= 1M lines of real Rust, next to its floors.

The corpus is a set of Debian `librust-*-dev` packages (bench/ingest_crates.txt, installed by
bench/setup_corpus.sh) whose crate sources sit in /usr/share/cargo/registry/. They are laid out
as ONE cargo workspace in a scratch directory, so `pt` sees what a user's large workspace looks
like: many members, `cargo metadata` that resolves offline, .gitignore files, build scripts.

Measured in one run (DESIGN.md §5 asks for ratios measured together):
  * lines / files of the members' .rs files (.gitignore honoured, target/ skipped),
  * bare tree-sitter parse of those files, one process, `parser.parse(bytes)` only: the floor,
  * universal-ctags `-R` over the same tree, for comparison,
  * cold `pt ingest` (CLI) wall time, its ratio to the bare parse, peak memory,
  * no-change re-ingest (CLI),
  * node / edge counts by kind (`pt query counts`),
  * latency of one edited file reaching the graph (in-process `ingest(paths=[...])`), p50/p95.

Every figure printed is measured in this run; parts that cannot run say so and why.

Usage:
  bench/setup_corpus.sh                       # once per machine (root; apt)
  .venv/bin/python bench/ingest.py            # plain text
  .venv/bin/python bench/ingest.py --json     # one JSON object on stdout
  .venv/bin/python bench/ingest.py --ray      # cold ingest local vs Ray 1 and 2 nodes (root: unshare -n)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CRATES = HERE / "ingest_crates.txt"
DEFAULT_WS = Path("/tmp/pt-bench/ingest-ws")
REGISTRY = Path("/usr/share/cargo/registry")
# Written into the scratch workspace so we only ever delete a directory this script made.
MARKER = ".pt-bench-ws"

# Targets (issue 17, 2 cores), printed next to the measurements; every absolute figure is shown
# with its ratio to the bare parse or the store floor of the same run (a shared machine's load
# inflates all of them alike).
TARGET_COLD_S = 25.0         # cold ingest <= 25 s
TARGET_FIRST_SEARCH_S = 5.0  # the first search after it <= 5 s
TARGET_NOCHANGE_S = 2.0      # no-change re-ingest < 2 s
TARGET_ONE_FILE_P95_MS = 100.0  # one changed file reflected in the graph, p95 < 100 ms ...
TARGET_ONE_FILE_MAX_MS = 250.0  # ... and max < 250 ms
TARGET_RSS_MB = 1024.0       # peak RSS <= 1 GB
TARGET_FIRST_FIX_RATIO = 2.0  # time to a first fix from cold <= 2x the crate's own cold cargo check


def log(msg: str) -> None:
    """Progress goes to stderr so `--json` keeps stdout machine-readable."""
    print(f"[ingest-bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Corpus: apt package -> crate directory in the Debian registry
# --------------------------------------------------------------------------------------------

def read_package_list(path: Path) -> list[str]:
    """Workspace members: one apt package per line. Lines starting with `dep:` name packages that
    only have to be installed for `cargo metadata` to resolve (bench/setup_corpus.sh reads them)."""
    pkgs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("dep:"):
            pkgs.append(line)
    return pkgs


def crate_dir_of(pkg: str) -> Path:
    """The registry directory a librust-*-dev package installed (dpkg knows; names don't map 1:1,
    e.g. librust-serde-json-dev -> serde_json-1.0.87)."""
    try:
        out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"package {pkg} is not installed: run bench/setup_corpus.sh")
    dirs = [Path(l) for l in out.splitlines() if re.fullmatch(re.escape(str(REGISTRY)) + r"/[^/]+", l)]
    if len(dirs) != 1:
        raise SystemExit(f"{pkg}: expected one crate directory under {REGISTRY}, found {dirs}")
    return dirs[0]


# --------------------------------------------------------------------------------------------
# Workspace layout
# --------------------------------------------------------------------------------------------

def _header_keys(header: str) -> list[str]:
    """Split a TOML table header body (`target."cfg(unix)".dev-dependencies.libc`) on the dots
    that are outside quotes."""
    keys, cur, quote = [], "", None
    for ch in header:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            keys.append(cur.strip())
            cur = ""
        else:
            cur += ch
    keys.append(cur.strip())
    return keys


HEADER_RE = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(#.*)?$")


def _drop_table(keys: list[str], array: bool) -> bool:
    """Which tables of a member's Cargo.toml to remove, and why:
    - dev-dependencies (plain or target-specific): Debian does not ship most of them, and cargo
      resolves them even for `cargo metadata`;
    - [[test]] / [[bench]] / [[example]]: they name dev-only files Debian strips, and require
      dev-dependencies;
    - [workspace] / [patch] / [profile]: only the workspace root may carry these (a member with
      [workspace] is a second root, an error; [patch]/[profile] would be ignored with warnings).
    """
    if array and keys[0] in ("test", "bench", "example"):
        return True
    if "dev-dependencies" in keys or "dev_dependencies" in keys:
        return True
    return keys[0] in ("workspace", "patch", "profile")


# Keys of a member's [package] that only mean something at the workspace root: `workspace`
# would point the member at another root, `resolver` is ignored there with a warning.
ROOT_ONLY_PACKAGE_KEYS = re.compile(r"^\s*(workspace|resolver)\s*=")


def strip_manifest(text: str) -> str:
    out, dropping, table = [], False, None
    for line in text.splitlines(keepends=True):
        m = HEADER_RE.match(line)
        if m and not line.lstrip().startswith("#"):
            keys = _header_keys(m.group(2))
            table = keys
            dropping = _drop_table(keys, m.group(1) == "[[")
        if dropping or (table == ["package"] and ROOT_ONLY_PACKAGE_KEYS.match(line)):
            continue
        out.append(line)
    result = "".join(out)
    tomllib.loads(result)  # the rewrite must still be valid TOML
    return result


def layout(ws: Path, crates: list[tuple[str, Path]]) -> list[dict]:
    """Copy each crate to crates/<name>/, fix its manifest, write the workspace root."""
    if ws.exists():
        if not (ws / MARKER).exists():
            raise SystemExit(f"{ws} exists and was not made by this benchmark; pick another --ws")
        shutil.rmtree(ws)
    (ws / "crates").mkdir(parents=True)
    (ws / MARKER).write_text("scratch workspace of bench/ingest.py; safe to delete\n")

    members = []
    for pkg, src in crates:
        manifest = tomllib.loads((src / "Cargo.toml").read_text())
        name, version = manifest["package"]["name"], manifest["package"]["version"]
        if any(m["name"] == name for m in members):
            raise SystemExit(f"two packages named {name} in {[pkg]}: cargo allows one per workspace")
        dst = ws / "crates" / name
        # debian/ is packaging (patches already applied), the checksum file is for directory
        # sources only; neither is part of a real checkout.
        shutil.copytree(src, dst, symlinks=True,
                        ignore=lambda d, names: [n for n in names if Path(d) == src
                                                 and n in ("debian", ".cargo-checksum.json")])
        (dst / "Cargo.toml").write_text(strip_manifest((src / "Cargo.toml").read_text()))
        members.append({"package": pkg, "name": name, "version": version, "path": f"crates/{name}"})

    member_list = "\n".join(f'    "{m["path"]}",' for m in members)
    # [patch.crates-io] points every dependency on a member crate at the member itself, as in
    # a real workspace whose crates depend on each other by path. Without it cargo would also
    # pull the registry copy of the same name+version: two `syn 1.0.107` packages, and a crate
    # with a `links` key (native library) claimed twice, which cargo rejects.
    patches = "\n".join(f'{m["name"]} = {{ path = "{m["path"]}" }}' for m in members)
    (ws / "Cargo.toml").write_text(
        "# Generated by bench/ingest.py from Debian librust-*-dev sources.\n"
        f"[workspace]\nresolver = \"2\"\nmembers = [\n{member_list}\n]\n\n"
        f"[patch.crates-io]\n{patches}\n")
    (ws / ".cargo").mkdir()
    (ws / ".cargo" / "config.toml").write_text(
        "# Offline: dependencies come from the Debian registry directory.\n"
        "[source.crates-io]\nreplace-with = \"vendored\"\n\n"
        f"[source.vendored]\ndirectory = \"{REGISTRY}\"\n\n"
        "[net]\noffline = true\n\n"
        "# Members are registry crates: their lints are capped as cargo caps a dependency's (serde\n"
        "# 1.0.152's deny(unused_imports) is an error under a newer rustc otherwise).\n"
        "[build]\nrustflags = [\"--cap-lints\", \"warn\"]\n")
    (ws / ".gitignore").write_text("target/\n.parseltongue/\n")
    # A git repository, like a user's checkout: the crates' own .gitignore files then mean what
    # they mean to git, and `git ls-files` is the reference list of files.
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    return members


def cargo_metadata(ws: Path, no_deps: bool) -> tuple[float, dict]:
    cmd = ["cargo", "metadata", "--offline", "--format-version", "1"] + (["--no-deps"] if no_deps else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    return dt, json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------
# Files, lines, bare parse, ctags
# --------------------------------------------------------------------------------------------

def list_rs_files(ws: Path) -> list[str]:
    """.rs files under crates/, as git sees them: tracked or untracked-but-not-ignored. This honours
    every .gitignore (root and nested) and skips target/ through the root .gitignore."""
    out = subprocess.run(["git", "-C", str(ws), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard", "--", "crates/*.rs"],
                         capture_output=True, check=True).stdout
    files = sorted(p for p in out.decode().split("\0") if p.endswith(".rs"))
    return [f for f in files if "/target/" not in f]


def count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def rust_parser():
    import tree_sitter
    import tree_sitter_rust

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_rust.language()))


def bare_parse(blobs: list[bytes]) -> dict:
    """The floor: tree-sitter parse of every file in one process, nothing else. Files are read
    beforehand so disk I/O is not part of it."""
    parser = rust_parser()
    per_file = []
    c0, w0 = time.process_time(), time.perf_counter()
    for data in blobs:
        t = time.perf_counter()
        parser.parse(data)
        per_file.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    per_file.sort()
    return {"cpu_s": cpu, "wall_s": wall,
            "file_median_ms": 1000 * statistics.median(per_file),
            "file_max_ms": 1000 * per_file[-1]}


def run_measured(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run a child; return wall time, CPU time, peak RSS (largest single process, from wait4),
    and peak RSS of the whole process tree (sampled at 20 Hz: `pt` may use worker processes),
    plus its stdout/stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        tree_peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                tree_peak[0] = max(tree_peak[0], _session_rss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
        out.seek(0), err.seek(0)
        return {"rc": proc.returncode, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
                "max_rss_mb": ru.ru_maxrss / 1024, "tree_rss_mb": tree_peak[0] / 1024,
                "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


def _session_rss_kb(sid: int) -> int:
    """Sum of VmRSS over processes in session `sid` (the child was started in its own session)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid:  # field 6 (session) overall; index 3 after "pid (comm)"
                continue
            with open(f"/proc/{d}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            continue  # process exited while we looked
    return total


def run_ctags(ws: Path) -> dict:
    ctags = shutil.which("ctags")
    if not ctags:
        return {"error": "ctags not found (bench/setup_corpus.sh installs universal-ctags)"}
    ver = subprocess.run([ctags, "--version"], capture_output=True, text=True).stdout
    if "Universal Ctags" not in ver:
        return {"error": f"{ctags} is not universal-ctags"}
    with tempfile.TemporaryDirectory() as tmp:
        tags = Path(tmp) / "tags"
        r = run_measured([ctags, "-R", "--languages=Rust", "--exclude=target", "--exclude=.git",
                          "-f", str(tags), "crates"], cwd=ws)
        if r["rc"] != 0:
            return {"error": f"ctags exit {r['rc']}: {r['stderr'][-500:]}"}
        n_tags = sum(1 for line in tags.open(errors="replace") if not line.startswith("!_"))
    return {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "tags": n_tags}


# --------------------------------------------------------------------------------------------
# pt ingest (CLI and in-process)
# --------------------------------------------------------------------------------------------

PT_EXE = Path(sys.executable).parent / "pt"  # the venv's console script; --pt overrides


def pt_exe() -> Path:
    return PT_EXE


def db_path(ws: Path) -> Path:
    return ws / ".parseltongue" / "graph.db"


def pt_cli(ws: Path, *args: str) -> dict:
    exe = pt_exe()
    if not exe.exists():
        raise RuntimeError(f"{exe} not found (pip install -e . in the venv)")
    r = run_measured([str(exe), "-C", str(ws), "--db", str(db_path(ws)), *args])
    if r["rc"] != 0:
        tail = (r["stderr"].strip().splitlines() or ["(no stderr)"])[-5:]
        raise RuntimeError(f"`pt {' '.join(args)}` exit {r['rc']}: " + " | ".join(tail))
    try:
        r["json"] = json.loads(r["stdout"])
    except json.JSONDecodeError as e:
        raise RuntimeError(f"`pt {' '.join(args)}` did not print JSON on stdout: {e}: "
                           f"{r['stdout'][:200]!r}")
    return r


def pt_ingest_cli(ws: Path, cold: bool) -> dict:
    if cold:
        # Remove the database (and SQLite's side files) so nothing is reused.
        for p in db_path(ws).parent.glob(db_path(ws).name + "*"):
            p.unlink()
    r = pt_cli(ws, "ingest", "--json")
    keep = ("files_total", "files_parsed", "files_unchanged", "files_removed", "nodes", "edges",
            "elapsed_s", "text_index", "timings")
    return {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "max_rss_mb": r["max_rss_mb"],
            "tree_rss_mb": r["tree_rss_mb"], "report": {k: r["json"].get(k) for k in keep}}


def store_floor(ws: Path) -> dict:
    """What storing the finished graph costs with no rules at all: every row of the cold graph's
    relations (exported from it) bulk-imported by Cozo (`import_relations`, which keeps the
    indexes) into a new sqlite store with pt's schema, in one process. Any ingest that keeps
    this graph in Cozo on sqlite pays at least this; the rules' work comes on top."""
    from pycozo.client import Client

    from parseltongue.adapters.store import Store
    from parseltongue.runner.api import Pt

    src = Client("sqlite", str(db_path(ws)), dataframe=False)
    try:
        names = [r[0] for r in src.run("::relations")["rows"] if ":" not in r[0]]
        data = {k: v for k, v in src.export_relations(names).items() if v["rows"]}
        # each plain index holds one row per row of its relation (full-text and HNSW ones differ)
        plain = {k: sum(1 for r in src.run(f"::indices {k}")["rows"] if r[1] == "normal") for k in data}
    finally:
        src.close()
    with tempfile.TemporaryDirectory(prefix="pt-floor-") as tmp:
        db = Path(tmp) / "graph.db"
        store = Store("sqlite", db)  # a new file: the journal mode a cold `pt ingest` writes in
        try:
            Pt(ws, store).ensure_schema()
        finally:
            store.close()
        dst = Client("sqlite", str(db), dataframe=False)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            dst.import_relations(data)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        finally:
            dst.close()
        size = db.stat().st_size
    return {"wall_s": dt, "cpu_s": dc, "rows": sum(len(v["rows"]) for v in data.values()), "relations": len(data),
            "db_mb": size / 2**20,
            "by_relation": {k: {"rows": len(v["rows"]), "index_rows": len(v["rows"]) * plain[k]}
                            for k, v in sorted(data.items())},
            "index_rows": sum(len(v["rows"]) * plain[k] for k, v in data.items())}


def text_index_watch(ws: Path) -> dict:
    """After a cold `pt ingest` whose report says text_index "background": how long its child
    process builds the full-text index, from when `pt ingest` returned until the child lets go
    of the build's lock (a thread blocks on it, then releases it at once)."""
    import fcntl

    out: dict = {}
    t0 = time.perf_counter()

    def wait() -> None:
        fd = os.open(str(db_path(ws)) + ".text-index.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            out["wall_s"] = time.perf_counter() - t0
        finally:
            os.close(fd)

    out["thread"] = threading.Thread(target=wait, daemon=True)
    out["thread"].start()
    return out


def pt_first_search(ws: Path) -> dict:
    """`pt query search` after the ingests: when the cold ingest deferred the full-text index
    (report text_index "deferred"), this first reader builds it, so its time is that build; when
    `pt ingest` built it in the background ("background"; the bench waited for that build before
    the store floor, text_index_watch), it finds it built."""
    r = pt_cli(ws, "query", "search", "-p", "query=parse_header", "--json")
    doc = r.get("json") or {}
    # text_index: present when the answer came from a full-text index still being built
    return {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "rows": len(doc.get("rows") or []),
            "text_index": doc.get("text_index")}


def pt_counts(ws: Path) -> dict:
    return pt_cli(ws, "query", "counts", "--json")["json"]


def function_bodies(parser, data: bytes) -> list[int]:
    """Byte offsets just after the `{` of each error-free function body in a file."""
    tree = parser.parse(data)
    offsets, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_item":
            body = node.child_by_field_name("body")
            if body is not None and body.type == "block" and not node.has_error:
                offsets.append(body.start_byte + 1)
        stack.extend(node.children)
    return offsets


def _report_get(report, key):
    if isinstance(report, dict):
        return report.get(key)
    return getattr(report, key, None)


def one_file_latency(ws: Path, files: list[str], samples: int, seed: int, new_line: bool = False) -> dict:
    """Add a statement to a random function body in a random file, then time only the in-process
    `ingest(ws, store, paths=[rel])` that brings the edit into the graph. `new_line`: the statement
    gets a line of its own, as most edits do, so every later line number moves (and the call-site
    evidence of later items with it); otherwise it joins an existing line and only byte offsets
    move. Each file is restored (and re-ingested, untimed) before the next sample, so the tree
    ends as it started."""
    from parseltongue.adapters.store import open_store
    from parseltongue.runner.ingest import ingest

    rng = random.Random(seed)
    store = open_store(str(db_path(ws)))
    try:
        return _latency_samples(ws, store, ingest, files, samples, rng, new_line)
    finally:
        store.close()


def _latency_samples(ws, store, ingest, files, samples, rng, new_line=False) -> dict:
    parser = rust_parser()
    times, cpus, first_call, not_parsed = [], [], None, 0
    picked = set()
    # One untimed warm-up sample first: the first call may load and compile rule programs; it is
    # reported on its own rather than mixed into the percentiles.
    for i in range(samples + 1):
        while True:
            rel = rng.choice(files)
            if rel in picked:
                continue
            original = (ws / rel).read_bytes()
            bodies = function_bodies(parser, original)
            if bodies:
                break
        picked.add(rel)
        at = rng.choice(bodies)
        stmt = f"\n    let _pt_bench = {i};" if new_line else f" let _pt_bench = {i};"
        edited = original[:at] + stmt.encode() + original[at:]
        path = ws / rel
        try:
            path.write_bytes(edited)
            t0, c0 = time.perf_counter(), time.process_time()
            report = ingest(ws, store, paths=[rel])
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
        finally:
            path.write_bytes(original)
        ingest(ws, store, paths=[rel])  # restore the graph to the unedited file (untimed)
        if _report_get(report, "files_parsed") not in (None, 1):
            not_parsed += 1
        if i == 0:
            first_call = dt
        else:
            times.append(dt)
            cpus.append(dc)
    times.sort()
    cpus.sort()
    # CPU time of this process (Cozo runs the scripts in it): what an update costs when other
    # jobs load the machine and the wall clock mostly measures waiting for a core.
    return {"samples": len(times), "first_call_ms": 1000 * first_call,
            "p50_ms": 1000 * _percentile(times, 50), "p95_ms": 1000 * _percentile(times, 95),
            "max_ms": 1000 * times[-1],
            "cpu_p50_ms": 1000 * _percentile(cpus, 50), "cpu_p95_ms": 1000 * _percentile(cpus, 95),
            "cpu_max_ms": 1000 * cpus[-1],
            "reports_without_one_parsed_file": not_parsed}


# A fault the fix patterns undo, found in the crate's own code: `let mut v = Vec::new();` whose
# `v.push(` follows, made immutable (E0596, rustc suggests the `mut` back).
FAULT_RE = re.compile(rb"let mut ([a-z_][a-z0-9_]*) = Vec::new\(\);")


def inject_fault(ws: Path, crate_dir: str) -> tuple[str, bytes, int]:
    """-> (file, its original bytes, byte offset of the `mut ` removed), first site in file order."""
    for rel in sorted(p.relative_to(ws).as_posix() for p in (ws / crate_dir / "src").rglob("*.rs")):
        data = (ws / rel).read_bytes()
        for m in FAULT_RE.finditer(data):
            if data.find(m.group(1) + b".push(", m.end(), m.end() + 2000) >= 0:
                at = m.start() + len(b"let ")
                (ws / rel).write_bytes(data[:at] + data[at + len(b"mut "):])
                return rel, data, at
    raise RuntimeError(f"no `let mut v = Vec::new()` + `v.push(` site in {crate_dir}/src")


def first_fix(ws: Path, crate: str, crate_dir: str) -> dict:
    """Time to a first fix on a big, cold workspace: no graph, no mirror, nothing built. A fault is
    injected into the crate, `pt run fix --seed FILE --yes` runs (it ingests the seed's crate and
    the members it depends on, checks, fixes, applies); then the crate's own cold `cargo check`
    on the unbroken tree with a new target directory, the yardstick (target: fix <= 2x it); then
    the full `pt ingest` that adds the rest of the workspace to the graph."""
    rel, original, at = inject_fault(ws, crate_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "PT_CACHE_DIR")}
    try:
        for p in db_path(ws).parent.glob(db_path(ws).name + "*"):
            p.unlink()
        with tempfile.TemporaryDirectory(prefix="pt-bench-cache-") as cache:
            load0 = os.getloadavg()[0]
            r = run_measured([str(pt_exe()), "-C", str(ws), "--db", str(db_path(ws)), "run", "fix", "--seed", rel,
                              "--yes", "--llm", "none", "--json"], env={**env, "PT_CACHE_DIR": cache})
        try:
            rep = json.loads(r["stdout"])
        except json.JSONDecodeError:
            rep = {"outcome": f"exit {r['rc']}: " + " | ".join(r["stderr"].strip().splitlines()[-3:])}
        undone = (ws / rel).read_bytes() == original
    finally:
        (ws / rel).write_bytes(original)
    with tempfile.TemporaryDirectory(prefix="pt-bench-target-") as target:
        load1 = os.getloadavg()[0]
        c = run_measured(["cargo", "check", "--offline", "-p", crate, "--message-format=short"], cwd=ws,
                         env={**env, "CARGO_TARGET_DIR": target})
    rest = pt_ingest_cli(ws, cold=False)
    return {"crate": crate, "seed": rel, "fault_at": at, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
            "max_rss_mb": r["max_rss_mb"], "outcome": rep.get("outcome"), "fault_undone": undone,
            "timings": rep.get("timings"), "load_fix": load0,
            "cargo_check_s": c["wall_s"], "cargo_check_cpu_s": c["cpu_s"], "cargo_check_rc": c["rc"],
            "load_check": load1, "ratio_to_cargo_check": r["wall_s"] / c["wall_s"],
            "cpu_ratio_to_cargo_check": r["cpu_s"] / c["cpu_s"], "rest_ingest": rest}


def _percentile(sorted_vals: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every value is a real sample)."""
    k = max(0, min(len(sorted_vals) - 1, -(-len(sorted_vals) * pct // 100) - 1))
    return sorted_vals[int(k)]


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def measure(args) -> dict:
    res: dict = {"machine": {"cpus": os.cpu_count()}, "loadavg_start": list(os.getloadavg())}
    pkgs = read_package_list(args.crates)
    crates = [(p, crate_dir_of(p)) for p in pkgs]
    ws = args.ws

    members_file = ws / (MARKER + ".json")
    members = None
    if args.reuse and members_file.exists():
        members = json.loads(members_file.read_text())
        if [m["package"] for m in members] != pkgs:
            log("crate list changed since the workspace was laid out: laying it out again")
            members = None
    if members is not None:
        log(f"reusing workspace {ws}")
    else:
        log(f"laying out {len(crates)} crates as one workspace in {ws}")
        t0 = time.perf_counter()
        members = layout(ws, crates)
        members_file.write_text(json.dumps(members, indent=1))
        res["layout_s"] = time.perf_counter() - t0
    res["workspace"] = str(ws)

    log("cargo metadata --no-deps / full")
    dt_nodeps, meta = cargo_metadata(ws, no_deps=True)
    dt_full, full = cargo_metadata(ws, no_deps=False)
    res["cargo_metadata"] = {"no_deps_s": dt_nodeps, "full_s": dt_full,
                             "members": len(meta["workspace_members"]),
                             "packages_resolved": len(full["packages"])}

    files = list_rs_files(ws)
    blobs = [(ws / f).read_bytes() for f in files]
    per_crate: dict[str, int] = {}
    for f, b in zip(files, blobs):
        per_crate[f.split("/")[1]] = per_crate.get(f.split("/")[1], 0) + count_lines(b)
    by_name = {m["name"]: m for m in members}
    res["corpus"] = {
        "files": len(files), "lines": sum(per_crate.values()),
        "bytes": sum(len(b) for b in blobs),
        "crates": [{"name": n, "version": by_name[n]["version"], "package": by_name[n]["package"],
                    "lines": per_crate.get(n, 0)}
                   for n in sorted(by_name, key=lambda n: -per_crate.get(n, 0))],
    }

    log(f"bare tree-sitter parse of {len(files)} files")
    res["bare_parse"] = bare_parse(blobs)
    del blobs
    log("ctags -R")
    res["ctags"] = run_ctags(ws)

    if args.no_pt:
        res["pt"] = {"error": "skipped (--no-pt)"}
        return res
    pt: dict = {}
    res["pt"] = pt
    bg = None
    try:
        log("pt ingest (cold)")
        pt["cold"] = pt_ingest_cli(ws, cold=True)
        pt["cold"]["loadavg"] = os.getloadavg()[0]
        bg = text_index_watch(ws) if pt["cold"]["report"].get("text_index") == "background" else None
        if bg is not None:  # the floor reads the graph file: not while the child writes it
            # a search right after `pt ingest` returned: answered from the part built so far
            log("pt query search while the full-text index is built in the background")
            pt["search_during_build"] = pt_first_search(ws)
            log("waiting for the full-text index pt ingest builds in the background")
            bg["thread"].join()
            pt["text_index_background_s"] = bg.get("wall_s")
        pt["cold"]["ratio_to_bare_parse_wall"] = pt["cold"]["wall_s"] / res["bare_parse"]["wall_s"]
        log("store floor (the cold graph's rows bulk-imported into a new store, no rules)")
        try:  # in a child: the exported rows (GBs) would otherwise count in later children's RSS
            r = run_measured([sys.executable, str(Path(__file__).resolve()), "--ws", str(ws), "--store-floor"])
            if r["rc"] != 0:
                raise RuntimeError(r["stderr"].strip().splitlines()[-1] if r["stderr"].strip() else f"rc {r['rc']}")
            pt["floor"] = json.loads(r["stdout"])
            pt["floor"]["ratio_to_bare_parse_wall"] = pt["floor"]["wall_s"] / res["bare_parse"]["wall_s"]
        except Exception as e:  # noqa: BLE001
            pt["floor"] = {"error": f"{type(e).__name__}: {e}"}
        log("pt ingest (no change)")
        pt["nochange"] = pt_ingest_cli(ws, cold=False)
    except Exception as e:  # noqa: BLE001 - the contract is still being written; report and go on
        pt["error"] = f"{type(e).__name__}: {e}"
        return res
    try:
        log("pt query search (first full-text query: builds a deferred index)")
        pt["first_search"] = pt_first_search(ws)
        pt["first_search"]["loadavg"] = os.getloadavg()[0]
        pt["second_search"] = pt_first_search(ws)
    except Exception as e:  # noqa: BLE001
        pt["first_search"] = {"error": f"{type(e).__name__}: {e}"}
    try:
        pt["counts"] = pt_counts(ws)
    except Exception as e:  # noqa: BLE001
        pt["counts"] = {"error": f"{type(e).__name__}: {e}"}
    for seed in args.seeds:
        for new_line in (True, False):
            key = ("one_file" if new_line else "one_file_same_line") + f"_seed{seed}"
            try:
                log(f"one changed file ({'new line' if new_line else 'same line'}), seed {seed}, "
                    f"{args.samples} samples (+1 warm-up)")
                pt[key] = one_file_latency(ws, files, args.samples, seed, new_line=new_line)
                pt[key]["loadavg"] = os.getloadavg()[0]
            except Exception as e:  # noqa: BLE001
                pt[key] = {"error": f"{type(e).__name__}: {e}"}
    if args.first_fix:
        big = res["corpus"]["crates"][0]
        try:
            log(f"time to first fix from cold on the largest crate, {big['name']} (then its cold cargo check)")
            pt["first_fix"] = first_fix(ws, big["name"], by_name[big["name"]]["path"])
        except Exception as e:  # noqa: BLE001
            pt["first_fix"] = {"error": f"{type(e).__name__}: {e}"}
    res["loadavg_end"] = list(os.getloadavg())
    return res


def _fmt_counts(d) -> list[str]:
    """`pt query counts --json` output, whatever its exact shape: rows of a query result
    ({"headers", "rows"}) one per line, or {"nodes": {kind: n}, "edges": {kind: n}}."""
    if isinstance(d, dict) and isinstance(d.get("rows"), list):
        return ["    " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                                   for k, v in (row.items() if isinstance(row, dict) else
                                                enumerate(row)))
                for row in d["rows"]]
    if not isinstance(d, dict):
        return [f"    {json.dumps(d)}"]
    lines = []
    for key, val in d.items():
        if isinstance(val, dict):
            inner = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                              for k, v in sorted(val.items(), key=lambda kv: str(kv[0])))
            lines.append(f"    {key}: {inner}")
        else:
            lines.append(f"    {key}: {val}")
    return lines


def render(res: dict) -> str:
    c, bp = res["corpus"], res["bare_parse"]
    out = [f"Ingest benchmark  workspace {res['workspace']}  ({res['machine']['cpus']} CPUs)"]
    if "layout_s" in res:
        out.append(f"  layout: {res['layout_s']:.1f} s")
    cm = res["cargo_metadata"]
    out.append(f"  cargo metadata: --no-deps {cm['no_deps_s']:.2f} s, full {cm['full_s']:.2f} s "
               f"({cm['members']} members, {cm['packages_resolved']} packages resolved)")
    out.append(f"  corpus: {c['lines']:,} lines, {c['files']:,} files, {c['bytes'] / 1e6:.1f} MB "
               f"in {len(c['crates'])} crates")
    for cr in c["crates"]:
        out.append(f"    {cr['lines']:>9,}  {cr['name']} {cr['version']}")
    out.append(f"  bare tree-sitter parse: {bp['cpu_s']:.2f} s CPU, {bp['wall_s']:.2f} s wall "
               f"({c['lines'] / bp['wall_s'] / 1e3:.0f}k lines/s, {c['bytes'] / bp['wall_s'] / 1e6:.1f} MB/s); "
               f"per file median {bp['file_median_ms']:.2f} ms, max {bp['file_max_ms']:.1f} ms")
    ct = res["ctags"]
    out.append(f"  ctags -R: {ct['error']}" if "error" in ct else
               f"  ctags -R: {ct['wall_s']:.2f} s wall, {ct['cpu_s']:.2f} s CPU, {ct['tags']:,} tags")

    pt = res.get("pt", {})
    if "cold" not in pt:
        out.append(f"  pt ingest not available: {pt.get('error')}")
        return "\n".join(out)
    cold = pt["cold"]
    rep = cold["report"]
    ok = "meets" if cold["wall_s"] <= TARGET_COLD_S else "MISSES"
    rss_ok = "meets" if max(cold["max_rss_mb"], cold["tree_rss_mb"]) <= TARGET_RSS_MB else "MISSES"
    out.append(f"  load average at start {' '.join(f'{x:.2f}' for x in res.get('loadavg_start', []))}, "
               f"after the cold ingest {cold.get('loadavg', float('nan')):.2f}, at the end "
               f"{' '.join(f'{x:.2f}' for x in res.get('loadavg_end', []))}")
    out.append(f"  pt ingest cold: {cold['wall_s']:.2f} s wall, {cold['cpu_s']:.2f} s CPU = "
               f"{cold['ratio_to_bare_parse_wall']:.2f}x bare parse wall "
               f"(target <= {TARGET_COLD_S:g} s: {ok}); peak RSS {cold['max_rss_mb']:.0f} MB "
               f"largest process, {cold['tree_rss_mb']:.0f} MB process tree (target <= {TARGET_RSS_MB:g} MB: {rss_ok})")
    out.append(f"    report: " + ", ".join(f"{k} {v}" for k, v in rep.items()))
    fl = pt.get("floor", {})
    if "error" in fl:
        out.append(f"  store floor: n/a ({fl['error']})")
    elif fl:
        out.append(f"  store floor (the cold graph's {fl['rows']:,} rows in {fl['relations']} relations, "
                   f"{fl.get('index_rows', 0):,} index rows, bulk-imported into a new Cozo sqlite store, no "
                   f"rules): {fl['wall_s']:.2f} s = {fl['ratio_to_bare_parse_wall']:.2f}x bare parse wall; "
                   f"pt's cold ingest is {cold['wall_s'] / fl['wall_s']:.2f}x this floor; {fl['db_mb']:.0f} MB file")
        out.append(f"    in CPU time: floor {fl['cpu_s']:.2f} s = {fl['cpu_s'] / res['bare_parse']['cpu_s']:.2f}x bare parse "
                   f"CPU; cold ingest {cold['cpu_s']:.2f} s = {cold['cpu_s'] / res['bare_parse']['cpu_s']:.2f}x bare parse "
                   f"CPU = {cold['cpu_s'] / fl['cpu_s']:.2f}x the floor's")
        for name, n in (fl.get("by_relation") or {}).items():
            out.append(f"    {n['rows']:>10,} rows {n['index_rows']:>10,} index rows  {name}")
    if rep.get("files_total") not in (None, c["files"]):
        out.append(f"    note: pt saw {rep['files_total']} files, git ls-files lists {c['files']}")
    if "nochange" not in pt:  # the cold run worked, the rest did not
        out.append(f"  pt ingest no change: not available: {pt.get('error')}")
        return "\n".join(out)
    nc = pt["nochange"]
    ok = "meets" if nc["wall_s"] < TARGET_NOCHANGE_S else "MISSES"
    out.append(f"  pt ingest no change: {nc['wall_s']:.2f} s wall (target < {TARGET_NOCHANGE_S:g} s: "
               f"{ok}); files_parsed {nc['report'].get('files_parsed')}; peak RSS "
               f"{nc['max_rss_mb']:.0f} MB")
    if nc["report"].get("files_parsed"):
        out.append("    warning: a re-ingest of an unchanged tree parsed files (DESIGN.md §3: it "
                   "should touch nothing)")
    fs = pt.get("first_search", {})
    if "error" in fs:
        out.append(f"  first search: n/a ({fs['error']})")
    elif fs:
        ss = pt.get("second_search", {})
        ok = "meets" if fs["wall_s"] <= TARGET_FIRST_SEARCH_S else "MISSES"
        out.append(f"  first `pt query search` after them: {fs['wall_s']:.2f} s wall, {fs['cpu_s']:.2f} s CPU "
                   f"= {fs['wall_s'] / res['bare_parse']['wall_s']:.2f}x bare parse wall (target <= "
                   f"{TARGET_FIRST_SEARCH_S:g} s: {ok}; text_index {rep.get('text_index')}); second: "
                   f"{ss.get('wall_s', float('nan')):.2f} s wall")
        sd = pt.get("search_during_build")
        if sd:
            ti = sd.get("text_index") or {}
            ok = "meets" if sd["wall_s"] <= TARGET_FIRST_SEARCH_S else "MISSES"
            out.append(f"  `pt query search` right after the cold ingest returned, while the index is built: "
                       f"{sd['wall_s']:.2f} s wall, {sd['cpu_s']:.2f} s CPU (target <= {TARGET_FIRST_SEARCH_S:g} s: {ok}), "
                       + (f"answered from {ti.get('files_done')} of {ti.get('files_total')} files indexed so far"
                          if ti else "answered from the whole index"))
        if pt.get("text_index_background_s") is not None:
            out.append(f"  the full-text index, built by the child `pt ingest` started: done "
                       f"{pt['text_index_background_s']:.2f} s after the cold ingest returned (waited for before the "
                       f"store floor; a search right after `pt ingest` waits that long, the one above only for what is left)")
        out.append(f"  cold ingest + first search: {cold['wall_s'] + fs['wall_s']:.2f} s wall = "
                   f"{(cold['wall_s'] + fs['wall_s']) / res['bare_parse']['wall_s']:.2f}x bare parse wall")
    counts = pt.get("counts", {})
    if "error" in counts:
        out.append(f"  nodes/edges by kind: n/a ({counts['error']})")
    else:
        out.append("  nodes/edges by kind:")
        out.extend(_fmt_counts(counts))
    for key, one in pt.items():
        if not key.startswith("one_file"):
            continue
        kind, _, seed = key.partition("_seed")
        what = (f"one changed file -> graph (statement added {'to an existing line' if 'same' in kind else 'on a line of its own'}"
                f"{', seed ' + seed if seed else ''})")
        if "error" in one:
            out.append(f"  {what}: n/a ({one['error']})")
            continue
        ok = "meets" if one["p95_ms"] < TARGET_ONE_FILE_P95_MS and one["max_ms"] < TARGET_ONE_FILE_MAX_MS else "MISSES"
        out.append(f"  {what}, in-process, N={one['samples']}: p50 "
                   f"{one['p50_ms']:.1f} ms, p95 {one['p95_ms']:.1f} ms, max {one['max_ms']:.1f} ms "
                   f"(target p95 < {TARGET_ONE_FILE_P95_MS:g} ms, max < {TARGET_ONE_FILE_MAX_MS:g} ms: {ok}); "
                   f"first call {one['first_call_ms']:.1f} ms; load {one.get('loadavg', float('nan')):.2f}")
        out.append(f"    CPU time: p50 {one['cpu_p50_ms']:.1f} ms, p95 {one['cpu_p95_ms']:.1f} ms, max {one['cpu_max_ms']:.1f} ms")
        if one["reports_without_one_parsed_file"]:
            out.append(f"    warning: {one['reports_without_one_parsed_file']} reports did not say "
                       f"files_parsed == 1")
    ff = pt.get("first_fix")
    if ff and "error" in ff:
        out.append(f"  time to first fix from cold: n/a ({ff['error']})")
    elif ff:
        ok = "meets" if ff["ratio_to_cargo_check"] <= TARGET_FIRST_FIX_RATIO and ff["outcome"] == "fixed" else "MISSES"
        rest = ff["rest_ingest"]
        out.append(f"  time to first fix from cold, largest crate {ff['crate']} (seed {ff['seed']}, `mut` removed at "
                   f"byte {ff['fault_at']}): {ff['wall_s']:.1f} s wall, outcome {ff['outcome']}, fault undone "
                   f"{ff['fault_undone']} (load {ff['load_fix']:.2f}); the crate's own cold cargo check "
                   f"{ff['cargo_check_s']:.1f} s (rc {ff['cargo_check_rc']}, load {ff['load_check']:.2f}): "
                   f"{ff['ratio_to_cargo_check']:.2f}x (target <= {TARGET_FIRST_FIX_RATIO:g}x: {ok})")
        out.append(f"    in CPU time (with cargo's and rustc's): fix {ff['cpu_s']:.1f} s, cargo check "
                   f"{ff['cargo_check_cpu_s']:.1f} s: {ff['cpu_ratio_to_cargo_check']:.2f}x")
        out.append(f"    fix timings: {ff.get('timings')}")
        out.append(f"    then the rest of the workspace (`pt ingest`): {rest['wall_s']:.1f} s wall, "
                   f"{rest['report'].get('files_parsed')} files parsed, peak RSS {rest['max_rss_mb']:.0f} MB")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Local vs Ray (--ray): the same cold ingest with the parse step on a Ray cluster of 1 and 2 nodes
# --------------------------------------------------------------------------------------------

def ray_vs_local(ws: Path) -> dict:
    """Cold `pt ingest` three ways, each into a new graph: local (process pool), `--ray-address`
    to one node with all the cores, and to two nodes sharing them. Ray runs only inside a
    loopback-only network + PID namespace: this re-runs itself under `unshare -n -p`."""
    if os.environ.get("PT_BENCH_NETNS") != "1":
        if os.geteuid() != 0 or not shutil.which("unshare"):
            raise RuntimeError("--ray needs root and unshare: Ray runs only in a loopback-only network namespace")
        inner = (f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} --ray --ws {ws} "
                 f"--pt {pt_exe()} --json")
        r = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", inner],
                           env={**os.environ, "PT_BENCH_NETNS": "1"}, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"the namespaced run failed: {r.stderr.strip()[-2000:]}")
        return json.loads(r.stdout)
    from parseltongue.adapters.ray_runtime import local_cluster

    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="pt-bench-ray-"))

    def cold(label: str, extra: list[str], env: dict) -> dict:
        log(f"cold pt ingest: {label}")
        db = scratch / f"{label}.db"
        r = run_measured([str(pt_exe()), "-C", str(ws), "--db", str(db), "ingest", "--json", *extra],
                         env={**os.environ, "PT_DOBBY": "0", **env})
        if r["rc"] != 0:
            raise RuntimeError(f"{label}: exit {r['rc']}: {r['stderr'].strip()[-800:]}")
        rep = json.loads(r["stdout"])
        return {"wall_s": r["wall_s"], "parse_write_s": rep["timings"].get("parse_write_s"),
                "nodes": rep["nodes"], "edges": rep["edges"], "files_parsed": rep["files_parsed"]}

    try:
        res = {"cores": cores, "local": cold("local", [], {})}
        with local_cluster(nodes=1, cpus_per_node=cores) as c:
            res["ray_1_node"] = cold("ray_1_node", ["--ray-address", c["address"]], c["env"])
        with local_cluster(nodes=2, cpus_per_node=max(1, cores // 2)) as c:
            res["ray_2_nodes"] = cold("ray_2_nodes", ["--ray-address", c["address"]], c["env"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for k in ("ray_1_node", "ray_2_nodes"):
        res[k]["ratio_to_local"] = res[k]["wall_s"] / res["local"]["wall_s"]
        res[k]["same_graph_size"] = (res[k]["nodes"], res[k]["edges"]) == (res["local"]["nodes"], res["local"]["edges"])
    return res


def render_ray(res: dict) -> str:
    lines = [f"cold pt ingest, local vs parse on Ray ({res['cores']} cores, all nodes on this machine):"]
    for k in ("local", "ray_1_node", "ray_2_nodes"):
        r = res[k]
        extra = f"  {r['ratio_to_local']:.2f}x local, same graph size: {r['same_graph_size']}" if k != "local" else ""
        lines.append(f"  {k:<12} {r['wall_s']:7.1f} s  (parse+write {r['parse_write_s']:.1f} s; "
                     f"{r['nodes']} nodes, {r['edges']} edges){extra}")
    return "\n".join(lines)


def main() -> int:
    global PT_EXE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ws", type=Path, default=DEFAULT_WS, help=f"scratch workspace (default {DEFAULT_WS})")
    ap.add_argument("--crates", type=Path, default=DEFAULT_CRATES, help="apt package list")
    ap.add_argument("--samples", type=int, default=200, help="one-changed-file samples per seed (default 200)")
    ap.add_argument("--seed", type=int, default=7, help="random seed for the files edited (--only-one-file)")
    ap.add_argument("--seeds", default="7,8,9", help="random seeds of the one-changed-file samples (default 7,8,9)")
    ap.add_argument("--no-first-fix", dest="first_fix", action="store_false",
                    help="skip the time to a first fix from cold (and its cold cargo check)")
    ap.add_argument("--reuse", action="store_true", help="keep an existing scratch workspace")
    ap.add_argument("--no-pt", action="store_true", help="only the corpus, bare parse and ctags")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--pt", type=Path, default=PT_EXE, help=f"pt executable (default {PT_EXE})")
    ap.add_argument("--only-one-file", action="store_true",
                    help="only the one-changed-file latency, on the graph an earlier run left in --ws")
    ap.add_argument("--same-line", action="store_true",
                    help="with --only-one-file: add the statement to an existing line (no line number moves)")
    ap.add_argument("--only-first-fix", action="store_true",
                    help="only the time to a first fix from cold on the largest crate, on the workspace an earlier run laid out")
    ap.add_argument("--store-floor", action="store_true", help=argparse.SUPPRESS)  # the child of measure()
    ap.add_argument("--ray", action="store_true",
                    help="only cold ingest local vs Ray 1 and 2 nodes, on the workspace an earlier run laid out in --ws")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    PT_EXE = args.pt
    args.ws = args.ws.resolve()
    if args.ray:
        if not (args.ws / MARKER).exists():
            print(f"error: no benchmark workspace at {args.ws}: run without --ray first (or --no-pt)", file=sys.stderr)
            return 1
        try:
            res = ray_vs_local(args.ws)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(json.dumps(res, indent=1) if args.json else render_ray(res))
        return 0
    if args.store_floor:
        print(json.dumps(store_floor(args.ws)))
        return 0
    if args.only_first_fix:
        if not (args.ws / MARKER).exists():
            print(f"error: no benchmark workspace at {args.ws}: run without --only-first-fix first", file=sys.stderr)
            return 1
        members = json.loads((args.ws / (MARKER + ".json")).read_text())
        lines = {m["name"]: sum(count_lines((args.ws / f).read_bytes()) for f in list_rs_files(args.ws)
                                if f.startswith(m["path"] + "/")) for m in members}
        big = max(members, key=lambda m: lines[m["name"]])
        ff = first_fix(args.ws, big["name"], big["path"])
        ff["loadavg_end"] = list(os.getloadavg())
        print(json.dumps(ff, indent=1))
        return 0
    if args.only_one_file:
        if not db_path(args.ws).exists():
            print(f"error: no graph at {db_path(args.ws)}: run without --only-one-file first", file=sys.stderr)
            return 1
        one = one_file_latency(args.ws, list_rs_files(args.ws), args.samples, args.seed, not args.same_line)
        load = os.getloadavg()
        one["loadavg"] = [round(x, 2) for x in load]
        if args.json:
            print(json.dumps(one, indent=1))
        else:
            print(f"one changed file -> graph (in-process, N={one['samples']}): p50 {one['p50_ms']:.1f} ms, "
                  f"p95 {one['p95_ms']:.1f} ms, max {one['max_ms']:.1f} ms; CPU p50 {one['cpu_p50_ms']:.1f} ms, "
                  f"p95 {one['cpu_p95_ms']:.1f} ms, max {one['cpu_max_ms']:.1f} ms; first call "
                  f"{one['first_call_ms']:.1f} ms; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        return 0
    try:
        res = measure(args)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=1) if args.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
