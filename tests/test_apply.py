"""Apply and undo on copies of fixture workspaces: a passed candidate is written atomically after
approval, a stale file makes apply refuse, undo restores the exact bytes and refuses when a file
changed since, and a process killed during apply leaves every file old or new, never partial."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parseltongue.runner.api import Pt

from conftest import FIXTURES, REPO

pytestmark = pytest.mark.timeout(300)
needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo not on PATH")

LIB = "calc/src/lib.rs"
DOUBLE = f"fn:{LIB}::double"
FIX = "use std::collections::HashMap;\n"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def shapes(tmp_path) -> Path:
    """examples/shapes: one deliberate error (HashMap used in src/report.rs, never imported)."""
    ws = tmp_path / "shapes"
    shutil.copytree(REPO / "examples" / "shapes", ws)
    (ws / ".parseltongue").mkdir()
    return ws


def fix_patch(ws: Path, tmp_path: Path) -> Path:
    """The fix a user (or pt's fix flow) would propose: import HashMap."""
    lines = (ws / "src/report.rs").read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("use crate::geometry"))
    ctx = lines[at:at + 2]
    body = "".join(" " + ln for ln in ctx)
    patch = (f"--- a/src/report.rs\n+++ b/src/report.rs\n@@ -{at + 1},{len(ctx)} +{at + 1},{len(ctx) + 1} @@\n"
             f"+{FIX}{body}")
    p = tmp_path / "fix.diff"
    p.write_text(patch)
    return p


def preflight_double(pt, ws: Path, tmp_path: Path, body: str = "x * 2") -> str:
    code = tmp_path / "double.rs"
    code.write_text(f"/// Twice a number.\npub fn double(x: i32) -> i32 {{\n    {body}\n}}")
    run = pt("-C", str(ws), "preflight", "--node", DOUBLE, "--code", str(code), "--json")
    assert run.code in (0, 1), run.err
    return run.json()["candidate_id"]


# ------------------------------------------------------------------ apply

@needs_cargo
def test_a_compiling_candidate_passes_and_applies(pt, shapes, tmp_path):
    report = shapes / "src/report.rs"
    old = report.read_bytes()
    run = pt("-C", str(shapes), "preflight", "--diff", str(fix_patch(shapes, tmp_path)), "--json")
    assert run.code == 0, run.out + run.err
    cid = run.json()["candidate_id"]
    assert report.read_bytes() == old  # PreFlight wrote nothing
    run = pt("-C", str(shapes), "apply", "--yes", "--json")  # the newest passed candidate
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["candidate_id"] == cid and doc["files"] == [{"path": "src/report.rs", "action": "modified"}]
    assert report.read_bytes().replace(FIX.encode(), b"", 1) == old
    assert doc["reingested"] == ["src/report.rs"]
    # the user's tree now compiles (checked here in a scratch target dir)
    check = subprocess.run(["cargo", "check", "--offline", "--quiet"], cwd=shapes, capture_output=True, text=True,
                           env={**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "t")}, timeout=300)
    assert check.returncode == 0, check.stderr
    with Pt.open(shapes) as p:
        hist = p.query("codegraph.history")
        assert [h["change_id"] for h in hist] == [doc["change_id"]] and not hist[0]["undone"]
        ch = p.store.run("?[b, a] := *change_history{change_id: $c, before_text: b, after_text: a}", {"c": doc["change_id"]}).rows[0]
        assert ch[0]["src/report.rs"].encode() == old and ch[1]["src/report.rs"].encode() == report.read_bytes()
        # re-ingested: the graph knows the new bytes
        h = p.query("ingest.file_hashes", files=["src/report.rs"])[0]["hash"]
        import blake3
        assert h == blake3.blake3(report.read_bytes()).hexdigest()
        assert p.query("preflight.latest")[0]["state"] == "applied"
    # a candidate is applied once
    assert pt("-C", str(shapes), "apply", cid, "--yes").code == 1


@needs_cargo
def test_a_failed_candidate_is_never_applied(pt, pws, tmp_path):
    before = sha(pws / LIB)
    cid = preflight_double(pt, pws, tmp_path, '"two"')
    run = pt("-C", str(pws), "apply", cid[:12], "--yes")
    assert run.code == 1 and "has not passed" in run.err
    assert sha(pws / LIB) == before
    # nor through the rule, whatever the caller claims
    with Pt.open(pws) as p:
        from parseltongue.runner.errors import GateFailed
        with pytest.raises(GateFailed):
            p.run("codegraph.mark_preflight", {"candidate_id": cid, "state": "passed"})


