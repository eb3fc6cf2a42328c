"""The ingest flow: workspace files -> tree-sitter facts -> `rules/ingest/*` programs.

Python does the effects (walk, stat, hash, parse in parallel, batch rows); the rules do the
thinking (module paths, per-file replace, edge resolution, confidence, staleness).

    from parseltongue.runner.ingest import ingest
    report = ingest(workspace_path, store)                       # whole workspace, incremental
    report = ingest(workspace_path, store, paths=["src/a.rs"])   # just these files
    report = ingest(workspace_path, store, crates=["app", "geo"])  # only these crates' files
    report = ingest_for_seed(workspace_path, store, "app/src/main.rs")  # a cold graph: the seed's crate first
"""
from __future__ import annotations

import os
import re
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import blake3

from ..adapters import cargo, fs
from ..adapters.store import Store, StoreError
from ..adapters.treesitter import BinaryFileError, FileFacts, NotUtf8Error, extract
from . import edit_region
from . import programs as P
from . import text_index
from .api import Pt, named_files, workspace_path
from .errors import UsageError
from .output import progress_counter

WRITE_BATCH_FILES = 300  # files per replace transaction (SQLite pays ~30 ms per commit)
RESOLVE_BATCH_FILES = 200  # files per edge-resolution run (cost is linear in the batch; this bounds memory)
PARALLEL_MIN_FILES = 24  # below this a process pool costs more than it saves
TEXT_DEFER_MIN_FILES = 1000  # from this many files on, the full-text index waits for its first reader
DERIVE_WAVE_PER_JOB = 4  # cold ingest: resolve batches derived per thread between two writes of their edges
PARSE_CHUNK_FILES = 16  # files per task of the parse pool
PARSE_AHEAD_FILES = 2 * WRITE_BATCH_FILES  # parsed files held ahead of the writer at most


@dataclass
class IngestReport:
    files_total: int = 0
    files_parsed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: list = field(default_factory=list)  # [path, reason]
    files_resolved: int = 0
    parse_errors: int = 0
    nodes: int = 0
    edges: int = 0
    elapsed_s: float = 0.0
    text_index: str = "updated"  # or "deferred" (built by the first reader), "background" (pt ingest started its build)
    scoped: list = field(default_factory=list)  # the crates of a crate-scoped ingest (others left out)
    timings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ layout

def file_crate_rows(layout: cargo.Layout, files: Iterable[str]) -> dict[str, list]:
    """[file_path, crate, in_target, root_dir, is_test_dir] by the nearest member and target dir."""
    members = sorted((c for c in layout.crates if c.is_member), key=lambda c: len(c.root), reverse=True)
    target_dirs = sorted({(t.crate, t.root_dir) for t in layout.targets}, key=lambda x: len(x[1]), reverse=True)
    fallback = members[-1].name if members else layout.root.name
    rows = {}
    for f in files:
        crate = next((c for c in members if not c.root or f.startswith(c.root + "/")), None)
        name = crate.name if crate else fallback
        root = next((d for cr, d in target_dirs if cr == name and (not d or f.startswith(d + "/"))), None)
        within = f[len(crate.root) + 1:] if crate and crate.root else f
        is_test_dir = within.startswith(("tests/", "benches/"))
        rows[f] = [f, name, root is not None, root or "", is_test_dir]
    return rows


def crate_scope(layout: cargo.Layout, rel: str) -> list[str]:
    """The member crate of file `rel` and the members it depends on, transitively (by name; a
    dependency renamed in its manifest is matched by its new name, `-` and `_` alike)."""
    members = {c.name.replace("-", "_"): c for c in layout.crates if c.is_member}
    own = file_crate_rows(layout, [rel])[rel][1]
    todo, seen = [own.replace("-", "_")], set()
    while todo:
        key = todo.pop()
        if key in seen or key not in members:
            continue
        seen.add(key)
        todo.extend(d.replace("-", "_") for d in members[key].deps)
    return sorted(members[k].name for k in seen)


def discover(workspace: Path, use_cargo: bool) -> cargo.Layout:
    if not use_cargo:
        return cargo.plain_layout(workspace)
    try:
        return cargo.metadata(workspace)
    except cargo.CargoError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------ parsing

