"""`pt run fix --seed FILE`: deterministic-first fixes, each proven by PreFlight, applied once.

A round: the errors of the current tree (rustc's JSON, with every span and suggestion) become
`fix_*` facts (`fix.put_facts`); every pattern in `patterns/` whose codes match proposes text
edits; `fix.plan` turns them into candidates in the order worth trying; each runs through
PreFlight in the mirror (never the user's tree) and is recorded (`fix.record_candidate`);
`fix.champion` keeps the best. The next round starts from the champion's text and its own
`cargo check` output, until no error is left or `--max-rounds`. Only then is the accumulated
change - itself a PreFlight-passed candidate relative to the files on disk - shown and, when
approved, written atomically through the apply path (undo with `pt undo`). When the patterns find
nothing and an LLM is configured, it is asked for node-addressed edits, which are candidates like
any other.

Python here only moves text and runs processes; what is tried, in which order, what counts as
better and what is recorded are the rules under rules/fix/ and the programs under patterns/.
"""
from __future__ import annotations

import difflib
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..adapters import cargo
from .api import Pt
from .errors import GateFailed, PtError, UsageError
from .preflight import build_from_diff, check_tree, digest, run_preflight, unified_diff


@dataclass
class FixOptions:
    seed: str
    dry_run: bool = False
    max_rounds: int = 3
    max_candidates: int = 24  # PreFlights per round
    allow_signature_change: bool = False
    partial: bool = False  # apply a change that removes some errors but not all
    llm: object = None  # adapters.llm.LlmConfig, or None for the deterministic engine alone
    llm_attempts: int = 2  # asks per round (the second is fed the first one's diagnostics)


@dataclass
class FixReport:
    run_id: str
    seed: str
    outcome: str  # fixed | would-fix (dry run) | partial | no-errors | no-safe-fix | not-approved
    errors_before: list  # the seed diagnostics of round 0
    errors_left: list  # what the chosen change still leaves (empty when fixed)
    rounds: list  # per round: diagnostics, candidates tried, champion
    diff: str = ""
    candidate_id: str = ""
    change_id: str = ""
    written: list = field(default_factory=list)
    tokens: int = 0
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    explanation: list = field(default_factory=list)  # per node, the errors nothing fixed

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ text <-> facts

class _Offsets:
    """rustc counts bytes, Cozo's string functions count characters."""

    def __init__(self, data: bytes):
        self.text = data.decode("utf-8")
        self.ascii = len(self.text) == len(data)
        if not self.ascii:
            self.char_at = [0] * (len(data) + 1)
            b = 0
            for i, ch in enumerate(self.text):
                n = len(ch.encode("utf-8"))
                for k in range(n):
                    self.char_at[b + k] = i
                b += n
            self.char_at[len(data)] = len(self.text)

    def char(self, byte: int) -> int:
        if byte < 0:
            return -1
        return byte if self.ascii else self.char_at[min(byte, len(self.char_at) - 1)]


def _diag_dict(d: cargo.CompilerDiagnostic) -> dict:
    return {"file": d.file, "line": d.line, "col": d.col, "code": d.code, "message": d.message}


class _Tree:
    """The round's view of the files: the user's bytes, overlaid by the accepted edits so far."""

    def __init__(self, ws: Path):
        self.ws = ws
        self.disk: dict[str, bytes | None] = {}
        self.changed: dict[str, bytes] = {}

    def on_disk(self, rel: str) -> bytes | None:
        if rel not in self.disk:
            try:
                self.disk[rel] = (self.ws / rel).read_bytes()
            except OSError:
                self.disk[rel] = None
        return self.disk[rel]

    def get(self, rel: str) -> bytes | None:
        return self.changed.get(rel, self.on_disk(rel))


