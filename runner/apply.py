"""Apply a candidate that passed PreFlight, and undo it.

The order of effects is what makes this safe:

apply   1. read every file of the candidate and hash it
        2. show the diff; stop unless approved
        3. `codegraph.approve_flip` - one transaction: asserts that the gate passed the candidate,
           that every node passed, that every file still has the bytes the candidate was built
           from and that the texts to write are the checked ones; flips future code to current
           and records `change_history` (before/after text) - *before* any file is written
        4. write each file atomically (`adapters.fs.atomic_write`: temp file in the same
           directory, fsync, rename, fsync the directory), re-checking its hash just before
        5. re-ingest the touched files

undo    1. `codegraph.undo_plan` - asserts no file changed since the apply (a file may hold the
           new bytes - restore it - or already the old ones - leave it)
        2. write the old bytes atomically (re-checking each hash just before)
        3. `codegraph.record_undo` - recorded *after* the writes
        4. re-ingest the touched files

A process killed at any point leaves each file with its old or its new bytes (rename is atomic)
and a history that `pt undo` can finish: killed after 3 and before all of 4, the change is
recorded and the files not yet written still hold their old bytes, which undo leaves alone.
The programs are the steps of rules/codegraph/flow.yaml.

Public API (the CLI and agent servers use these):

    from parseltongue.runner.apply import apply_candidate, candidate_diff, undo_change
    candidate_diff(pt, candidate_id)                       # what would be written, as a diff
    rep = apply_candidate(pt, candidate_id, approve=lambda diff: True)   # ApplyReport
    rep.change_id, rep.files                               # [{path, action}]
    undo_change(pt, rep.change_id)                         # UndoReport; None: the newest change

Both raise GateFailed (nothing written) when a gate refuses - not passed, a file changed since,
not approved - and UsageError for an unknown id.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..adapters.fs import atomic_write, digest
from .api import Pt
from .diffs import unified_diff
from .errors import GateFailed, UsageError
from .flows import flow
from .preflight import gate_reason

# adapters.fs.atomic_write names its temp file `.{name}.pt-tmp-{pid}`
_TMP = re.compile(r"^\.(?P<name>.+)\.pt-tmp-(?P<pid>\d+)$")
def _disk(ws: Path, rel: str) -> bytes | None:
    try:
        return (ws / rel).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {rel}: {exc.strerror}") from None


def _hash(data: bytes | None) -> str:
    return "" if data is None else digest(data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(ws: Path, files: list[str]) -> list[str]:
    """Temp files that a killed pt left next to these files (their writer is gone). They are
    pt's own, never the user's: only names atomic_write makes, only of processes not running."""
    removed = []
    for d in sorted({(ws / f).parent for f in files}):
        if not d.is_dir():
            continue
        for entry in d.iterdir():
            m = _TMP.match(entry.name)
            if m and not _alive(int(m.group("pid"))):
                try:
                    entry.unlink()
                    removed.append(entry.relative_to(ws).as_posix())
                except OSError:
                    pass
    return removed


def _reingest(pt: Pt, files: list[str]) -> list[str]:
    from .ingest import ingest

    rs = [f for f in files if f.endswith(".rs")]
    if rs:
        ingest(pt.workspace, pt.store, paths=rs)
    return rs


@dataclass
class ApplyReport:
    change_id: str
    candidate_id: str
    files: list  # [{path, action: modified|created}]
    reingested: list
    cleaned: list = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class UndoReport:
    change_id: str
    candidate_id: str
    files: list  # [{path, action: restored|removed|left}]
    reingested: list
    cleaned: list = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def newest_passed(pt: Pt) -> str:
    rows = flow("codegraph").query(pt, "newest", state="passed", limit=1)
    if not rows:
        raise UsageError("no candidate has passed PreFlight (run `pt preflight` first)")
    return rows[0]["candidate_id"]


def candidate_files(pt: Pt, candidate_id: str) -> tuple[list[dict], str]:
    rows = flow("codegraph").query(pt, "candidate", candidate_id=candidate_id)
    if not rows:
        raise UsageError(f"unknown candidate {candidate_id!r} (see `pt query preflight.latest`)")
    return rows, rows[0]["state"]


def candidate_diff(pt: Pt, candidate_id: str) -> str:
    rows, _ = candidate_files(pt, candidate_id)
    ws = pt.workspace
    return unified_diff([(r["file_path"], _disk(ws, r["file_path"]), r["new_text"].encode("utf-8")) for r in rows])


def apply_candidate(pt: Pt, candidate_id: str | None = None,
                    approve: Callable[[str], bool] = lambda diff: False) -> ApplyReport:
    """Write a passed candidate's files; `approve(diff)` decides (the CLI asks, or --yes)."""
    t0 = time.perf_counter()
    ws = pt.workspace
    cid = candidate_id or newest_passed(pt)
    rows, state = candidate_files(pt, cid)
    if state != "passed":
        raise GateFailed(f"candidate {cid[:12]} has not passed PreFlight (state: {state}); nothing written")

    before = {r["file_path"]: _disk(ws, r["file_path"]) for r in rows}
    for r in rows:  # a friendlier message than the rule's; approve_flip asserts the same
        if _hash(before[r["file_path"]]) != r["base_hash"]:
            raise GateFailed(f"{r['file_path']} changed on disk since the candidate was built; nothing written "
                             f"(run `pt preflight` again)")
    try:
        before_text = {f: (b or b"").decode("utf-8") for f, b in before.items()}
    except UnicodeDecodeError:
        raise GateFailed("a file of the candidate is no longer UTF-8; nothing written") from None
    after = {r["file_path"]: r["new_text"].encode("utf-8") for r in rows}
    diff = unified_diff([(f, before[f], after[f]) for f in sorted(after)])
    if not approve(diff):
        raise GateFailed("not approved; nothing written (pass --yes to apply without asking)")

    change_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() % 1_000_000_000:09d}-{cid[:8]}"
    try:
        flow("codegraph").run(pt, "flip", {
            "candidate_id": cid, "change_id": change_id, "now": time.time(),
            "disk_hashes": {f: _hash(b) for f, b in before.items()}, "before_text": before_text,
            "after_text": {f: t.decode("utf-8") for f, t in after.items()},
            "after_hashes": {f: digest(t) for f, t in after.items()}})
    except GateFailed as exc:
        raise GateFailed(f"apply refused, nothing written: {gate_reason(exc)}") from None

    cleaned = clean_stale_temps(ws, list(after))
    written = []
    for f in sorted(after):
        # The window between the flip and this write is short but real; never overwrite work.
        if _hash(_disk(ws, f)) != _hash(before[f]):
            raise GateFailed(f"{f} changed on disk while applying; stopped before writing it "
                             f"(written: {', '.join(w['path'] for w in written) or 'none'}). "
                             f"`pt undo {change_id}` puts the written files back")
        path = ws / f
        if before[f] is None:
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, after[f])
        written.append({"path": f, "action": "created" if before[f] is None else "modified"})
    reingested = _reingest(pt, list(after))
    return ApplyReport(change_id, cid, written, reingested, cleaned, round(time.perf_counter() - t0, 3))


