"""PreFlight: prove a candidate compiles before anything touches the user's tree.

The stages run in the mirror (adapters/mirror.py), never in the workspace. Which stages run, in
which order, and which failure ends the run is `preflight.stages` under the policy (today: ra, a
rust-analyzer overlay fast reject, off by default; cargo, `cargo check --message-format=json`,
always; tests, the tests that reach an edited node, off by default). Python performs the
effects; the rules decide which node a diagnostic belongs to and what is "new" against the
baseline of the same tree (`preflight.record_result`), which crates and targets to check
(`preflight.check_scope`), which tests to run (`preflight.impacted_tests`) and the verdict
(`preflight.gate`). The steps are declared in rules/preflight/flow.yaml.

Public API (the CLI, `pt run fix` and agent servers use these):

    from parseltongue.runner.candidate import NodeEdit, build_from_nodes, build_from_diff
    from parseltongue.runner.preflight import run_preflight, check_tree
    cand = build_from_nodes(pt, [NodeEdit("fn:src/a.rs::f", "Edit", new_code)])
    report = run_preflight(pt, cand)     # PreflightReport: .verdict "passed" | "failed",
                                         # .candidate_id, .diagnostics, .diff, .as_dict()
    run, baseline_id, warnings = check_tree(pt, ["src/a.rs"])   # the tree as it is (errors to fix)

Then `runner.apply.apply_candidate(pt, report.candidate_id, approve)` writes a passed candidate
and `runner.apply.undo_change(pt, change_id)` restores.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass

from ..adapters import cargo
from ..adapters.fs import digest
from ..adapters.mirror import Mirror, SyncReport
from .api import Pt
from .candidate import Candidate
from .errors import GateFailed, UsageError
from .flows import flow

_TUPLE = re.compile(r"but a tuple (\[.*\]) is found")


def gate_reason(exc: GateFailed) -> str:
    """A failed `:assert none` names its tuple; pt's gates put the reason first, then what failed."""
    m = _TUPLE.search(exc.message)
    if not m:
        return exc.message
    try:
        why, what, *rest = json.loads(m.group(1))
    except (ValueError, TypeError):
        return exc.message
    detail = f" ({rest[0]})" if rest and rest[0] else ""
    return f"{why}: {what}{detail}"


@dataclass
class StageReport:
    stage: str
    passed: bool
    new_errors: int
    new_warnings: int
    elapsed_ms: float
    baseline: str = ""
    note: str = ""


@dataclass
class PreflightReport:
    candidate_id: str
    verdict: str  # passed | failed
    files: list  # [{path, base_hash, new_hash, created}]
    nodes: list  # [{id, action}]
    stages: list  # [StageReport]
    diagnostics: list  # rows of preflight.diagnostics
    failed_stages: list
    missing_stages: list
    scope: list  # crates checked ([] = whole workspace)
    sync: dict
    warnings: list
    diff: str
    elapsed_s: float
    cargo_run: object = None  # cargo.CargoRun of stage 2 (not part of the JSON report)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "cargo_run"}
        d["stages"] = [asdict(s) for s in self.stages]
        return json.loads(json.dumps(d))  # a deep copy, as asdict() gave


@dataclass
class Scope:
    crates: list  # [] = the whole workspace
    all_targets: bool
    features: cargo.Features = cargo.Features()  # passed through to every cargo run (and rust-analyzer)

    def key(self) -> str:
        """What a stored cargo baseline of one tree is keyed by, besides the tree digest."""
        return ("cargo:" + (",".join(self.crates) or "*") + (":all-targets" if self.all_targets else "")
                + (":" + self.features.key() if self.features.key() else ""))


def _policy(pt: Pt) -> dict:
    return {r["key"]: r["value"] for r in flow("preflight").query(pt, "policy")}


def _scope(pt: Pt, files: list, features: cargo.Features) -> Scope:
    """What to check for edits of `files` (a rule: crates, the policy's override, targets), with
    the features the caller asked for."""
    rows = flow("preflight").query(pt, "scope", files=files)
    crates = sorted(r["crate"] for r in rows)
    return Scope([] if (not rows or "*" in crates) else crates, any(r["all_targets"] for r in rows), features)


def _diag_rows(cand: Candidate, diags: list) -> list:
    """cargo diagnostics -> record_result rows, bytes in the user's coordinates."""
    rows = []
    for seq, d in enumerate(diags):
        fc = cand.file(d.file) if d.file else None
        byte, hint = fc.to_base(d.byte_start) if fc else (d.byte_start if d.file else -1, "")
        rows.append([seq, d.file, d.line, d.col, byte, d.severity, d.code, d.message, hint])
    return rows