def _facts(pt: Pt, run_id: str, rnd: int, errors: list, tree: _Tree) -> None:
    offsets: dict[str, _Offsets | None] = {}

    def off(rel: str) -> _Offsets | None:
        if rel not in offsets:
            data = tree.get(rel) if rel else None
            try:
                offsets[rel] = _Offsets(data) if data is not None else None
            except UnicodeDecodeError:
                offsets[rel] = None
        return offsets[rel]

    diags, spans = [], []
    for i, d in enumerate(errors):
        o = off(d.file)
        s, e = (o.char(d.byte_start), o.char(d.byte_end)) if o else (-1, -1)
        text = o.text[s:e] if o and s >= 0 else ""
        diags.append([i, d.file, d.code, d.severity, d.message, s, e, d.line, d.col, d.byte_start if o else -1, text])
        for seq, sp in enumerate(d.spans):
            so = off(sp["file"])
            if so is None:
                continue
            a, b = so.char(sp["byte_start"]), so.char(sp["byte_end"])
            rep = sp["replacement"]
            spans.append([i, seq, sp["part"], sp["level"], sp["message"], sp["file"], a, b, sp["line"], sp["is_primary"],
                          sp["label"], so.text[a:b], rep is not None, rep or "", sp["applicability"]])
    files = [[rel, o.text] for rel, o in sorted(offsets.items()) if o is not None and rel]
    graph_files = [rel for rel, _ in files if rel not in tree.changed]
    pt.run("fix.put_facts", {"run_id": run_id, "round": rnd, "diags": diags, "spans": spans, "files": files,
                             "graph_files": graph_files})


# ------------------------------------------------------------------ patterns -> candidates

def _patterns(pt: Pt) -> list:
    return sorted((p for p in pt.registry.all().values() if p.id.startswith("patterns.")), key=lambda p: p.id)


def _proposals(pt: Pt, run_id: str, rnd: int, codes: set, warnings: list) -> list:
    """Every matching pattern's edits as fix.plan rows."""
    rows = []
    for prog in _patterns(pt):
        want = set(prog.meta.get("codes") or [])
        if "*" not in want and not (want & codes):
            continue
        try:
            out = pt.query(prog.id, run_id=run_id, round=rnd)
        except PtError as exc:  # a broken local pattern must not stop the others
            warnings.append(f"pattern {prog.id} failed: {exc.message}")
            continue
        tier = int(prog.meta.get("tier", 2))
        for r in out:
            rows.append([prog.id, int(r.get("tier", tier)), r["diag"], r["alt"], r["file_path"], r["start"], r["end"],
                         r["replacement"], r.get("note", "")])
    return rows


@dataclass
class _Plan:
    cand: str
    tier: int
    pattern: str
    diag: int
    note: str
    edits: list  # [(file, start, end, replacement)] character offsets in the round's text


def _plans(pt: Pt, proposals: list) -> list:
    plans: dict[str, _Plan] = {}
    for r in pt.query("fix.plan", edits=proposals) if proposals else []:
        p = plans.setdefault(r["cand"], _Plan(r["cand"], r["tier"], r["pattern"], r["diag"], r["note"], []))
        e = (r["file_path"], r["start"], r["end"], r["replacement"])
        if e not in p.edits:
            p.edits.append(e)
    return list(plans.values())  # already in the order fix.plan gave


def _apply_edits(tree: _Tree, edits: list) -> dict | None:
    """The round's texts with the edits spliced in, or None when they overlap or do not fit."""
    by_file: dict[str, list] = {}
    for f, s, e, r in edits:
        by_file.setdefault(f, []).append((s, e, r))
    out = {}
    for f, es in by_file.items():
        data = tree.get(f)
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        es.sort()
        for (s1, e1, _), (s2, _, _) in zip(es, es[1:]):
            if s2 < e1 or (s2 == s1 == e1):  # overlapping, or two inserts at one point: order unknown
                return None
        for s, e, r in reversed(es):
            if not (0 <= s <= e <= len(text)):
                return None
            text = text[:s] + r + text[e:]
        new = text.encode("utf-8")
        if new != data:
            out[f] = new
    return out or None


def _changed_lines(old: bytes, new: bytes) -> int:
    a, b = old.decode("utf-8").splitlines(), new.decode("utf-8").splitlines()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes()
               if tag != "equal")


# ------------------------------------------------------------------ the flow

