"""The hydrate flow: rust-analyzer answers -> rows -> `rules/hydrate/*` programs.

    from parseltongue.runner.hydrate import hydrate
    report = hydrate(workspace_path, store)                      # every file changed since hydrated
    report = hydrate(workspace_path, store, paths=["src/a.rs"])  # just these (if changed)

Python does the effects: start one rust-analyzer session (adapters.rust_analyzer), ask it about
each pending file (documentSymbol, hover, definition per call site, expandMacro, diagnostics),
turn byte offsets <-> LSP positions, parse macro expansions with tree-sitter, and batch the
answers as rows. The rules decide everything else: which files are pending and in which order
(`hydrate.pending`), what to ask (`hydrate.work`), which symbol is which node
(`hydrate.reconcile_symbols`), what a definition target means and which edges outrank which
(`hydrate.write_files`, `hydrate.edge_agreement`).

Failure model: a file's facts are written only when every request for it has been made, and
with the facts of the other files of its batch in ONE transaction, so a dead analyzer, an
exhausted budget or a killed pt never leaves a file half hydrated. A missing or dead
rust-analyzer is a one-line warning, never an error: the graph keeps its heuristic facts.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import blake3

from ..adapters import rust_analyzer as ra
from ..adapters.store import Store
from ..adapters.treesitter import extract
from .api import Pt, named_files, workspace_path
from .output import progress_counter

DEFAULT_BUDGET_S = 300.0
WRITE_BATCH_FILES = 16  # files per write transaction (SQLite pays ~30 ms per commit)
READY_TIMEOUT_S = 120.0


@dataclass
class HydrateReport:
    ra_available: bool = True
    warning: str = ""  # one line when rust-analyzer is missing, died, or the budget ran out
    rust_analyzer: str = ""  # binary and version
    files_pending: int = 0
    files_hydrated: int = 0
    files_deferred: list = field(default_factory=list)  # not reached (budget, analyzer gone)
    files_skipped: list = field(default_factory=list)  # [path, reason]
    symbols: int = 0
    symbols_matched: int = 0
    signatures: int = 0
    calls_asked: int = 0
    calls_answered: int = 0  # RA returned at least one location
    macro_expansions: int = 0
    macro_items: int = 0
    diagnostics: int = 0
    request_errors: int = 0
    restarts: int = 0
    agreement: dict = field(default_factory=dict)  # hydrate.edge_agreement counts, summed over batches
    elapsed_s: float = 0.0
    timings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        doc = asdict(self)
        doc["agreement_shares"] = self.shares()
        return doc

    def add(self, part: "HydrateReport") -> None:
        """Fold in what a chunk's requests counted elsewhere (collect_chunk in a Dobby worker)."""
        for name in ("symbols", "symbols_matched", "signatures", "calls_asked", "calls_answered",
                     "macro_expansions", "macro_items", "diagnostics", "request_errors"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.files_skipped += part.files_skipped
        self.ra_available = self.ra_available and part.ra_available
        self.warning = part.warning or self.warning

    @classmethod
    def from_dict(cls, doc: dict) -> "HydrateReport":
        """The report as_dict gave (a running Dobby sends it)."""
        return cls(**{k: v for k, v in doc.items() if k != "agreement_shares"})

    def summary(self) -> str:
        """One line for people (`pt hydrate`, `pt ingest --hydrate`)."""
        if not self.files_pending:
            return "nothing to hydrate: every file was hydrated since its last ingest"
        a, s = self.agreement, self.shares()
        return (f"hydrated {self.files_hydrated}/{self.files_pending} files ({len(self.files_deferred)} deferred, "
                f"{len(self.files_skipped)} skipped) in {self.elapsed_s:.2f}s: {self.signatures} signatures, "
                f"{a.get('ra_edges', 0)} ra CALLS edges (of {a.get('heuristic_edges', 0)} heuristic: "
                f"{s['confirmed']:.0%} confirmed, {s['contradicted']:.0%} contradicted, "
                f"{s['unverified']:.0%} unverified; {a.get('added', 0)} added), "
                f"{self.diagnostics} diagnostics, {self.macro_items} macro items")

    def shares(self) -> dict:
        """Counts over the heuristic CALLS edges of all batches (the rule gives the per-batch
        shares; batches are disjoint in their source nodes, so the counts add up)."""
        total = self.agreement.get("heuristic_edges", 0)
        keys = ("confirmed", "contradicted", "unverified", "added")
        return {k: round(self.agreement.get(k, 0) / total, 4) if total else 0.0 for k in keys}


class _OutOfBudget(Exception):
    pass


# ------------------------------------------------------------------ per-file collection

@dataclass
class _FileRows:
    """Everything RA said about one file, as rows for hydrate.write_files."""
    rel: str
    hash: str
    hovers: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    diags: list = field(default_factory=list)
    macro_items: list = field(default_factory=list)


@dataclass
class _Text:
    data: bytes
    index: ra.LineIndex
    hash: str


class _Hydrator:
    """One hydration run: a session, a budget, caches of file texts, the report."""

    def __init__(self, pt: Pt, session: ra.RaSession, report: HydrateReport, deadline: float):
        self.pt = pt
        self.ws = pt.workspace
        self.session = session
        self.report = report
        self.deadline = deadline
        self._texts: dict[str, _Text | None] = {}

    # -- helpers ----------------------------------------------------------

    def text(self, rel: str) -> _Text | None:
        """Bytes, line index and hash of a workspace file as on disk now (cached per run)."""
        if rel not in self._texts:
            try:
                data = (self.ws / rel).read_bytes()
                self._texts[rel] = _Text(data, ra.LineIndex(data), blake3.blake3(data).hexdigest())
            except (OSError, ValueError):
                self._texts[rel] = None
        return self._texts[rel]

    def ask(self, fn: Callable, *args):
        """One request within the budget. A request that fails or times out is counted and
        yields None; RaUnavailable (the analyzer is gone for good) propagates."""
        if time.monotonic() > self.deadline:
            raise _OutOfBudget()
        try:
            return fn(*args)
        except ra.RaUnavailable:
            raise
        except ra.RaError:
            self.report.request_errors += 1
            return None

    # -- one file ---------------------------------------------------------

    def hydrate_file(self, rel: str, expected_hash: str, work: list[dict]) -> _FileRows | None:
        """All requests for one file; None (with a skip reason) if it changed since ingest."""
        t = self.text(rel)
        if t is None or t.hash != expected_hash:
            self.report.files_skipped.append([rel, "changed on disk since the last ingest (run `pt ingest`)"])
            return None
        rows = _FileRows(rel, expected_hash)
        by_work: dict[str, list[dict]] = {"hover": [], "call": [], "expand": []}
        for w in work:
            by_work[w["work"]].append(w)
        name_pos = self.symbol_positions(rel, t)
        self.hover_items(rel, t, by_work["hover"], name_pos, rows)
        self.resolve_calls(rel, t, by_work["call"], rows)
        self.expand_macros(rel, t, by_work["expand"], rows)
        self.collect_diagnostics(rel, t, rows)
        return rows

    def symbol_positions(self, rel: str, t: _Text) -> dict[str, int]:
        """documentSymbol, reconciled with the file's nodes by the rules: node id -> byte
        offset of its name, where hover asks."""
        symbols = self.ask(self.session.document_symbols, rel) or []
        flat = [s for top in symbols for s in top.walk() if s.kind_name != "Field"]
        self.report.symbols += len(flat)
        if not flat:
            return {}
        rows = [[rel, s.name, s.kind_name, t.index.offset(s.range.start), t.index.offset(s.range.end),
                 t.index.offset(s.selection_range.start)] for s in flat]
        matched = self.pt.query("hydrate.reconcile_symbols", symbols=rows)
        out = {m["node_id"]: m["sel_start"] for m in matched}
        self.report.symbols_matched += len(out)
        return out

    def hover_items(self, rel: str, t: _Text, items: list[dict], name_pos: dict[str, int], rows: _FileRows) -> None:
        for it in items:
            pos = name_pos.get(it["node_id"])
            if pos is None:  # not in documentSymbol (e.g. an item inside a fn body)
                pos = _name_offset(t.data, it["kind"], it["name"], it["span_start"], it["span_end"])
            if pos is None:
                continue
            sig = self.ask(self.session.hover, rel, *t.index.position(pos))
            if sig:
                rows.hovers.append([it["node_id"], sig])
                self.report.signatures += 1

    def resolve_calls(self, rel: str, t: _Text, calls: list[dict], rows: _FileRows) -> None:
        for c in calls:
            # The callee span of a path call covers `a::b::f`; definition must point at `f`.
            at = t.data.rfind(c["name"].encode(), c["span_start"], c["span_end"]) if c["name"] else -1
            at = c["span_start"] if at < 0 else at
            self.report.calls_asked += 1
            locations = self.ask(self.session.definition, rel, *t.index.position(at)) or []
            if locations:
                self.report.calls_answered += 1
            site = [rel, c["node_id"], c["pos"]]
            if not locations:
                rows.calls.append(site + ["", 0, "", ""])
            for loc in locations:
                rows.calls.append(site + self.target(loc))

    def target(self, loc: ra.Location) -> list:
        """[target_file, target_byte, target_hash, target_text]; outside the workspace the path
        is absolute and only the path matters."""
        if Path(loc.path).is_absolute():
            return [loc.path, 0, "", ""]
        t = self.text(loc.path)
        if t is None:
            return [loc.path, 0, "", ""]
        start, end = t.index.offset(loc.range.start), t.index.offset(loc.range.end)
        ident = t.data[start:end].decode("utf-8", errors="replace")
        return [loc.path, start, t.hash, ident.removeprefix("r#")]

    def expand_macros(self, rel: str, t: _Text, invocations: list[dict], rows: _FileRows) -> None:
        for inv in invocations:
            exp = self.ask(self.session.expand_macro, rel, *t.index.position(inv["pos"] + 1))
            if exp is None or not exp.expansion.strip():
                continue
            self.report.macro_expansions += 1
            items = _expansion_items(exp.expansion)
            for item in items:
                # A name written in the invocation (`make_adder!(add_two, 2)`) is where RA
                # maps the generated item back: hover there gives its signature.
                sig = ""
                at = _word_offset(t.data, item["name"], inv["span_start"], inv["span_end"])
                if at is not None:
                    sig = self.ask(self.session.hover, rel, *t.index.position(at)) or ""
                rows.macro_items.append([rel, inv["node_id"], item["item_path"], item["parent_path"], item["kind"],
                                         item["name"], item["signature"], item["visibility"], item["generics"],
                                         item["code"], item["hash"], sig])
            self.report.macro_items += len(items)

    def collect_diagnostics(self, rel: str, t: _Text, rows: _FileRows) -> None:
        diags = self.ask(self.session.diagnostics, rel) or []
        for d in diags:
            start, end = t.index.offset(d.range.start), t.index.offset(d.range.end)
            code = d.code or ""
            ident = blake3.blake3(f"ra\0{rel}\0{start}\0{end}\0{code}\0{d.message}".encode()).hexdigest()[:24]
            span = {"start": start, "end": end, "line": d.range.start.line + 1, "col": d.range.start.character + 1,
                    "end_line": d.range.end.line + 1, "end_col": d.range.end.character + 1}
            rows.diags.append([f"ra:{ident}", rel, start, end, span, d.severity_name, code, d.message])
        self.report.diagnostics += len(diags)

    # -- batches ----------------------------------------------------------

    def write(self, batch: list[_FileRows]) -> list[str]:
        """One transaction for the whole batch; then confidence of the files written."""
        if not batch:
            return []
        files = [[r.rel, r.hash] for r in batch]
        calls = [c for r in batch for c in r.calls]
        macro_items = [m for r in batch for m in r.macro_items]
        agreement = self.pt.query("hydrate.edge_agreement", files=files, calls=calls, macro_items=macro_items)
        for row in agreement:
            self.report.agreement[row["measure"]] = self.report.agreement.get(row["measure"], 0) + row["count"]
        written = [r[0] for r in self.pt.run("hydrate.write_files", {
            "files": files, "now": time.time(), "calls": calls,
            "hovers": [h for r in batch for h in r.hovers],
            "diags": [d for r in batch for d in r.diags],
            "macro_items": macro_items,
        }).rows]
        if written:
            self.pt.run("ingest.confidence", {"files": written})
        for r in batch:
            if r.rel not in written:
                self.report.files_skipped.append([r.rel, "re-ingested while hydrating; run `pt hydrate` again"])
        self.report.files_hydrated += len(written)
        return written


# ------------------------------------------------------------------ text helpers

_NAME_KEYWORD = {
    "fn": r"fn", "struct": r"struct", "enum": r"enum", "union": r"union", "trait": r"trait", "type": r"type",
    "const": r"const", "static": r"static(?:\s+mut)?", "mod": r"mod", "macro_rules": r"macro_rules!",
}


def _name_offset(data: bytes, kind: str, name: str, start: int, end: int) -> int | None:
    """Byte offset of an item's name in its span (`fn name`, `struct name`...), for items that
    documentSymbol does not list. Enum variants start with their name."""
    if not name:
        return None
    if kind == "variant":
        return _word_offset(data, name, start, end)
    kw = _NAME_KEYWORD.get(kind)
    if kw is None:
        return None
    m = re.compile(rf"\b{kw}\s+(?:r#)?({re.escape(name)})\b".encode()).search(data, start, end)
    return m.start(1) if m else None


def _word_offset(data: bytes, word: str, start: int, end: int) -> int | None:
    m = re.compile(rf"(?<![\w$]){re.escape(word)}(?!\w)".encode()).search(data, start, end)
    return m.start() if m else None


def _expansion_items(text: str) -> list[dict]:
    """Items of a macro expansion, parsed with tree-sitter like a file. Which of them become
    macro_interface nodes is decided by hydrate.write_files."""
    facts = extract("<expansion>", text.encode("utf-8"))
    code = dict(facts.code)
    paths = {n[0]: n[4] for n in facts.nodes}
    items = []
    for n in facts.nodes:
        kind = n[2]
        if kind in ("file", "macro_call", "use"):
            continue
        items.append({
            "item_path": n[4], "parent_path": paths.get(n[5], ""), "kind": kind, "name": n[3],
            "signature": n[7], "visibility": n[8], "generics": n[9], "code": code.get(n[0], ""), "hash": n[20],
        })
    return items


# ------------------------------------------------------------------ the flow

def _start_session(ws: Path, deadline: float, report: HydrateReport,
                   source: ra.SessionSource | None = None) -> tuple[ra.RaSession | None, bool]:
    """(a running session, whether this run owns it and stops it), or (None, False) with the
    report's warning set. `source` lends one (Dobby's warm worker); without it, or when it has
    none to lend, a new one starts."""
    timeout = max(1.0, min(READY_TIMEOUT_S, deadline - time.monotonic()))
    try:
        session = source(ws, timeout) if source else None
        own = session is None
        if own:
            session = ra.open_session(ws, ready_timeout=timeout)
    except ra.RaError as exc:
        if isinstance(exc, ra.RaTimeout) and time.monotonic() >= deadline:
            # Not ready within a budget shorter than its start-up: the analyzer is fine, the budget is not.
            report.warning = "hydration budget used up before rust-analyzer was ready; the graph keeps its heuristic facts"
            return None, False
        report.ra_available = False
        report.warning = f"{str(exc).splitlines()[0]}; the graph keeps its heuristic facts"
        return None, False
    report.rust_analyzer = f"{session.binary.path} ({session.binary.version})"
    return session, own


def _run_chunk(h: _Hydrator, chunk: list[dict], offset: int, total: int, step, on_file) -> tuple[list[_FileRows], int | None]:
    """Requests for the files of one write batch. Returns the completed files and, when the
    run must stop (budget used up, analyzer gone for good), the index in `chunk` it stopped at."""
    work: dict[str, list[dict]] = {p["file_path"]: [] for p in chunk}
    for w in h.pt.query("hydrate.work", files=list(work)):
        work[w["file_path"]].append(w)
    batch: list[_FileRows] = []
    for k, p in enumerate(chunk):
        try:
            rows = h.hydrate_file(p["file_path"], p["hash"], work[p["file_path"]])
        except _OutOfBudget:
            h.report.warning = "hydration budget used up; the remaining files keep their heuristic facts"
            return batch, k
        except ra.RaUnavailable as exc:
            h.report.ra_available = False
            h.report.warning = f"{str(exc).splitlines()[0]}; the remaining files keep their heuristic facts"
            return batch, k
        if rows is not None:
            batch.append(rows)
        step(1)
        if on_file:
            on_file(p["file_path"], offset + k + 1, total)
    return batch, None


def collect_chunk(pt: Pt, session: ra.RaSession, chunk: list[dict], budget_s: float) -> tuple[list, int | None, HydrateReport]:
    """The requests for one write batch where the session lives (a Dobby worker with a warm
    rust-analyzer runs this next to it: one call per batch, not one per request). Returns the
    completed files' rows, the index it stopped at (budget, analyzer gone) or None, and the counts."""
    part = HydrateReport()
    h = _Hydrator(pt, session, part, time.monotonic() + budget_s)
    batch, stopped_at = _run_chunk(h, chunk, 0, len(chunk), lambda n: None, None)
    return batch, stopped_at, part


def hydrate(workspace: str | os.PathLike, store: Store, *, paths: list[str] | None = None,
            budget_s: float | None = DEFAULT_BUDGET_S, force: bool = False, progress: bool = False,
            session: ra.RaSession | None = None, on_file: Callable[[str, int, int], None] | None = None,
            batch_files: int = WRITE_BATCH_FILES, ra_source: ra.SessionSource | None = None) -> HydrateReport:
    """Add rust-analyzer facts to the files changed since they were last hydrated (all, or those
    among `paths`). `session`: an already started session to use (tests, benchmarks); it is not
    shut down here. `ra_source(root, ready_timeout)`: lends a running session when one is
    needed (Dobby's warm rust-analyzer; also not shut down here), or None to start one.
    `on_file(path, done, total)` is called after each file's requests."""
    t0 = time.monotonic()
    deadline = t0 + budget_s if budget_s and budget_s > 0 else float("inf")
    ws = Path(workspace).resolve()
    pt = Pt(ws, store)
    pt.ensure_schema()
    report = HydrateReport()
    timings = {"start_s": 0.0, "requests_s": 0.0, "write_s": 0.0}

    files = named_files(ws, [workspace_path(ws, p, cwd=ws) for p in paths or []])[0]
    pending = pt.query("hydrate.pending", files=files, force=force) if files or not paths else []
    report.files_pending = len(pending)
    if not pending:
        report.elapsed_s = time.monotonic() - t0
        return report

    own = False
    t = time.monotonic()
    if session is None:
        session, own = _start_session(ws, deadline, report, ra_source)
        if session is None:
            report.files_deferred = [p["file_path"] for p in pending]
            report.elapsed_s = time.monotonic() - t0
            return report
    else:
        report.rust_analyzer = f"{session.binary.path} ({session.binary.version})"
    timings["start_s"] = time.monotonic() - t
    restarts_before = session.restarts

    h = _Hydrator(pt, session, report, deadline)
    # A lent session that runs a batch's requests where it lives (runner/dobby/ra_remote.py)
    remote = getattr(session, "collect_chunk", None)
    step, close = progress_counter(progress, len(pending), "pt hydrate:")
    try:
        for i in range(0, len(pending), batch_files):
            chunk = pending[i:i + batch_files]
            t = time.monotonic()
            if remote is None:
                batch, stopped_at = _run_chunk(h, chunk, i, len(pending), step, on_file)
            else:
                batch, stopped_at, part = remote(store.path, chunk, max(0.0, deadline - time.monotonic()))
                report.add(part)
                for k, p in enumerate(chunk[:len(chunk) if stopped_at is None else stopped_at]):
                    step(1)
                    if on_file:
                        on_file(p["file_path"], i + k + 1, len(pending))
            timings["requests_s"] += time.monotonic() - t
            t = time.monotonic()
            h.write(batch)  # the completed files, even when the run stops here
            timings["write_s"] += time.monotonic() - t
            if stopped_at is not None:
                report.files_deferred = [q["file_path"] for q in pending[i + stopped_at:]]
                break
    finally:
        close()
        report.restarts = session.restarts - restarts_before
        if own:
            session.shutdown()
    report.elapsed_s = time.monotonic() - t0
    report.timings = {k: round(v, 4) for k, v in timings.items()}
    return report