class _Runner:
    """One PreFlight run's effects in the (locked, synced) mirror; each stage records its result."""

    def __init__(self, pt: Pt, cand: Candidate, policy: dict, mirror: Mirror, scope: Scope, sync: SyncReport,
                 error_gate: str = "", max_new_warnings: int = -2):
        self.pt, self.cand, self.policy, self.mirror, self.scope, self.sync = pt, cand, policy, mirror, scope, sync
        self.error_gate, self.max_new_warnings = error_gate, max_new_warnings
        self.cargo_run: cargo.CargoRun | None = None  # the candidate's stage-2 run (pt run fix reads its diagnostics)
        self.cid = cand.id
        self.stages: list[StageReport] = []
        self.warnings: list[str] = list(mirror.notes)
        self.in_mirror = False  # does the mirror hold the candidate (True) or the user's tree?
        self.verdict: dict | None = None  # set when the last stage's record also gave the verdict

    def record(self, stage: str, rows: list, elapsed_s: float, baseline: str = "", note: str = "",
               candidate_id: str | None = None, decide: bool = False) -> StageReport:
        """Store a stage's diagnostics; `decide` (the run's last stage) also lets the gate rule
        give the verdict in the same transaction - one SQLite commit less on every PreFlight."""
        res = flow("preflight").run(self.pt, "record", {
            "candidate_id": candidate_id or self.cid, "stage": stage, "baseline": baseline,
            "diags": rows, "elapsed_ms": round(elapsed_s * 1000.0, 1), "error_gate": self.error_gate,
            "max_new_warnings": self.max_new_warnings},
            vars={"decide": decide}).dicts()[0]
        if decide:
            self.verdict = res
        rep = StageReport(stage, res["passed"], res["new_errors"], res["new_warnings"], res["elapsed_ms"], baseline, note)
        if candidate_id is None:
            self.stages.append(rep)
        return rep

    def to_candidate(self) -> None:
        if not self.in_mirror:
            self.mirror.write({f.path: f.new for f in self.cand.files})
            self.in_mirror = True

    def to_baseline(self) -> None:
        if self.in_mirror:
            self.mirror.sync()
            self.in_mirror = False

    def baseline(self, stage: str, key: str, run) -> str:
        """The stored baseline of this tree for a stage, computed once per tree digest."""
        bid = f"baseline:{self.sync.digest}:{key}"
        if not flow("preflight").query(self.pt, "results", candidate_id=bid):
            self.to_baseline()
            out = run()
            self.record(stage, [[i, d.file, d.line, d.col, d.byte_start if d.file else -1, d.severity, d.code, d.message, ""]
                                for i, d in enumerate(out.diagnostics)], out.elapsed_s, candidate_id=bid)
        return bid

    # -- stage ra: rust-analyzer overlay diagnostics
    def ra(self, last: bool = False) -> StageReport | None:
        from ..adapters import rust_analyzer as ra

        texts = {f.path: f.new.decode("utf-8") for f in self.cand.files if f.path.endswith(".rs")}
        if not texts:
            return None
        t0 = time.perf_counter()
        timeout = float(self.policy["timeout_ra_s"])
        self.to_baseline()  # RA reads every file it is not given from the mirror's disk
        # a warm session when the graph's owner lends one (Dobby), else a new one for this run; a
        # lent session analyses the default features, so other features get their own
        config = ra.ra_config(self.mirror.root, features=self.scope.features) if self.scope.features.key() else None
        try:
            with ra.session_over(self.mirror.root, timeout, timeout, self.pt.ra_source, config=config) as session:
                with session.overlay(texts) as ov:
                    cand_diags = ov.diagnostics(timeout)
                bases = {f.path: f.base.decode("utf-8") for f in self.cand.files if f.path in texts and f.base is not None}
                base_diags = {}
                if bases:
                    with session.overlay(bases) as ov:
                        base_diags = ov.diagnostics(timeout)
        except ra.RaError as exc:
            self.warnings.append(f"stage ra skipped: {exc}")
            return None
        elapsed = time.perf_counter() - t0

        def rows(diags: dict, source: dict, mapped: bool) -> list:
            out = []
            for path, ds in sorted(diags.items()):
                index = ra.LineIndex(source[path])
                fc = self.cand.file(path)
                for d in ds:
                    byte = index.offset(d.range.start)
                    b, hint = fc.to_base(byte) if mapped else (byte, "")
                    out.append([len(out), path, d.range.start.line + 1, d.range.start.character + 1, b,
                                d.severity_name if d.severity_name in ("error", "warning") else "info",
                                d.code or "", d.message, hint])
            return out

        bid = f"baseline:ra:{self.cid}"
        self.record("ra", rows(base_diags, bases, False), 0.0, candidate_id=bid)
        return self.record("ra", rows(cand_diags, texts, True), elapsed, baseline=bid, decide=last)

    # -- stage cargo: cargo check
    def start_cargo(self) -> cargo.CargoJob:
        return cargo.start_check(self.mirror.root, packages=self.scope.crates or None,
                                 all_targets=self.scope.all_targets, features=self.scope.features,
                                 target_dir=self.mirror.target_dir, timeout=float(self.policy["timeout_cargo_s"]))

    def cargo(self, meanwhile=None, last: bool = False) -> StageReport:
        """`meanwhile()` runs while rustc does (the graph writes of run_preflight): on two cores
        that bookkeeping is then off the critical path."""
        self.to_candidate()
        job = self.start_cargo()
        try:
            if meanwhile:
                meanwhile()
        except BaseException:
            job.kill()
            raise
        run = job.wait()
        self.cargo_run = run
        baseline = ""
        if run.diagnostics:  # only then is there anything to compare
            baseline = self.baseline("cargo", self.scope.key(), lambda: self.start_cargo().wait())
        return self.record("cargo", _diag_rows(self.cand, run.diagnostics), run.elapsed_s, baseline, decide=last)

    # -- stage tests: the tests that reach an edited node
    def tests(self, last: bool = True) -> StageReport:
        edited = [n.id for n in self.cand.nodes if n.action != "Create"]
        found = flow("preflight").query(self.pt, "tests", nodes=edited, max_depth=int(self.policy["test_depth"])) if edited else []
        if not found:
            return self.record("tests", [], 0.0, note="no test reaches the edited nodes", decide=last)
        crates = sorted({t["crate"] for t in found})
        names = sorted({t["name"] for t in found})
        by_name = {t["name"]: t["id"] for t in found}

        def run_tests():
            return cargo.run_tests(self.mirror.root, packages=crates, filters=names, features=self.scope.features,
                                   target_dir=self.mirror.target_dir, timeout=float(self.policy["timeout_tests_s"]))

        self.to_candidate()
        run = run_tests()
        rows = _diag_rows(self.cand, run.diagnostics)
        for r in rows:  # a failed test belongs to the test's node
            if r[6] == "test-failed":
                name = r[7].split()[1].rsplit("::", 1)[-1]
                r[8] = by_name.get(name, "")
        baseline = ""
        if run.diagnostics:
            baseline = self.baseline("tests", "tests:" + digest(json.dumps([crates, names]).encode())[:16], run_tests)
        return self.record("tests", rows, run.elapsed_s, baseline, decide=last,
                           note=f"{len(run.tests)} tests run: {', '.join(names)}")