class _Run:
    def __init__(self, pt: Pt, opts: FixOptions, seed: str, progress: Callable[[str], None]):
        self.pt, self.opts, self.seed, self.say = pt, opts, seed, progress
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.tree = _Tree(pt.workspace)
        self.tried: set[str] = set()
        self.tokens = 0
        self.warnings: list[str] = []
        self.timings = {"check_s": 0.0, "patterns_s": 0.0, "preflight_s": 0.0, "llm_s": 0.0}

    def candidate(self, new_texts: dict):
        """A PreFlight candidate relative to the user's files: everything accepted so far plus this."""
        files = dict(self.tree.changed)
        files.update(new_texts)
        rows = [(f, self.tree.on_disk(f), t) for f, t in sorted(files.items()) if t != self.tree.on_disk(f)]
        if not rows:
            return None
        return build_from_diff(self.pt, unified_diff(rows).encode("utf-8"))

    def try_one(self, rnd: int, ord_: int, plan: _Plan, errors_before: int) -> dict | None:
        new = _apply_edits(self.tree, plan.edits)
        if new is None:
            return None
        cand = self.candidate(new)
        if cand is None or cand.id in self.tried:
            return None
        self.tried.add(cand.id)
        t0 = time.perf_counter()
        # New warnings rank candidates (fix.champion) rather than refuse them: code that compiles
        # further than before often gets lints rustc could not reach while it had errors.
        rep = run_preflight(self.pt, cand, error_gate="new", max_new_warnings=-1)
        elapsed = time.perf_counter() - t0
        self.timings["preflight_s"] += elapsed
        run = rep.cargo_run
        errors_after = sum(1 for d in run.diagnostics if d.severity == "error") if run else errors_before + 1
        cargo_stage = next((s for s in rep.stages if s.stage == "cargo"), None)  # absent when stage 1 rejected
        row = {"cand": plan.cand, "pattern": plan.pattern, "diag": plan.diag, "tier": plan.tier, "ord": ord_,
               "note": plan.note, "preflight_id": rep.candidate_id, "verdict": rep.verdict,
               "errors_before": errors_before, "errors_after": errors_after,
               "new_warnings": cargo_stage.new_warnings if cargo_stage else 0,
               "diff_lines": sum(_changed_lines(self.tree.get(f) or b"", t) for f, t in new.items()),
               "edit_chars": sum(e - s + len(r) for _, s, e, r in plan.edits),
               "elapsed_ms": round(elapsed * 1000.0, 1)}
        row["new_errors"] = self.pt.run("fix.record_candidate", {"run_id": self.run_id, "round": rnd, **row}).dicts()[0]["new_errors"]
        self.say(f"  [{rnd}.{ord_}] {plan.pattern.removeprefix('patterns.')}: {plan.note[:70]} -> "
                 f"{rep.verdict}, {errors_after} error{'s' * (errors_after != 1)} left")
        return {"round": rnd, "row": row, "texts": new, "run": run}

    def llm_plans(self, rnd: int, errors: list, feedback: list | None) -> list:
        from ..adapters import llm
        from .context import context_pack

        node_of = {r["diag"]: r["node_id"] for r in self.pt.query("fix.round_diags", run_id=self.run_id, round=rnd)}
        nodes = [n for n in node_of.values() if n]
        if not nodes:
            return []
        t0 = time.perf_counter()
        try:
            # A local model reads its prompt on the CPU: a smaller pack keeps it within its timeout.
            budget = 800 if self.opts.llm.provider == "local" else 3000
            ctx = context_pack(self.pt, list(dict.fromkeys(nodes)), budget_tokens=budget)
            diags = [dict(_diag_dict(d), rendered=d.rendered, node_id=node_of.get(i, "")) for i, d in enumerate(errors)]
            prop = llm.propose(self.pt.workspace, self.opts.llm, diags, ctx, feedback)
        except llm.LlmError as exc:
            self.warnings.append(f"LLM: {exc}")
            return []
        finally:
            self.timings["llm_s"] += time.perf_counter() - t0
        self.tokens += prop.tokens_in + prop.tokens_out
        self.warnings += [f"LLM edit refused: {r}" for r in prop.rejected]
        edits = []
        for e in prop.edits:
            if e.file in self.tree.changed:  # the graph's spans describe the file on disk only
                self.warnings.append(f"LLM edit refused: {e.file} was already edited by an earlier round")
                continue
            o = _Offsets(self.tree.get(e.file))
            edits.append((e.file, o.char(e.start), o.char(e.end), e.replacement))
        return [_Plan(f"llm/{rnd}/{len(feedback or [])}", 5, "llm", -1, "LLM edit", edits)] if edits else []

    def round(self, rnd: int, check: cargo.CargoRun) -> dict | None:
        """One round: facts, candidates, PreFlight, champion. -> the champion's attempt or None."""
        errors = [d for d in check.diagnostics if d.severity == "error"]
        _facts(self.pt, self.run_id, rnd, errors, self.tree)
        t0 = time.perf_counter()
        plans = _plans(self.pt, _proposals(self.pt, self.run_id, rnd, {d.code for d in errors}, self.warnings))
        self.timings["patterns_s"] += time.perf_counter() - t0
        self.say(f"round {rnd}: {len(errors)} error{'s' * (len(errors) != 1)}, {len(plans)} candidate"
                 f"{'s' * (len(plans) != 1)}")
        attempts: dict[str, dict] = {}
        tier_done = None
        for i, plan in enumerate(plans):
            if len(attempts) >= self.opts.max_candidates:
                break
            if tier_done is not None and plan.tier > tier_done:
                break
            got = self.try_one(rnd, i, plan, len(errors))
            if got is None:
                continue
            attempts[plan.cand] = got
            r = got["row"]
            if r["verdict"] == "passed" and r["errors_after"] == 0 and r["new_errors"] == 0:
                tier_done = plan.tier  # finish this tier (a smaller edit may follow), then stop
        best = self.champion(rnd, attempts)
        feedback = None
        for k in range(self.opts.llm_attempts if (best is None and self.opts.llm is not None) else 0):
            for plan in self.llm_plans(rnd, errors, feedback):
                got = self.try_one(rnd, len(plans) + k, plan, len(errors))
                if got is not None:
                    attempts[plan.cand] = got
                    feedback = [_diag_dict(d) for d in (got["run"].diagnostics if got["run"] else [])]
            best = self.champion(rnd, attempts)
            if best is not None:
                break
        return best

    def final_candidate(self, cid: str) -> str:
        """The accumulated change as PreFlight last saw it. A later candidate of the run touching
        the same node retires it in the draft tray (state superseded); then it is proven again -
        the same bytes give the same id - so that apply's gate holds."""
        rows = self.pt.query("preflight.candidate", candidate_id=cid)
        if rows and rows[0]["state"] == "passed":
            return cid
        cand = self.candidate({})
        t0 = time.perf_counter()
        rep = run_preflight(self.pt, cand, error_gate="new", max_new_warnings=-1)
        self.timings["preflight_s"] += time.perf_counter() - t0
        return rep.candidate_id

    def champion(self, rnd: int, attempts: dict) -> dict | None:
        rows = self.pt.query("fix.champion", run_id=self.run_id, round=rnd,
                             allow_signature_change=self.opts.allow_signature_change)
        for r in rows:
            if r["cand"] in attempts:
                return attempts[r["cand"]]
        return None


