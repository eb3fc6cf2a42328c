"""`pt run fix --seed FILE`: deterministic-first fixes, each proven by PreFlight, applied once.

The flow's steps are declared in rules/fix/flow.yaml and its decisions are rules: which patterns
answer a round's errors (`fix.select_patterns`), the order candidates are worth trying
(`fix.plan`), when a round stops trying (`fix.next_candidate`: candidate cap, tier done), whether
and with which budget the LLM is asked (`fix.llm_ask`), a round's outcome and whether another
round starts (`fix.round_outcome`), and the run's outcome - offer, apply, explain (`fix.outcome`).
Values (rounds, cap, budgets, the PreFlight gate for candidates) are in rules/fix/_policy.cozo.

This module performs the effects only: ingest, `cargo check` and PreFlight in the mirror, running
the selected pattern programs, the LLM call, and the apply. A round starts from the last
champion's text and its own `cargo check` output; only the accumulated change - itself a
PreFlight-passed candidate relative to the files on disk - is shown and, when approved, written
atomically (undo with `pt undo`).

Public API (the CLI and agent servers use these):

    from parseltongue.runner.fix import FixOptions, run_fix
    rep = run_fix(pt, FixOptions(seed="src/a.rs", dry_run=True), approve=lambda diff: False)
    rep.outcome        # no-errors | would-fix | partial | no-safe-fix | fixed | not-approved
    rep.diff, rep.candidate_id   # a dry run's proven change; apply it later with
                                 # runner.apply.apply_candidate(pt, rep.candidate_id, approve)
"""
from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..adapters import cargo
from ..adapters.fs import head_text
from .api import Pt, workspace_path
from .candidate import build_from_texts
from .contracts import PATTERN_COLUMNS, pattern_row_problem
from .diffs import changed_lines
from .errors import GateFailed, PtError, UsageError
from .fix_text import Offsets, Tree, apply_edits, diag_dict, put_facts
from .a4 import fix_findings
from .flows import flow
from .preflight import EarlyCheck, check_tree, run_preflight


@dataclass
class FixOptions:
    seed: str
    dry_run: bool = False
    max_rounds: int = -1  # -1: the fix policy's (rules/fix/_policy.cozo)
    max_candidates: int = -1  # PreFlights per round; -1: the fix policy's
    allow_signature_change: bool = False
    partial: bool = False  # apply a change that removes some errors but not all
    llm: object = None  # adapters.llm.LlmConfig, or None for the deterministic engine alone
    features: list = field(default_factory=list)  # cargo --features, for every check (round 0 and PreFlight)
    all_features: bool = False
    no_default_features: bool = False

    def cargo_features(self) -> cargo.Features:
        return cargo.Features(tuple(self.features), self.all_features, self.no_default_features)


@dataclass
class FixReport:
    run_id: str
    seed: str
    outcome: str  # fixed | would-fix (dry run) | partial | no-errors | no-safe-fix | not-approved
    errors_before: list  # the seed diagnostics of round 0
    errors_left: list  # what the chosen change still leaves (empty when fixed)
    rounds: list  # per round: errors, candidates tried, why trying stopped, outcome, champion
    diff: str = ""
    candidate_id: str = ""
    change_id: str = ""
    written: list = field(default_factory=list)
    tokens: int = 0
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    explanation: list = field(default_factory=list)  # per node, the errors nothing fixed
    findings: list = field(default_factory=list)  # A4 anti-patterns near the errors / in the change (advice)
    features: dict = field(default_factory=dict)  # the cargo features every check used (FixOptions)
    needs_features: list = field(default_factory=list)  # outcome not-compiled: features the seed's code needs

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Plan:
    cand: str
    tier: int
    pattern: str
    diag: int
    note: str
    edits: list  # [(file, start, end, replacement)] character offsets in the round's text
    members: list = field(default_factory=list)  # a combination's: [pattern, diag, ord] (fix.combine)


def _patterns(pt: Pt) -> list:
    return sorted((p for p in pt.registry.all().values() if p.id.startswith("patterns.")), key=lambda p: p.id)


