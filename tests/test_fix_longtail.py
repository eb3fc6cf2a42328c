"""End to end for issue 14's long tail: `pt run fix --yes` on tiny broken crates - the signature
policy (rules/fix/_signature_policy.cozo), pattern-stats ordering and the new patterns - the real
flow, PreFlight and apply, then the exact fixed text and `cargo check`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, assert_compiles, fix_fixture

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")

SIGNATURE_FIXED = (FIXTURES / "fix_signature/src/lib.rs").read_text().replace(
    "        self.hits.len()\n", "        self.hits.len().try_into().unwrap()\n").replace(
    "    pub fn record(&self, x: u32) {", "    pub fn record(&mut self, x: u32) {")


def _git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True,
                   env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                            GIT_COMMITTER_EMAIL="t@t"))


def _champions(rep: dict) -> list:
    return [r["champion"] for r in rep["rounds"] if r["champion"]]


def test_a_signature_that_carries_the_error_is_no_api_yet(tmp_path):
    """`&self` where the body assigns to a field: rustc's `&mut self` changes a pub signature, but
    the error points into it - applied without --allow-signature-change, and the report says why."""
    ws, rep = fix_fixture(tmp_path, "fix_signature")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == SIGNATURE_FIXED
    assert_compiles(ws)
    assert [c["signature"] for c in _champions(rep)] == [["broken"]]


def test_a_signature_put_back_as_git_head_has_it_is_a_restoration(tmp_path):
    """The same crate as a git repository whose HEAD has `&mut self`: the fix restores it."""
    ws = tmp_path / "fix_signature"
    shutil.copytree(FIXTURES / "fix_signature", ws, ignore=shutil.ignore_patterns("target", ".parseltongue", "Cargo.lock"))
    broken = (ws / "src/lib.rs").read_text()
    (ws / "src/lib.rs").write_text(broken.replace("record(&self", "record(&mut self"))
    (ws / ".gitignore").write_text("target/\n.parseltongue/\n")
    _git(ws, "init", "-q")
    _git(ws, "add", "-A")
    _git(ws, "commit", "-q", "-m", "head")
    (ws / "src/lib.rs").write_text(broken)
    proc = subprocess.run([str(Path(sys.executable).parent / "pt"), "run", "fix", "--seed", "src/lib.rs", "--yes", "--json"],
                          cwd=ws, env=dict(os.environ, PT_LLM="none"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert (ws / "src/lib.rs").read_text() == SIGNATURE_FIXED
    assert_compiles(ws)
    assert [c["signature"] for c in _champions(rep)] == [["restored"]]
    tried = [c for r in rep["rounds"] for c in r["candidates"]]
    assert all("signature" in c for c in tried)


def test_the_diff_output_says_why_a_signature_may_change(tmp_path):
    ws = tmp_path / "fix_signature"
    shutil.copytree(FIXTURES / "fix_signature", ws, ignore=shutil.ignore_patterns("target", ".parseltongue", "Cargo.lock"))
    proc = subprocess.run([str(Path(sys.executable).parent / "pt"), "run", "fix", "--seed", "src/lib.rs", "--dry-run"],
                          cwd=ws, env=dict(os.environ, PT_LLM="none"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[signature changed: the signature itself carried the error]" in proc.stdout
