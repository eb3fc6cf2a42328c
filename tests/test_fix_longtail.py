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


def _pt_fix(ws: Path, *flags: str) -> dict:
    proc = subprocess.run([str(Path(sys.executable).parent / "pt"), "run", "fix", "--seed", "src/lib.rs", "--json", *flags],
                          cwd=ws, env=dict(os.environ, PT_LLM="none"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_patterns_that_worked_here_before_are_tried_first(tmp_path):
    """fix.plan's feedback on a real run: the first run (a dry run) proves every diagnostic's best
    candidate together (fix.combine) - try_or_unwrap on both E0308s, rustc's suggestion on the
    E0609 - and records what worked per pattern and error code through the combination's members:
    try_or_unwrap twice of twice on E0308, rustc's suggestion once of once on E0609. So in the
    second run's plan on the same tree try_or_unwrap's E0308 candidates come before rustc's, which
    came first by name before there was any history."""
    ws = tmp_path / "fix_try_or_unwrap"
    shutil.copytree(FIXTURES / "fix_try_or_unwrap", ws, ignore=shutil.ignore_patterns("target", ".parseltongue", "Cargo.lock"))
    run1 = _pt_fix(ws, "--dry-run")["rounds"][0]
    codes = [e["code"] for e in run1["errors"]]
    first = run1["plan"]
    rustc = next(c for c in first if c.startswith("patterns.rustc_suggestion/") and codes[int(c.split("/")[1])] == "E0609")
    e0308 = [c for c in first if c.startswith("patterns.try_or_unwrap/") and c.endswith("/0")
             and codes[int(c.split("/")[1])] == "E0308"]
    assert len(e0308) == 2
    combined = run1["candidates"][0]
    assert combined["cand"] == "combined/0" and combined["verdict"] == "passed" and combined["errors_after"] == 0
    assert "add `?`" in combined["note"] and "same name" in combined["note"]
    assert first.index(rustc) < min(first.index(c) for c in e0308)  # by name: no history yet
    rep = _pt_fix(ws, "--yes")
    second = rep["rounds"][0]["plan"]
    assert second.index(rustc) > max(second.index(c) for c in e0308)
    assert rep["outcome"] == "fixed"
    assert_compiles(ws)


def test_a_private_field_read_from_another_module(tmp_path):
    """E0616: rustc names the field and its struct but has no span at the definition; the struct's
    file comes from the graph (fix.fact_files) and the field gets the visibility its sibling
    fields are written with (`pub(crate)`)."""
    ws, rep = fix_fixture(tmp_path, "fix_private_field")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/shapes.rs").read_text() == (FIXTURES / "fix_private_field/src/shapes.rs").read_text().replace(
        "    width: u32,", "    pub(crate) width: u32,")
    assert (ws / "src/lib.rs").read_text() == (FIXTURES / "fix_private_field/src/lib.rs").read_text()
    assert_compiles(ws)


def test_a_private_field_in_a_struct_literal(tmp_path):
    """E0451: the same for a struct literal; its sibling is `pub`, so the field becomes `pub`."""
    ws, rep = fix_fixture(tmp_path, "fix_private_field_literal")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/shapes.rs").read_text() == (FIXTURES / "fix_private_field_literal/src/shapes.rs").read_text().replace(
        "    depth: u32,", "    pub depth: u32,")
    assert_compiles(ws)


def test_a_dropped_argument(tmp_path):
    """E0061 with rustc's `/* u8 */` placeholder: the one parameter of that type (another name)
    fills it; where nothing in scope has the type, the type's default does."""
    ws, rep = fix_fixture(tmp_path, "fix_dropped_argument")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_dropped_argument/src/lib.rs").read_text()
    assert (ws / "src/lib.rs").read_text() == original.replace(
        "pub fn blank(size: usize) -> Grid {\n    Grid::new(size, size)\n",
        "pub fn blank(size: usize) -> Grid {\n    Grid::new(size, size, 0)\n").replace(
        "pub fn filled(size: usize, value: u8) -> Grid {\n    Grid::new(size, size)\n",
        "pub fn filled(size: usize, value: u8) -> Grid {\n    Grid::new(size, size, value)\n")
    assert_compiles(ws)


def test_a_removed_copy_derive_is_put_back(tmp_path):
    """E0382 on a type in another file that derives Clone but lost Copy: the derive is restored
    (its file comes from the graph through the label naming the type), not a `.clone()` at the use."""
    ws, rep = fix_fixture(tmp_path, "fix_removed_copy")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/point.rs").read_text() == (FIXTURES / "fix_removed_copy/src/point.rs").read_text().replace(
        "#[derive(Debug, Clone, PartialEq)]", "#[derive(Debug, Clone, Copy, PartialEq)]")
    assert (ws / "src/lib.rs").read_text() == (FIXTURES / "fix_removed_copy/src/lib.rs").read_text()
    assert_compiles(ws)