@needs_cargo
def test_a_file_edited_between_check_and_apply_makes_apply_refuse(pt, pws, tmp_path):
    cid = preflight_double(pt, pws, tmp_path)
    edited = (pws / LIB).read_text() + "\n// the user's own edit\n"
    (pws / LIB).write_text(edited)
    run = pt("-C", str(pws), "apply", cid, "--yes")
    assert run.code == 1 and "changed on disk" in run.err
    assert (pws / LIB).read_text() == edited
    with Pt.open(pws) as p:
        assert p.query("codegraph.history") == []
        # the rule refuses too, without the runner's own check
        from parseltongue.runner.errors import GateFailed
        row = p.query("preflight.candidate", candidate_id=cid)[0]
        import blake3
        with pytest.raises(GateFailed, match="file changed on disk"):
            p.run("codegraph.approve_flip", {
                "candidate_id": cid, "change_id": "x", "now": 1.0,
                "disk_hashes": {LIB: blake3.blake3(edited.encode()).hexdigest()}, "before_text": {LIB: edited},
                "after_text": {LIB: row["new_text"]}, "after_hashes": {LIB: row["new_hash"]}})


@needs_cargo
def test_apply_asks_and_writes_nothing_without_approval(pt, pws, tmp_path, monkeypatch):
    before = sha(pws / LIB)
    cid = preflight_double(pt, pws, tmp_path)
    run = pt("-C", str(pws), "apply", cid)  # stdin is not a terminal and no --yes
    assert run.code == 1 and "not approved" in run.err and sha(pws / LIB) == before

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Tty("n\n"))
    run = pt("-C", str(pws), "apply", cid)
    assert run.code == 1 and sha(pws / LIB) == before
    assert "-    add(x, x)\n+    x * 2\n" in run.out  # the diff was shown
    monkeypatch.setattr(sys, "stdin", Tty("y\n"))
    run = pt("-C", str(pws), "apply", cid)
    assert run.code == 0, run.err
    assert "x * 2" in (pws / LIB).read_text()


# ------------------------------------------------------------------ undo