def run_fix(pt: Pt, opts: FixOptions, approve: Callable[[str], bool],
            progress: Callable[[str], None] = lambda s: None) -> FixReport:
    t_start = time.perf_counter()
    seed = _seed_path(pt.workspace, opts.seed)
    run = _Run(pt, opts, seed, progress)
    _ensure_graph(pt, progress)

    t0 = time.perf_counter()
    check, _ = check_tree(pt, [seed])
    run.timings["check_s"] += time.perf_counter() - t0
    errors0 = [d for d in check.diagnostics if d.severity == "error"]
    report = FixReport(run.run_id, seed, "no-errors", [_diag_dict(d) for d in errors0], [], [])
    if not errors0 and check.success is False:
        raise UsageError(f"cargo check failed without a diagnostic: {check.stderr_tail.strip().splitlines()[-1:] or '?'}")

    chain: list[dict] = []  # the champions, round by round
    current = check
    for rnd in range(opts.max_rounds if errors0 else 0):
        errors = [d for d in current.diagnostics if d.severity == "error"]
        if not errors:
            break
        best = run.round(rnd, current)
        report.rounds.append({"round": rnd, "errors": [_diag_dict(d) for d in errors],
                              "candidates": pt.query("fix.round_candidates", run_id=run.run_id, round=rnd),
                              "champion": best["row"] if best else None})
        if best is None:
            break
        chain.append(best)
        run.tree.changed.update(best["texts"])
        current = best["run"]

    left = [d for d in current.diagnostics if d.severity == "error"] if chain else errors0
    report.errors_left = [_diag_dict(d) for d in left]
    applied: list = []
    if errors0:
        report.outcome = "no-safe-fix"
    if chain and (not left or opts.partial):
        report.candidate_id = run.final_candidate(chain[-1]["row"]["preflight_id"])
        from .apply import apply_candidate, candidate_diff

        report.diff = candidate_diff(pt, report.candidate_id)
        if opts.dry_run:
            report.outcome = "would-fix" if not left else "partial"
        else:
            try:
                rep = apply_candidate(pt, report.candidate_id, approve=approve)
            except GateFailed as exc:
                report.outcome = "not-approved"
                report.warnings.append(exc.message)
            else:
                report.change_id, report.written = rep.change_id, rep.files
                report.outcome = "fixed" if not left else "partial"
                applied = [[c["round"], c["row"]["cand"]] for c in chain]
    if left and report.outcome == "no-safe-fix":
        report.explanation = pt.query("fix.explain", run_id=run.run_id, round=0)

    run.timings["total_s"] = round(time.perf_counter() - t_start, 3)
    run.timings = {k: round(v, 3) for k, v in run.timings.items()}
    report.tokens, report.timings, report.warnings = run.tokens, run.timings, run.warnings + report.warnings
    pt.run("fix.record_run", {
        "run_id": run.run_id, "seed": seed, "started_at": time.time() - run.timings["total_s"],
        "diagnostics": report.errors_before, "rounds": len(report.rounds), "applied": applied,
        "tokens": run.tokens, "outcome": report.outcome, "timings": run.timings,
        "patterns": [[p.id, list(p.meta.get("codes") or []), str(p.meta.get("summary", ""))] for p in _patterns(pt)]})
    return report