class _Run:
    def __init__(self, pt: Pt, opts: FixOptions, seed: str, progress: Callable[[str], None]):
        self.pt, self.opts, self.seed, self.say = pt, opts, seed, progress
        self.flow = flow("fix")
        self.policy = {r["key"]: r["value"] for r in self.flow.query(pt, "policy")}
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.tree = Tree(pt.workspace)
        self.tried: set[str] = set()
        self.plan_order: dict[int, list] = {}  # round -> its candidates in fix.plan's order (the report's)
        self.heads: dict[str, str | None] = {}  # file -> its text at git HEAD (the signature policy's fact)
        self.signature: dict[tuple, list] = {}  # (round, cand) -> the signature policy's verdicts
        self.tokens = 0
        self.warnings: list[str] = []
        self.timings = {"check_s": 0.0, "patterns_s": 0.0, "preflight_s": 0.0, "llm_s": 0.0}

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def load_library(self) -> None:
        """The patterns that keep their contract (so each declares codes); the others are warned
        about when the run starts."""
        pats = [[p.id, [str(c) for c in p.meta["codes"]], p.summary, p.origin, str(p.path)] for p in _patterns(self.pt)]
        self.flow.run(self.pt, "library", {"patterns": pats})

    def head(self, files) -> list:
        """[[path, text]] of FILES at git HEAD (none outside a git repository), for the signature
        policy (rules/fix/_signature_policy.cozo: a change back to HEAD's signature is a restoration)."""
        for f in files:
            if f not in self.heads:
                self.heads[f] = head_text(self.pt.workspace, f)
        return [[f, self.heads[f]] for f in sorted(files) if self.heads[f] is not None]

    def preflight(self, cand):
        t0 = time.perf_counter()
        rep = run_preflight(self.pt, cand, error_gate=self.policy["error_gate"],
                            max_new_warnings=int(self.policy["max_new_warnings"]), features=self.opts.cargo_features())
        self.timings["preflight_s"] += time.perf_counter() - t0
        return rep

    # -- candidates
    def proposals(self, rnd: int) -> list:
        """Every selected pattern's edits as fix.plan rows. A pattern that fails or breaks its
        output contract is skipped with a warning naming it; it never ends the run."""
        rows = []
        for sel in self.flow.query(self.pt, "patterns", run_id=self.run_id, round=rnd):
            pid = sel["pattern"]
            try:
                res = self.pt.run(pid, {"run_id": self.run_id, "round": rnd})
            except PtError as exc:
                self.warn(f"pattern {pid} skipped: {exc.message.splitlines()[0] if exc.message else 'failed'}")
                continue
            missing = [c for c in PATTERN_COLUMNS if c not in res.headers]
            if missing:
                self.warn(f"pattern {pid} skipped: its output lacks {', '.join(missing)} "
                          f"(a pattern returns ?[{', '.join(PATTERN_COLUMNS)}])")
                continue
            out = res.dicts()
            bad = next((p for p in map(pattern_row_problem, out) if p), "")
            if bad:
                self.warn(f"pattern {pid} skipped: {bad}")
                continue
            rows += [[pid, r["tier"], r["diag"], r["alt"], r["file_path"], r["start"], r["end"], r["replacement"], r["note"]]
                     for r in out]
        return rows

    def plans(self, rnd: int) -> list:
        t0 = time.perf_counter()
        proposals = self.proposals(rnd)
        plans: dict[str, _Plan] = {}
        for r in self.flow.query(self.pt, "plan", edits=proposals, run_id=self.run_id, round=rnd) if proposals else []:
            p = plans.setdefault(r["cand"], _Plan(r["cand"], r["tier"], r["pattern"], r["diag"], r["note"], []))
            e = (r["file_path"], r["start"], r["end"], r["replacement"])
            if e not in p.edits:
                p.edits.append(e)
        self.timings["patterns_s"] += time.perf_counter() - t0
        return list(plans.values())  # in the order fix.plan gave

    def try_one(self, rnd: int, ord_: int, plan: _Plan, errors_before: int) -> dict | None:
        """PreFlight one candidate (everything accepted so far plus this plan) and record it;
        None when its edits do not apply or it repeats a candidate already tried."""
        new = apply_edits(self.tree, plan.edits)
        if new is None:
            return None
        cand = build_from_texts(self.pt, {**self.tree.changed, **new})
        if cand is None or cand.id in self.tried:
            return None
        self.tried.add(cand.id)
        t0 = time.perf_counter()
        rep = self.preflight(cand)
        elapsed = time.perf_counter() - t0
        run = rep.cargo_run
        errors_after = sum(1 for d in run.diagnostics if d.severity == "error") if run else errors_before + 1
        cargo_stage = next((s for s in rep.stages if s.stage == "cargo"), None)  # absent when stage ra rejected
        row = {"cand": plan.cand, "pattern": plan.pattern, "diag": plan.diag, "tier": plan.tier, "ord": ord_,
               "note": plan.note, "preflight_id": rep.candidate_id, "verdict": rep.verdict,
               "errors_before": errors_before, "errors_after": errors_after,
               "new_warnings": cargo_stage.new_warnings if cargo_stage else 0,
               "diff_lines": sum(changed_lines(self.tree.get(f) or b"", t) for f, t in new.items()),
               "edit_chars": sum(e - s + len(r) for _, s, e, r in plan.edits),
               "elapsed_ms": round(elapsed * 1000.0, 1)}
        rec = self.flow.run(self.pt, "record", {"run_id": self.run_id, "round": rnd, **row,
                                                "head": self.head(new), "members": plan.members}).dicts()[0]
        row["new_errors"], row["signature"] = rec["new_errors"], rec["signature"]
        self.signature[(rnd, plan.cand)] = rec["signature"]
        tag = ord_ if ord_ >= 0 else f"c{ord_ + 1000}"  # combinations (fix.combine) come first
        self.say(f"  [{rnd}.{tag}] {plan.pattern.removeprefix('patterns.')}: {plan.note[:70]} -> "
                 f"{rep.verdict}, {errors_after} error{'s' * (errors_after != 1)} left")
        cargo_diags = [d for d in rep.diagnostics if d["stage"] == "cargo"]
        return {"round": rnd, "row": row, "texts": new, "run": run,
                "nodes": {d["seq"]: d["node_id"] for d in cargo_diags},  # cargo's diagnostic -> PreFlight's node
                "new_errors": sorted({(d["file_path"], d["line"], d["node_id"]) for d in cargo_diags
                                      if d["is_new"] and d["severity"] == "error"})}

    def llm_plans(self, rnd: int, errors: list, feedback: list | None, budget: int) -> list:
        from ..adapters import llm

        node_of = {r["diag"]: r["node_id"] for r in self.flow.query(self.pt, "diags", run_id=self.run_id, round=rnd)}
        nodes = list(dict.fromkeys(n for n in node_of.values() if n))
        t0 = time.perf_counter()
        try:
            ctx = self.flow.run(self.pt, "context", {"seeds": nodes, "budget_tokens": budget}, {"use_vectors": False}).dicts()
            diags = [dict(diag_dict(d), rendered=d.rendered, node_id=node_of.get(i, "")) for i, d in enumerate(errors)]
            prop = llm.propose(self.pt.workspace, self.opts.llm, diags, ctx, feedback)
        except llm.LlmError as exc:
            self.warn(f"LLM: {exc}")
            return []
        finally:
            self.timings["llm_s"] += time.perf_counter() - t0
        self.tokens += prop.tokens_in + prop.tokens_out
        for r in prop.rejected:
            self.warn(f"LLM edit refused: {r}")
        edits = []
        for e in prop.edits:
            if e.file in self.tree.changed:  # the graph's spans describe the file on disk only
                self.warn(f"LLM edit refused: {e.file} was already edited by an earlier round")
                continue
            o = Offsets(self.tree.get(e.file))
            edits.append((e.file, o.char(e.start), o.char(e.end), e.replacement))
        return [_Plan(f"llm/{rnd}/{len(feedback or [])}", 5, "llm", -1, "LLM edit", edits)] if edits else []

    # -- a round
    def combine(self, rnd: int, plans: list, errors_before: int, nodes: list, attempts: dict) -> None:
        """Prove the disjoint best candidates of several diagnostics as one (fix.combine); when
        that is not worth keeping, the smaller combinations fix.split names, up to the policy's
        combine_tries. Each is recorded like any candidate (pattern `combined`)."""
        members = [[r["ord"], r["diag"]] for r in self.flow.query(
            self.pt, "combine", run_id=self.run_id, round=rnd, nodes=nodes,
            graph_files=sorted({e[0] for p in plans for e in p.edits} - set(self.tree.changed)),
            edits=[[i, p.diag, p.pattern, *e] for i, p in enumerate(plans) if p.diag >= 0 for e in p.edits])]
        queue = [members] if members else []
        tries = 0
        while queue and tries < int(self.policy["combine_tries"]):
            members = queue.pop(0)
            parts = [plans[o] for o, _ in members]
            edits = list(dict.fromkeys(e for p in parts for e in p.edits))  # identical edits are one
            cand = f"combined/{tries}"
            plan = _Plan(cand, max(p.tier for p in parts), "combined", -1,
                         f"{len(parts)} diagnostics at once: " + "; ".join(p.note for p in parts), edits,
                         [[p.pattern, p.diag, o] for p, (o, _) in zip(parts, members)])
            got = self.try_one(rnd, tries - 1000, plan, errors_before)
            tries += 1
            if got is None:
                continue
            attempts[cand] = got
            run = got["run"]
            left = [[d.file, d.code, d.message] for d in (run.diagnostics if run else []) if d.severity == "error"]
            groups: dict[int, list] = {}
            for r in self.flow.query(self.pt, "split", run_id=self.run_id, round=rnd, cand=cand, members=members,
                                     errors_after=left, new_errors=[list(e) for e in got["new_errors"]], nodes=nodes,
                                     allow_signature_change=self.opts.allow_signature_change):
                groups.setdefault(r["group"], []).append(r["ord"])
            by_ord = dict((o, d) for o, d in members)
            queue = [[[o, by_ord[o]] for o in g] for _, g in sorted(groups.items())] + queue

    def round(self, rnd: int, check: cargo.CargoRun, nodes: list | None = None) -> tuple[dict, dict | None, str]:
        """Facts, candidates in plan order until the rules say stop, the LLM when the rules say
        ask, then the round's outcome. `nodes`: [diag, node_id] PreFlight gave the round's errors
        (a later round's, whose files the graph no longer describes). -> (fix.round_outcome row,
        the champion's attempt, why trying stopped)."""
        nodes = nodes or []
        errors = [d for d in check.diagnostics if d.severity == "error"]
        put_facts(self.pt, self.run_id, rnd, errors, self.tree)
        plans = self.plans(rnd)
        self.plan_order[rnd] = [p.cand for p in plans]
        self.say(f"round {rnd}: {len(errors)} error{'s' * (len(errors) != 1)}, {len(plans)} candidate"
                 f"{'s' * (len(plans) != 1)}")
        attempts: dict[str, dict] = {}
        self.combine(rnd, plans, len(errors), nodes, attempts)
        order = [[i, p.tier, p.diag < 0] for i, p in enumerate(plans)]  # together: a pattern's every-diagnostic candidate
        after = -1
        while True:
            nxt = self.flow.query(self.pt, "next", run_id=self.run_id, round=rnd, plan=order, after=after,
                                  max_candidates=self.opts.max_candidates,
                                  allow_signature_change=self.opts.allow_signature_change)[0]
            if nxt["ord"] < 0:
                stop = nxt["stop"]
                break
            after = nxt["ord"]
            got = self.try_one(rnd, after, plans[after], len(errors))
            if got is not None:
                attempts[plans[after].cand] = got
        asked, feedback = 0, None
        provider = getattr(self.opts.llm, "provider", "none") if self.opts.llm is not None else "none"
        while True:
            ask = self.flow.query(self.pt, "ask_llm", run_id=self.run_id, round=rnd, provider=provider, asked=asked,
                                  allow_signature_change=self.opts.allow_signature_change)[0]
            if not ask["ask"]:
                break
            for plan in self.llm_plans(rnd, errors, feedback, ask["budget_tokens"]):
                got = self.try_one(rnd, len(plans) + asked, plan, len(errors))
                if got is not None:
                    attempts[plan.cand] = got
                    feedback = [diag_dict(d) for d in (got["run"].diagnostics if got["run"] else [])]
            asked += 1
        out = self.flow.query(self.pt, "round_outcome", run_id=self.run_id, round=rnd,
                              allow_signature_change=self.opts.allow_signature_change, max_rounds=self.opts.max_rounds)[0]
        return out, attempts.get(out["cand"]), stop

    def final_candidate(self, cid: str) -> str:
        """The accumulated change as PreFlight last saw it. A later candidate of the run touching
        the same node retires it in the draft tray (state superseded); then it is proven again -
        the same bytes give the same id - so that apply's gate holds."""
        rows = self.flow.query(self.pt, "check", candidate_id=cid)
        if rows and rows[0]["state"] == "passed":
            return cid
        return self.preflight(build_from_texts(self.pt, dict(self.tree.changed))).candidate_id