class EarlyCheck:
    """`cargo check` of one crate of the user's tree in the mirror, started before the graph is
    there: on a cold workspace `pt run fix` builds the seed's crate's graph while rustc builds its
    dependencies (both take most of a first fix; one after the other they add up). `check_tree`
    takes its run when the tree and the scope the rule gives are the ones it checked; otherwise
    it checks again, on a target directory this one has warmed."""

    def __init__(self, pt: Pt, crates: list):
        self.scope = Scope(sorted(crates), False)
        self.run: cargo.CargoRun | None = None
        self.digest = ""
        self._job: cargo.CargoJob | None = None
        self._cancelled = False
        timeout = float(_policy(pt)["timeout_cargo_s"])
        self._thread = threading.Thread(target=self._go, args=(pt.workspace, timeout), daemon=True)
        self._thread.start()

    def _go(self, workspace, timeout: float) -> None:
        try:
            mirror = Mirror(workspace)
            with mirror.locked():
                self.digest = mirror.sync().digest
                if self._cancelled:
                    return
                self._job = cargo.start_check(mirror.root, packages=self.scope.crates, target_dir=mirror.target_dir,
                                              timeout=timeout)
                self.run = self._job.wait()
        except Exception:  # noqa: BLE001 - only a head start: check_tree runs the check itself then
            self.run = None

    def done(self) -> "EarlyCheck":
        self._thread.join()
        return self

    def cancel(self) -> None:
        self._cancelled = True
        if self._job is not None:
            self._job.kill()
        self._thread.join()

    def answers(self, digest: str, scope: Scope) -> cargo.CargoRun | None:
        """Its run, if it checked this tree (same mirror digest) with this scope."""
        self.done()
        ok = self.run is not None and self.digest == digest and scope == self.scope
        return self.run if ok else None