def _parse_one(args: tuple[str, str]) -> tuple[str, FileFacts | None, str, str, int, float]:
    """Worker: read, hash and extract one file. Returns (path, facts, hash, error, size, mtime)."""
    root, rel = args
    try:
        data, st = _read(root, rel)
    except OSError as exc:
        return rel, None, "", f"unreadable: {exc.strerror}", 0, 0.0
    return parse_bytes(rel, data, st.st_size, st.st_mtime)


def _read(root: str, rel: str) -> tuple[bytes, os.stat_result]:
    path = os.path.join(root, rel)
    st = os.stat(path)
    with open(path, "rb") as fh:
        return fh.read(), st


def parse_bytes(rel: str, data: bytes, size: int, mtime: float) -> tuple[str, FileFacts | None, str, str, int, float]:
    """Hash and extract one file's bytes (wherever they were read: a Ray node gets them sent)."""
    digest = blake3.blake3(data).hexdigest()
    try:
        return rel, extract(rel, data), digest, "", size, mtime
    except (NotUtf8Error, BinaryFileError) as exc:
        return rel, None, digest, str(exc).split(": ", 1)[-1], size, mtime


def _parse_iter(root: Path, files: list[str], jobs: int, parse_map=None) -> Iterator[tuple]:
    """Parse results in file order, as they come (in worker processes for many files, or over
    a Ray cluster when `parse_map(root, files)` is given: runner/dobby/ingest_ray.py)."""
    if parse_map is not None:
        yield from parse_map(root, files)
        return
    args = [(str(root), f) for f in files]
    if len(files) < PARALLEL_MIN_FILES or jobs <= 1:
        for a in args:
            yield _parse_one(a)
        return
    # Parsing runs ahead of the writer (it is ~7x faster), so it is kept on a leash: at most
    # PARSE_AHEAD_FILES parsed files wait for the writer. (Executor.map submits every file at
    # once, and the facts of a 1.29M-line workspace piled up: peak RSS 1,015 -> 825 MB.)
    chunks = [args[i:i + PARSE_CHUNK_FILES] for i in range(0, len(args), PARSE_CHUNK_FILES)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        todo = iter(chunks)
        waiting = deque(pool.submit(_parse_chunk, c) for c in islice(todo, max(jobs, PARSE_AHEAD_FILES // PARSE_CHUNK_FILES)))
        while waiting:
            done = waiting.popleft().result()
            after = next(todo, None)
            if after is not None:
                waiting.append(pool.submit(_parse_chunk, after))
            yield from done


def _parse_chunk(args: list[tuple[str, str]]) -> list[tuple]:
    return [_parse_one(a) for a in args]


def _parse_all(root: Path, files: list[str], jobs: int, progress) -> list[tuple]:
    out = []
    for res in _parse_iter(root, files, jobs):
        out.append(res)
        progress(1)
    return out


def _qual(path: str) -> str:
    """`a::b::f` -> `b`: the segment that qualifies the callee (empty for a bare name)."""
    parts = path.split("::")
    return parts[-2] if len(parts) > 1 else ""


class _Rows:
    """Accumulates the `ingest.replace_files` params for a batch of files: the adapter's facts in
    the stored shape (call sites relative to their caller, only the columns programs read)."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.p: dict[str, list] = {k: [] for k in ("nodes", "code", "calls", "uses", "type_refs", "impls",
                                                   "bounds", "file_state", "file_crate", "partial", "redo",
                                                   "shifted")}

    def add(self, rel: str, facts: FileFacts | None, digest: str, size: int, mtime: float,
            fc_row: list, now: float, region: edit_region.Region | None = None) -> None:
        self.files.append(rel)
        p = self.p
        p["file_crate"].append(fc_row)
        p["file_state"].append([rel, digest, size, mtime, facts.parse_error_count if facts else 0, now])
        if facts is None:
            return
        if region is not None:  # the facts are the edited region's: the rule keeps the rest
            p["partial"].append([rel, region.byte_shift, region.line_shift])
            p["redo"].extend([rel, i] for i in region.redo)
            if region.byte_shift or region.line_shift:
                p["shifted"].extend([rel, i] for i in region.shifted)
        p["nodes"].extend(facts.nodes)
        recovered = {n[0] for n in facts.nodes if n[21]}
        p["code"].extend([i, c, i in recovered] for i, c in facts.code)
        # A call site's offsets and line count from its caller's start: the row stays the same
        # when lines are added above the caller (an edit rewrites no call site after it).
        at = {n[0]: (n[15], n[17]) for n in facts.nodes}
        calls = p["calls"]
        for caller, path, name, _recv, kind, s, e, line, _in_macro in facts.calls:
            cs, cl = at.get(caller, (0, 1))
            calls.append([rel, caller, s - cs, path, name, _qual(path), kind, e - cs, line - cl])
        p["uses"].extend([rel, u[2], u[3], u[4]] for u in facts.uses)  # path, name, alias
        p["type_refs"].extend([rel, t[0], t[1], t[2]] for t in facts.type_refs)  # item, path, name
        p["impls"].extend([rel, i[0], i[1], i[2], i[4]] for i in facts.impls)  # impl, trait path / name, self name
        p["bounds"].extend([rel, *b] for b in facts.bounds)

    def params(self) -> dict:
        return {"files": self.files, **self.p}


# ------------------------------------------------------------------ the flow

Step = tuple  # (program id, params, vars) of a writer program


def _run_together(pt: Pt, steps: list[Step]) -> None:
    """Run writer programs as one script, so in one transaction: every commit that changes the
    sqlite file writes each page it dirtied twice (rollback journal, then the file) and syncs;
    ~15 ms here for a few dozen scattered rows, as much as all the queries of a one-file update.
    Each program's `$params` are renamed apart (`$s0_files`, ...); ephemeral relations are
    `:replace`d by the program that uses them, so programs in sequence do not see stale ones.
    If the script fails, nothing was written: the steps run again one by one, for the error."""
    if len(steps) == 1:
        pt.run(*steps[0])
        return
    scripts, bound = [], {}
    for i, (name, params, vars_) in enumerate(steps):
        prog = pt.registry.get(name)
        b = P.bind_params(prog, params or {})
        script = P.render(pt.registry, prog, P.bind_vars(prog, vars_ or {}))
        P.check_access(prog, script, pt.relation_names())
        if b:
            script = re.sub(r"\$(" + "|".join(map(re.escape, b)) + r")\b", lambda m: f"$s{i}_{m.group(1)}", script)
            bound.update({f"s{i}_{k}": v for k, v in b.items()})
        scripts.append(P.as_block(P.drop_kept_size(prog, script, pt.relation_names())))
    try:
        pt.store.run("\n".join(scripts), bound)
    except StoreError:  # rolled back: one by one, the failing program raises its own error
        for step in steps:
            pt.run(*step)


class _Update:
    """One ingest's writes: batches of parsed files, then the edges out of what changed.

    Writes wait in `pending` and run as one script (one transaction, one commit): the last
    batch's facts, touched files and - for a small update - its edges go in together."""

    def __init__(self, pt: Pt, ws: Path, report: IngestReport, timings: dict, *, cold: bool,
                 stored: dict[str, str], defer_text: bool, jobs: int, progress, parse_map=None,
                 items: dict[str, list] | None = None) -> None:
        self.pt, self.ws, self.report, self.timings = pt, ws, report, timings
        self.parse_map = parse_map
        self.items = items or {}  # file -> its stored items (ingest.file_items): extracted in part
        self.regions: dict[str, edit_region.Region] = {}
        self.cold, self.stored, self.defer_text, self.jobs, self.progress = cold, stored, defer_text, jobs, progress
        self.text_deferred = False
        self.pending: list[Step] = []
        self.affected: set[str] = set()  # files elsewhere whose edges depend on names that changed
        self.partial: dict[str, set] = {}  # file -> ids of its changed nodes (or '*': all of it)

    def flush(self) -> None:
        if self.pending:
            _run_together(self.pt, self.pending)
            self.pending.clear()

    def remove(self, deleted: list[str]) -> None:
        """Deleted files' facts go; the files that referred to their names are re-resolved."""
        if not deleted:
            return
        self.affected.update(r["file_path"] for r in self.pt.query("ingest.affected_files", files=deleted,
                                                                   new_names=[]))
        self.pending.append(("ingest.replace_files", {"files": deleted}, {}))
        self.pending.append(("retrieval.index_text", {"files": deleted}, {}))
        self.flush()

    def write(self, rows: _Rows, now: bool = True) -> None:
        """Queue a batch's writes; `now` runs them (with whatever was queued) right away."""
        pt = self.pt
        fresh = self.cold or not any(f in self.stored for f in rows.files)
        part = {k: rows.p[k] for k in ("partial", "redo")}
        if not self.cold:
            new_names = sorted({n[3] for n in rows.p["nodes"] if n[3]})
            self.affected.update(r["file_path"] for r in pt.query("ingest.affected_files", files=rows.files,
                                                                  new_names=new_names, **part))
        if not fresh:
            for r in pt.query("ingest.changed_nodes", files=rows.files,
                              nodes=[[n[1], n[0], n[20], n[17], n[3]] for n in rows.p["nodes"]],
                              shifted=rows.p["shifted"], **part):
                self.partial.setdefault(r["file_path"], set()).add(r["id"])
        self.pending.append(("ingest.replace_files", rows.params(), {"fresh": fresh}))
        if self.defer_text:
            if not self.text_deferred:
                self.pending.append(("ingest.defer_text_index", {}, {}))
                self.text_deferred = True
        else:  # the full-text side relation behind `pt query search` (only nodes whose hash changed)
            self.pending.append(("retrieval.index_text", {"files": rows.files,
                                                          "nids": text_index.nids(n[0] for n in rows.p["nodes"]),
                                                          "partial": [p[0] for p in rows.p["partial"]]}, {}))
        if now:
            self.flush()

    def parse_and_write(self, candidates: list[str], fc: dict[str, list]) -> list[str]:
        """Parse candidates (hashing tells a touched file from a changed one) and write them in
        batches as the parses come in, so writing overlaps parsing. Returns the changed files."""
        t = time.perf_counter()
        now = time.time()
        changed, touched, rows, write_s = [], [], _Rows(), 0.0
        step, close = progress_counter(self.progress, len(candidates), "pt ingest: parsing")
        parsed = (self._parse_in_part(rel) for rel in candidates) if self.items else \
            _parse_iter(self.ws, candidates, self.jobs, self.parse_map)
        for rel, facts, digest, err, size, mtime in parsed:
            step(1)
            if err:
                self.report.files_skipped.append([rel, err])
            if self.stored.get(rel) == digest:  # same bytes: no new facts (a skipped file stays skipped)
                if not err:
                    touched.append([rel, digest, size, mtime, facts.parse_error_count if facts else 0, now])
                continue
            changed.append(rel)
            self.report.parse_errors += facts.parse_error_count if facts else 0
            rows.add(rel, facts, digest, size, mtime, fc[rel], now, self.regions.get(rel))
            if len(rows.files) >= WRITE_BATCH_FILES:
                tw = time.perf_counter()
                self.write(rows)
                write_s += time.perf_counter() - tw
                rows = _Rows()
        tw = time.perf_counter()
        if rows.files:
            self.write(rows, now=False)
        if touched:
            self.pending.append(("ingest.touch_files", {"rows": touched}, {}))
        write_s += time.perf_counter() - tw
        close()
        self.timings["parse_write_s"] = time.perf_counter() - t
        self.timings["write_s"] = write_s
        return changed

    def _parse_in_part(self, rel: str) -> tuple:
        """_parse_one, but an edited file whose stored items are known gets only its edited
        region extracted (runner/edit_region.py) when that gives what the whole file would."""
        items = self.items.get(rel)
        if not items:
            return _parse_one((str(self.ws), rel))
        try:
            data, st = _read(str(self.ws), rel)
        except OSError as exc:
            return rel, None, "", f"unreadable: {exc.strerror}", 0, 0.0
        digest = blake3.blake3(data).hexdigest()
        if digest != self.stored.get(rel):
            r = edit_region.region(data, items)
            try:
                facts = edit_region.extract(rel, data, r) if r is not None else None
            except (NotUtf8Error, BinaryFileError):
                facts = None  # parse_bytes reports it as the whole-file path does
            if facts is not None:
                self.regions[rel] = r
                return rel, facts, digest, "", st.st_size, st.st_mtime
        return parse_bytes(rel, data, st.st_size, st.st_mtime)

    def resolve(self, changed: list[str], deleted: list[str]) -> None:
        """Edges: out of every changed file, and out of the files that referred to changed names.
        A re-ingested file whose names did not change re-derives only its changed nodes' edges."""
        pt, partial, affected = self.pt, self.partial, self.affected
        t = time.perf_counter()
        to_resolve = sorted(set(changed) | affected - set(deleted))
        some = sorted(f for f in to_resolve if f in partial and "*" not in partial[f] and f not in affected)
        whole = [f for f in to_resolve if f not in set(some)]
        bulk = len(to_resolve) > RESOLVE_BATCH_FILES  # hubs recounted once at the end, not per batch
        if bulk:  # the last batch's facts go first, on their own
            tw = time.perf_counter()
            self.flush()
            self.timings["write_s"] += time.perf_counter() - tw
        step, close = progress_counter(self.progress if bulk else False, len(to_resolve), "pt ingest: resolving")
        for i in range(0, len(some), RESOLVE_BATCH_FILES):
            batch = some[i:i + RESOLVE_BATCH_FILES]
            nodes = sorted({n for f in batch for n in partial[f]})
            if nodes:
                self.pending.append(("ingest.resolve_edges", {"files": batch, "nodes": nodes},
                                     {"node_hubs": not bulk}))
                if bulk:
                    self.flush()
            step(len(batch))
        # Files new to the graph have no edges yet: a large ingest derives theirs on all cores and
        # writes them without comparing (a cold ingest, or the rest of a workspace after
        # ingest_for_seed); files already stored replace theirs by difference.
        fresh = set(changed) - set(self.stored)
        new = [f for f in whole if f in fresh] if bulk else []
        old = [f for f in whole if f not in fresh] if new else whole
        if new:
            _derive_in_parallel(pt, _batches(new), self.jobs, step)
        for batch in _batches(old):
            self.pending.append(("ingest.resolve_edges", {"files": batch},
                                 {"node_hubs": not bulk, "fresh": self.cold}))
            if bulk:
                self.flush()
            step(len(batch))
        self.flush()  # a small update: its facts, text rows and edges in one transaction
        close()
        self.report.files_resolved = len(to_resolve)
        self.timings["resolve_s"] = time.perf_counter() - t
        if bulk:
            t = time.perf_counter()
            pt.run("ingest.node_hubs")
            self.timings["hubs_s"] = time.perf_counter() - t


def ingest(workspace: str | os.PathLike, store: Store, *, paths: list[str] | None = None,
           use_cargo: bool = True, progress=False, jobs: int | None = None,
           layout: cargo.Layout | None = None, parse_map=None, crates: list[str] | None = None) -> IngestReport:
    """Bring the graph up to date with the files on disk (all, just `paths`, or the files of the
    member `crates`: files of other crates are neither read nor removed). `parse_map` parses
    elsewhere (a Ray cluster); the writes stay here, in this one writer."""
    t0 = time.perf_counter()
    ws = Path(workspace).resolve()
    if not ws.is_dir():
        raise UsageError(f"workspace {ws} is not a directory")
    pt = Pt(ws, store)
    pt.ensure_schema()
    report, timings = IngestReport(), {}

    if paths is not None:
        paths = [workspace_path(ws, p, cwd=ws) for p in paths]  # refuses a path outside
        if "" in paths:
            paths = None  # the workspace root named: everything, as with no paths
    # A few-file update reuses the layout of the last full ingest; a full one asks cargo
    # (`cargo metadata`, 0.1-0.4 s) in a thread while the files are listed and compared.
    layout = layout or (paths is not None and _stored_layout(pt, ws)) or None
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(discover, ws, use_cargo) if layout is None else None
        if crates is not None and asked is not None:  # the scope needs it first
            layout = asked.result()
        t = time.perf_counter()
        current, stale, deleted, candidates = _changes(pt, ws, paths, crates, layout, report)
        timings["scan_s"] = time.perf_counter() - t
        report.files_total = len(current)
        layout = layout or asked.result()
    if paths is None:
        ws_rows = {"crates": [[c.name, c.root, c.manifest, c.is_member, c.features, c.deps] for c in layout.crates],
                   "targets": [[t.crate, t.name, t.kind, t.src_path, t.root_dir] for t in layout.targets]}
        if pt.run("ingest.workspace_same", ws_rows).rows:  # unchanged: no write, so the kept counts stay
            pt.run("ingest.set_workspace", ws_rows)
    timings["discover_s"] = time.perf_counter() - t0 - timings["scan_s"]

    # A cold ingest (nothing in the graph yet) needs no removal half, no "affected files" and
    # recounts hubs once at the end.
    # (only new files is not enough: files added to an ingested workspace have callers to re-resolve)
    cold = paths is None and not deleted and all(s["state"] == "new" for s in stale) and not pt.query("ingest.has_files")
    stored = {} if cold else _stored_hashes(pt, candidates)
    # A large ingest leaves the full-text index to its first reader (runner/api.py): its FTS
    # postings cost about as much as the rest of the ingest put together.
    defer_text = len(candidates) >= TEXT_DEFER_MIN_FILES or text_index.pending(pt)
    # A few stored files: their stored items tell what an edit left as it was (runner/edit_region.py).
    items: dict[str, list] = {}
    if not cold and parse_map is None and 0 < len(candidates) <= edit_region.MAX_FILES:
        for r in pt.query("ingest.file_items", files=[f for f in candidates if f in stored]):
            items.setdefault(r["file_path"], []).append(r)
    run = _Update(pt, ws, report, timings, cold=cold, stored=stored, defer_text=defer_text,
                  jobs=jobs or os.cpu_count() or 1, progress=progress, parse_map=parse_map, items=items)
    # A large ingest writes with the rollback journal: WAL would write every page twice.
    with store.bulk() if len(candidates) > RESOLVE_BATCH_FILES else nullcontext():
        run.remove(deleted)
        changed = run.parse_and_write(candidates, file_crate_rows(layout, candidates))
        skipped = {f for f, _ in report.files_skipped}
        report.files_parsed = len(set(changed) - skipped)
        report.files_unchanged = len(current) - report.files_parsed - len(skipped)
        report.files_removed = len(deleted)
        report.text_index = "deferred" if (run.text_deferred or (defer_text and text_index.pending(pt))) else "updated"
        run.resolve(changed, deleted)

    if paths is None:  # counting takes ~0.6 s on a large graph: the counts kept, if nothing was written since
        size = {r["what"]: r["n"] for r in pt.query("ingest.kept_graph_size") or pt.query("ingest.keep_graph_size")}
        report.nodes, report.edges = size.get("nodes", 0), size.get("edges", 0)
    report.elapsed_s = time.perf_counter() - t0
    report.timings = {k: round(v, 4) for k, v in timings.items()}
    return report


def _changes(pt: Pt, ws: Path, paths: list[str] | None, crates: list[str] | None, layout: cargo.Layout | None,
             report: IngestReport) -> tuple[list, list[dict], list[str], list[str]]:
    """What changed: stat every file, let the rule compare with file_state. Returns the files
    on disk ([path, size, mtime]), their states, the deleted files and the files to read."""
    dirs: list[str] = []
    if paths is None:
        on_disk = fs.rust_files(ws)
        if crates is not None:
            want = set(crates)
            report.scoped = sorted(want)
            on_disk = [f for f, row in file_crate_rows(layout, on_disk).items() if row[1] in want]
    else:
        on_disk, dirs = named_files(ws, paths)
    current, missing, root = [], [], str(ws)
    for rel in on_disk:
        try:
            st = os.stat(os.path.join(root, rel))
            current.append([rel, st.st_size, st.st_mtime])
        except OSError:
            missing.append(rel)
    stale = pt.query("ingest.stale_files", current=current) if paths is None else \
        [{"file_path": r[0], "state": "changed"} for r in current]
    if dirs:  # a directory named: its stored files that are gone from disk are removed too
        stale += [s for s in pt.query("ingest.stale_files", current=current)
                  if s["state"] == "deleted" and any(s["file_path"].startswith(d + "/") for d in dirs)]
    deleted = [s["file_path"] for s in stale if s["state"] == "deleted"] + missing
    if crates is not None:  # stored files of other crates are outside this ingest, not deleted
        deleted = [f for f in deleted if file_crate_rows(layout, [f])[f][1] in set(crates)]
    candidates = [s["file_path"] for s in stale if s["state"] in ("new", "changed")]
    if paths is None:  # files skipped last time are read again, to be reported as skipped again
        again = {r["file_path"] for r in pt.query("ingest.skipped_files")} & {r[0] for r in current}
        candidates += sorted(again - set(candidates))
    return current, stale, deleted, candidates


def ingest_for_seed(workspace: str | os.PathLike, store: Store, seed: str, *, progress=False,
                    use_cargo: bool = True, on_cold=None) -> IngestReport:
    """The graph a fix of `seed` (a workspace-relative .rs file) needs, soon. On a graph with no
    files yet, only the seed's crate and the member crates it depends on are ingested (a first
    fix on a big workspace does not wait for all of it; the next `pt ingest` adds the rest, and
    re-resolves what the new names change); otherwise the usual incremental update of everything.
    `on_cold(crate)`, called with the seed's own crate before a cold graph's ingest starts, starts
    what can run meanwhile (pt run fix: the crate's cargo check); it returns an object with
    `cancel()`, called if the ingest fails."""
    ws = Path(workspace).resolve()
    pt = Pt(ws, store)
    pt.ensure_schema()
    if pt.query("ingest.has_files"):
        return ingest(ws, store, progress=progress, use_cargo=use_cargo)
    layout = discover(ws, use_cargo)
    started = on_cold(file_crate_rows(layout, [seed])[seed][1]) if on_cold else None
    try:
        return ingest(ws, store, progress=progress, use_cargo=use_cargo, layout=layout,
                      crates=crate_scope(layout, seed))
    except BaseException:
        if started is not None:
            started.cancel()
        raise



def _batches(files: list[str]) -> list[list[str]]:
    return [files[i:i + RESOLVE_BATCH_FILES] for i in range(0, len(files), RESOLVE_BATCH_FILES)]


def _derive_in_parallel(pt: Pt, batches: list[list[str]], jobs: int, step) -> None:
    """A cold ingest's edges: `ingest.derive_edges` is read-only, so batches are derived on all
    cores at once (Cozo runs a script without holding the GIL; reading scripts share the store).
    A writing script waits until no script reads, so the rows are written by `ingest.put_edges`
    between waves of derivations, not during them; a wave of DERIVE_WAVE_PER_JOB batches per
    thread bounds the rows held. Every batch reads only nodes and raw facts, written before, never another's edges."""
    jobs = max(1, jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        per_wave = DERIVE_WAVE_PER_JOB * jobs
        for i in range(0, len(batches), per_wave):
            wave = batches[i:i + per_wave]
            results = list(pool.map(lambda b: pt.run("ingest.derive_edges", {"files": b}).rows, wave))
            for batch, rows in zip(wave, results):
                if rows:
                    pt.run("ingest.put_edges", {"edges": rows})
                step(len(batch))


def _stored_layout(pt: Pt, ws: Path) -> cargo.Layout | None:
    crates, targets = [], []
    for r in pt.query("ingest.layout"):
        if r["what"] == "crate":
            crates.append(cargo.Crate(r["name"], r["root"], "", r["is_member"], r["features"], r["deps"]))
        else:
            targets.append(cargo.Target(r["root"], r["name"], r["kind"], r["src_path"], r["root_dir"]))
    return cargo.Layout(ws, crates, targets) if crates else None


def _stored_hashes(pt: Pt, files: list[str]) -> dict[str, str]:
    if not files:
        return {}
    return {r["file_path"]: r["hash"] for r in pt.query("ingest.file_hashes", files=files)}