def run_fix(pt: Pt, opts: FixOptions, approve: Callable[[str], bool],
            progress: Callable[[str], None] = lambda s: None) -> FixReport:
    """The whole flow for one seed file. `approve(diff)` is asked before anything is written
    (never on a dry run). Bad input (seed, workspace) is a UsageError; no outcome raises."""
    t_start = time.perf_counter()
    seed = _seed_path(pt.workspace, opts.seed)
    run = _Run(pt, opts, seed, progress)
    # A pattern that breaks its contract (runner/contracts.py) is left out, never the end of the run.
    run.warnings += [f"pattern {pid} skipped: {msg}" for pid, msg in sorted(pt.registry.problems().items())
                     if pid.startswith("patterns.")]
    early = _ensure_graph(pt, seed, progress)
    run.load_library()

    t0 = time.perf_counter()
    check, _, mirror_notes = check_tree(pt, [seed], early, opts.cargo_features())
    run.warnings += mirror_notes
    run.timings["check_s"] += time.perf_counter() - t0
    errors0 = [d for d in check.diagnostics if d.severity == "error"]
    report = FixReport(run.run_id, seed, "no-errors", [diag_dict(d) for d in errors0], [], [])
    feats = opts.cargo_features()
    report.features = feats.as_dict()
    if feats.key() and errors0 and all(d.code == "cargo" and not d.file for d in errors0):
        # cargo refused the feature flags themselves (a feature no package has): bad input
        raise UsageError(f"cargo check failed: {errors0[0].message.removeprefix('error: ')}")
    if not errors0 and check.success is False:
        raise UsageError(f"cargo check failed without a diagnostic: {check.stderr_tail.strip().splitlines()[-1:] or '?'}")
    if not errors0:  # nothing to fix - unless the checks never compiled the seed's code
        manifest = run.flow.query(pt, "seed_manifest", seed=seed)[0]["manifest"]
        report.needs_features = run.flow.query(
            pt, "gated", seed=seed, features=list(feats.names), all_features=feats.all,
            no_default_features=feats.no_default, table=cargo.features_table(pt.workspace, manifest))

    chain: list[dict] = []  # the champions, round by round
    current, rnd, nodes = check, 0, []
    while errors0:
        out, best, stop = run.round(rnd, current, nodes)
        report.rounds.append({"round": rnd, "errors": [diag_dict(d) for d in current.diagnostics if d.severity == "error"],
                              "candidates": [dict(c, signature=run.signature.get((rnd, c["cand"]), []))
                                             for c in run.flow.query(pt, "candidates", run_id=run.run_id, round=rnd)],
                              "stopped": stop, "outcome": out["outcome"], "champion": best["row"] if best else None,
                              "plan": run.plan_order.get(rnd, [])})
        if best is None:
            break
        chain.append(best)
        run.tree.changed.update(best["texts"])
        current = best["run"]
        seqs = [seq for seq, d in enumerate(current.diagnostics) if d.severity == "error"]
        nodes = [[i, best["nodes"].get(seq, "")] for i, seq in enumerate(seqs)]
        if not out["next_round"]:
            break
        rnd += 1

    left = [d for d in current.diagnostics if d.severity == "error"] if chain else errors0
    report.errors_left = [diag_dict(d) for d in left]
    facts = {"errors_before": len(errors0), "errors_left": len(left), "rounds_fixed": len(chain),
             "partial": opts.partial, "dry_run": opts.dry_run, "gated": len(report.needs_features)}
    decision = run.flow.query(pt, "outcome", **facts)[0]
    applied: list = []
    offered = None
    if decision["offer"]:
        from .apply import apply_candidate, candidate_diff

        report.candidate_id = run.final_candidate(chain[-1]["row"]["preflight_id"])
        report.diff = candidate_diff(pt, report.candidate_id)
        offered = build_from_texts(pt, dict(run.tree.changed))  # before apply: its node texts, old and new
        if decision["apply"]:
            try:
                rep = apply_candidate(pt, report.candidate_id, approve=approve)
            except GateFailed as exc:
                decision = run.flow.query(pt, "outcome", **facts, approval="refused")[0]
                report.warnings.append(exc.message)
            else:
                decision = run.flow.query(pt, "outcome", **facts, approval="approved")[0]
                report.change_id, report.written = rep.change_id, rep.files
                applied = [[c["round"], c["row"]["cand"]] for c in chain]
    report.outcome = decision["outcome"]
    report.findings, notes = fix_findings(pt, run.run_id, offered)
    run.warnings += notes
    if decision["explain"]:
        # the errors nothing fixed, as round 0 saw them (lines and nodes of the files on disk)
        report.explanation = run.flow.query(pt, "explain", run_id=run.run_id, round=0,
                                            left_in=report.rounds[-1]["round"])

    run.timings["total_s"] = round(time.perf_counter() - t_start, 3)
    run.timings = {k: round(v, 3) for k, v in run.timings.items()}
    report.tokens, report.timings, report.warnings = run.tokens, run.timings, run.warnings + report.warnings
    run.flow.run(pt, "close", {
        "run_id": run.run_id, "seed": seed, "started_at": time.time() - run.timings["total_s"],
        "diagnostics": report.errors_before, "rounds": len(report.rounds), "applied": applied,
        "tokens": run.tokens, "outcome": report.outcome, "timings": run.timings, **report.features})
    return report