@needs_cargo
def test_undo_restores_the_original_bytes(pt, pws, tmp_path):
    original = (pws / LIB).read_bytes()
    cid = preflight_double(pt, pws, tmp_path)
    applied = pt("-C", str(pws), "apply", cid, "--yes", "--json").json()
    assert (pws / LIB).read_bytes() != original
    run = pt("-C", str(pws), "undo", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["change_id"] == applied["change_id"] and doc["files"] == [{"path": LIB, "action": "restored"}]
    assert (pws / LIB).read_bytes() == original
    with Pt.open(pws) as p:
        assert p.query("codegraph.history")[0]["undone"]
        spans = p.query("codegraph.node_spans", ids=[DOUBLE])[0]
        assert original[spans["span_start"]:spans["span_end"]].startswith(b"/// Twice a number.\npub fn double")  # re-ingested
    assert pt("-C", str(pws), "undo").code == 2  # nothing left to undo
    run = pt("-C", str(pws), "undo", applied["change_id"])
    assert run.code == 1 and "already undone" in run.err
    # the candidate can be checked and applied again after an undo
    cid2 = preflight_double(pt, pws, tmp_path)
    assert cid2 == cid and pt("-C", str(pws), "apply", cid, "--yes").code == 0


@needs_cargo
def test_undo_refuses_when_the_file_changed_since(pt, pws, tmp_path):
    cid = preflight_double(pt, pws, tmp_path)
    pt("-C", str(pws), "apply", cid, "--yes")
    later = (pws / LIB).read_text() + "// more work\n"
    (pws / LIB).write_text(later)
    run = pt("-C", str(pws), "undo")
    assert run.code == 1 and "changed since" in run.err
    assert (pws / LIB).read_text() == later


@needs_cargo
def test_undo_of_a_created_file_removes_it(pt, pws, tmp_path):
    patch = tmp_path / "new.diff"
    patch.write_text("--- a/calc/src/lib.rs\n+++ b/calc/src/lib.rs\n@@ -1,2 +1,3 @@\n"
                     " //! Arithmetic for the PreFlight and apply tests: a library crate with a unit test, used by `app`.\n"
                     " pub mod legacy;\n+pub mod extra;\n"
                     "--- /dev/null\n+++ b/calc/src/extra.rs\n@@ -0,0 +1 @@\n+pub fn extra() -> i32 { 1 }\n")
    assert pt("-C", str(pws), "preflight", "--diff", str(patch), "--apply", "--yes").code == 0
    assert (pws / "calc/src/extra.rs").read_text() == "pub fn extra() -> i32 { 1 }\n"
    run = pt("-C", str(pws), "undo", "--json")
    assert sorted((f["path"], f["action"]) for f in run.json()["files"]) == [
        ("calc/src/extra.rs", "removed"), (LIB, "restored")]
    assert not (pws / "calc/src/extra.rs").exists()


# ------------------------------------------------------------------ killed mid-apply

N_FILES, FILE_KB = 48, 256


def _big_workspace(root: Path) -> dict[str, bytes]:
    """A crate of many large files (a doc comment of FILE_KB each), so that writing them all takes
    long enough to kill the writer in the middle."""
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "big"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n')
    mods, files = [], {}
    filler = "".join(f"// line {i:06d} of filler that makes this file large enough to take a while\n" for i in range(FILE_KB * 1024 // 80))
    for i in range(N_FILES):
        rel = f"src/m{i:02d}.rs"
        data = (filler + f"pub fn f{i}() -> u32 {{\n    {i}\n}}\n").encode()
        (root / rel).write_bytes(data)
        files[rel] = data
        mods.append(f"pub mod m{i:02d};\n")
    (root / "src/lib.rs").write_text("".join(mods))
    return files


_APPLY = """
import sys
from parseltongue.runner.cli import main
main(["-C", sys.argv[1], "apply", sys.argv[2], "--yes"])
"""


def _passed_candidate(ws: Path) -> tuple[str, dict[str, bytes]]:
    """A candidate editing one fn in every file, queued and passed through the same programs
    run_preflight calls - with a clean cargo result recorded instead of running cargo on 12 MB
    of comments: what is under test here is the writer, not the check."""
    from parseltongue.runner.ingest import ingest
    from parseltongue.runner.candidate import NodeEdit, build_from_nodes

    with Pt.open(ws) as p:
        ingest(ws, p.store)
        cand = build_from_nodes(p, [NodeEdit(f"fn:src/m{i:02d}.rs::f{i}", "Edit", f"pub fn f{i}() -> u32 {{\n    {i} + 1000\n}}")
                                    for i in range(N_FILES)])
        cid = cand.id
        p.run("codegraph.upsert_current", {"rows": [[n.id, n.current_code] for n in cand.nodes]})
        p.run("codegraph.propose_future", {"candidate_id": cid, "rows": [[n.id, n.action, n.future_code] for n in cand.nodes]})
        p.run("preflight.enqueue", {"candidate_id": cid, "files": [[f.path, f.base_hash, f.new_hash, f.new.decode()] for f in cand.files]})
        p.run("preflight.record_result", {"candidate_id": cid, "stage": "cargo", "diags": []})
        assert p.query("preflight.gate", candidate_id=cid)[0]["verdict"] == "passed"
        p.run("codegraph.mark_preflight", {"candidate_id": cid, "state": "passed"})
        return cid, {f.path: f.new for f in cand.files}


def test_a_process_killed_during_apply_leaves_each_file_old_or_new(pt, tmp_path):
    ws = tmp_path / "big"
    old = _big_workspace(ws)
    (ws / ".parseltongue").mkdir()
    cid, new = _passed_candidate(ws)
    assert set(new) == set(old)
    inodes = {rel: os.stat(ws / rel).st_ino for rel in old}
    proc = subprocess.Popen([sys.executable, "-c", _APPLY, str(ws), cid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill as soon as the first file has been replaced (its inode changes on rename): the writer
    # is then in the middle of the change.
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if any(os.stat(ws / rel).st_ino != ino for rel, ino in inodes.items()):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.0005)
    proc.wait()
    assert killed, f"apply finished before it could be killed: {proc.stderr.read().decode()[-500:]}"
    states = {}
    for rel in old:
        data = (ws / rel).read_bytes()
        assert data in (old[rel], new[rel]), f"{rel} is neither the old nor the new bytes"
        states[rel] = "new" if data == new[rel] else "old"
    assert "new" in states.values() and "old" in states.values(), f"not killed mid-way: {states}"
    # pt undo finishes the job: written files go back, unwritten ones are left; temp files of the
    # killed writer are cleaned up
    run = pt("-C", str(ws), "undo", "--json")
    assert run.code == 0, run.err
    actions = {f["path"]: f["action"] for f in run.json()["files"]}
    assert {rel for rel, a in actions.items() if a == "restored"} == {rel for rel, s in states.items() if s == "new"}
    assert all((ws / rel).read_bytes() == data for rel, data in old.items())
    assert not list((ws / "src").glob(".*.pt-tmp-*"))