def seed_facts(pt: Pt, seed: str, run_id: str) -> int:
    """Store round 0's facts of SEED's crate exactly as `pt run fix` does, under `run_id`
    (scripts/fix_facts.py turns them into golden cases). -> the number of errors."""
    _ensure_graph(pt, lambda s: None)
    check, _ = check_tree(pt, [_seed_path(pt.workspace, seed)])
    errors = [d for d in check.diagnostics if d.severity == "error"]
    _facts(pt, run_id, 0, errors, _Tree(pt.workspace))
    return len(errors)


def _seed_path(ws: Path, seed: str) -> str:
    p = Path(seed)
    p = p if p.is_absolute() else (Path.cwd() / p)
    if not p.exists() and not Path(seed).is_absolute():
        p = ws / seed  # relative to the workspace root also works (`pt -C ws run fix --seed src/x.rs`)
    try:
        rel = p.resolve().relative_to(ws.resolve()).as_posix()
    except ValueError:
        raise UsageError(f"seed {seed} is not inside the workspace {ws}") from None
    if not p.is_file():
        raise UsageError(f"seed {seed}: no such file")
    if p.suffix != ".rs":
        raise UsageError(f"seed {seed} is not a .rs file")
    return rel


def _ensure_graph(pt: Pt, progress: Callable[[str], None]) -> None:
    """The fix flow maps diagnostics to nodes: bring the graph up to date first (cheap when it is)."""
    from .ingest import ingest

    rep = ingest(pt.workspace, pt.store, progress=sys.stderr.isatty())  # a first run on a big tree takes a while
    if rep.files_parsed:
        progress(f"graph updated: {rep.files_parsed} file{'s' * (rep.files_parsed != 1)} ingested")