def seed_facts(pt: Pt, seed: str, run_id: str) -> int:
    """Store round 0's facts of SEED's crate exactly as `pt run fix` does, under `run_id`
    (a pattern's golden case, runner/golden.py, runs on them). -> the number of errors."""
    seed = _seed_path(pt.workspace, seed)
    early = _ensure_graph(pt, seed, lambda s: None)
    check, _, _ = check_tree(pt, [seed], early)
    errors = [d for d in check.diagnostics if d.severity == "error"]
    put_facts(pt, run_id, 0, errors, Tree(pt.workspace))
    return len(errors)


def _seed_path(ws: Path, seed: str) -> str:
    rel = workspace_path(ws, seed)  # from the current directory, else the root; refuses outside
    if not (ws / rel).is_file():
        raise UsageError(f"seed {seed}: no such file")
    if not rel.endswith(".rs"):
        raise UsageError(f"seed {seed} is not a .rs file")
    return rel


def _ensure_graph(pt: Pt, seed: str, progress: Callable[[str], None]) -> EarlyCheck | None:
    """The fix flow maps diagnostics to nodes: bring the graph up to date first (cheap when it is).
    A workspace with no graph yet gets the seed's crate and what it depends on only: a first fix
    does not wait for a whole big workspace (the next `pt ingest` adds the rest); and the seed
    crate's cargo check starts in the mirror meanwhile (returned: check_tree takes its run)."""
    from .ingest import ingest_for_seed

    early: list = []

    def start_check(crate: str) -> EarlyCheck:
        early.append(EarlyCheck(pt, [crate]))
        return early[0]

    rep = ingest_for_seed(pt.workspace, pt.store, seed, progress=sys.stderr.isatty(), on_cold=start_check)
    if rep.files_parsed:
        progress(f"graph updated: {rep.files_parsed} file{'s' * (rep.files_parsed != 1)} ingested"
                 + (" (the seed's crate and its dependencies; `pt ingest` adds the rest)" if rep.scoped else ""))
    return early[0] if early else None