def newest_change(pt: Pt) -> str:
    for r in flow("codegraph").query(pt, "history", limit=1000):
        if not r["undone"]:
            return r["change_id"]
    raise UsageError("nothing to undo")


def undo_change(pt: Pt, change_id: str | None = None) -> UndoReport:
    t0 = time.perf_counter()
    ws = pt.workspace
    change_id = change_id or newest_change(pt)
    hist = [r for r in flow("codegraph").query(pt, "history", limit=100000) if r["change_id"] == change_id]
    if not hist:
        raise UsageError(f"unknown change {change_id!r} (see `pt query codegraph.history`)")
    files = list(hist[0]["files"])
    disk = {f: _disk(ws, f) for f in files}
    try:
        plan = flow("codegraph").query(pt, "undo_plan", change_id=change_id, disk_hashes={f: _hash(b) for f, b in disk.items()})
    except GateFailed as exc:
        raise GateFailed(f"undo refused, nothing written: {gate_reason(exc)}") from None

    cleaned = clean_stale_temps(ws, files)
    done = []
    for row in sorted(plan, key=lambda r: r["file_path"]):
        f = row["file_path"]
        if row["action"] == "leave":
            done.append({"path": f, "action": "left"})
            continue
        if _hash(_disk(ws, f)) != row["new_hash"]:
            raise GateFailed(f"{f} changed on disk while undoing; stopped before touching it "
                             f"(restored: {', '.join(d['path'] for d in done if d['action'] != 'left') or 'none'})")
        if row["action"] == "remove":
            (ws / f).unlink()
            done.append({"path": f, "action": "removed"})
        else:
            atomic_write(ws / f, row["before_text"].encode("utf-8"))
            done.append({"path": f, "action": "restored"})
    after = {f: _hash(_disk(ws, f)) for f in files}
    try:
        flow("codegraph").run(pt, "record_undo", {"change_id": change_id, "disk_hashes": after})
    except GateFailed as exc:
        raise GateFailed(f"files restored but the undo could not be recorded: {gate_reason(exc)}") from None
    reingested = _reingest(pt, files)
    return UndoReport(change_id, hist[0]["candidate_id"], done, reingested, cleaned, round(time.perf_counter() - t0, 3))