def check_tree(pt: Pt, files: list, early: EarlyCheck | None = None,
               features: cargo.Features = cargo.Features()) -> tuple[cargo.CargoRun, str, list]:
    """`cargo check` of the user's tree as it is (in the mirror, never in the tree), scoped as a
    candidate editing `files` would be, with `features`. Stored as that tree's baseline, so the PreFlights that
    follow compare against it without checking the same tree again. `early`: a check started
    before (EarlyCheck), taken when it checked the same tree and scope. -> (run, baseline id,
    warnings: what the mirror could not hold, e.g. a path dependency containing the workspace)."""
    policy = _policy(pt)
    scope = _scope(pt, files, features)
    if early is not None:
        early.done()  # it holds the mirror's lock until rustc is done
    mirror = Mirror(pt.workspace)
    with mirror.locked():
        sync = mirror.sync()
        runner = _Runner(pt, Candidate([], []), policy, mirror, scope, sync)
        out: list = []

        def run():
            got = early.answers(sync.digest, scope) if early is not None else None
            out.append(got or runner.start_cargo().wait())
            return out[0]

        bid = runner.baseline("cargo", scope.key(), run)
        if not out:  # stored already: the run is needed for its spans and suggestions
            run()
    return out[0], bid, runner.warnings


def run_preflight(pt: Pt, cand: Candidate, error_gate: str = "", max_new_warnings: int = -2,
                  features: cargo.Features = cargo.Features()) -> PreflightReport:
    """Queue the candidate, run the stages `preflight.stages` lists in the mirror, let the gate
    decide. `error_gate` and `max_new_warnings` override the policy's for this run ('new': errors
    the tree already has do not fail it; -1: any number of new warnings); `features` go to every
    cargo run and to rust-analyzer. A candidate the draft
    tray refuses is a UsageError; the user's tree is never written."""
    t0 = time.perf_counter()
    cid = cand.id
    pf = flow("preflight")
    policy = _policy(pt)
    scope = _scope(pt, [f.path for f in cand.files], features)

    def register() -> None:
        """The draft tray (current code of the touched nodes, then the proposal) and the queue
        (which also clears results of an earlier run of the same candidate)."""
        current = [[n.id, n.current_code] for n in cand.nodes if n.action != "Create"]
        try:
            if current:
                pf.run(pt, "current", {"rows": current})
            pf.run(pt, "propose", {"candidate_id": cid, "rows": [[n.id, n.action, n.future_code] for n in cand.nodes]})
            pf.run(pt, "enqueue", {"candidate_id": cid, "now": time.time(), "files": [
                [f.path, f.base_hash, f.new_hash, f.new.decode("utf-8")] for f in cand.files]})
        except GateFailed as exc:  # the tray refused the proposal: that is bad input, not a failed check
            raise UsageError(f"candidate refused: {gate_reason(exc)}") from None

    stages = pf.query(pt, "stages")
    mirror = Mirror(pt.workspace)
    with mirror.locked():
        sync = mirror.sync()
        runner = _Runner(pt, cand, policy, mirror, scope, sync, error_gate, max_new_warnings)
        # Registering costs graph writes: they overlap rustc when cargo is the first stage.
        overlap = stages[0]["stage"] == "cargo"
        if not overlap:
            register()
        for i, st in enumerate(stages):
            last = i == len(stages) - 1
            if st["stage"] == "cargo":
                rep = runner.cargo(meanwhile=register if overlap else None, last=last)
            else:
                rep = getattr(runner, st["stage"])(last=last)
            if rep is not None and not rep.passed and st["stop_on_fail"]:
                break

    # The gate (which also stamps the nodes) ran with the last record, unless the run stopped early.
    verdict_row = runner.verdict or pf.query(pt, "gate", candidate_id=cid)[0]
    return PreflightReport(
        candidate_id=cid, verdict=verdict_row["verdict"],
        files=[{"path": f.path, "base_hash": f.base_hash, "new_hash": f.new_hash, "created": f.base is None} for f in cand.files],
        nodes=[{"id": n.id, "action": n.action} for n in cand.nodes],
        stages=runner.stages, diagnostics=pf.query(pt, "diagnostics", candidate_id=cid),
        failed_stages=verdict_row["failed_stages"], missing_stages=verdict_row["missing_stages"],
        scope=scope.crates, sync={"files": sync.files, "copied": sync.copied, "removed": sync.removed,
                                  "hashed": sync.hashed, "elapsed_s": round(sync.elapsed_s, 4)},
        warnings=runner.warnings, diff=cand.diff(), elapsed_s=round(time.perf_counter() - t0, 3),
        cargo_run=runner.cargo_run)
