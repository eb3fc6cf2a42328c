"""End to end: `pt run fix --yes` on a tiny broken crate per pattern (imports into the existing `use`
group, visibility, derives, names one edit away) - the real flow, PreFlight and apply, then `cargo check`."""
from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, assert_compiles, fix_fixture

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _source(fixture: str, rel: str) -> str:
    return (FIXTURES / fixture / rel).read_text()


def test_use_into_group(tmp_path):
    ws, rep = fix_fixture(tmp_path, "fix_use_into_group", "src/report.rs")
    assert rep["outcome"] == "fixed", rep
    for rel, old, new in [
            ("src/report.rs", "use crate::shapes::{Circle, Square};", "use crate::shapes::{Circle, Square, Triangle};"),
            ("src/stats.rs", "use std::collections::HashMap;", "use std::collections::{HashMap, HashSet};"),
            # rustc says `use std::fmt::Debug;`: the file imports from core::fmt
            ("src/fmtx.rs", "use core::fmt::{self, Write};", "use core::fmt::{self, Debug, Write};"),
            # rustc says `use crate::parse_day;` (a re-export): the graph knows crate::date defines it
            ("src/date.rs", "use crate::date::{self, format_day};", "use crate::date::{self, format_day, parse_day};")]:
        assert (ws / rel).read_text() == _source("fix_use_into_group", rel).replace(old, new), rel
    assert_compiles(ws)


def test_make_pub(tmp_path):
    ws, rep = fix_fixture(tmp_path, "fix_make_pub", "src/lib.rs")
    assert rep["outcome"] == "fixed", rep
    shapes = _source("fix_make_pub", "src/shapes.rs")
    for old, new in [("    radius: f64,", "    pub radius: f64,"), ("\nconst SCALE", "\npub const SCALE"),
                     ("\nstruct Origin;", "\npub struct Origin;"), ("    fn scaled", "    pub fn scaled")]:
        shapes = shapes.replace(old, new)
    assert (ws / "src/shapes.rs").read_text() == shapes
    # the siblings of `square` are pub(crate): so is the fix
    assert (ws / "src/util.rs").read_text() == _source("fix_make_pub", "src/util.rs").replace(
        "\nfn square", "\npub(crate) fn square")
    assert_compiles(ws)


def test_add_derive(tmp_path):
    ws, rep = fix_fixture(tmp_path, "fix_add_derive", "src/lib.rs")
    assert rep["outcome"] == "fixed", rep
    text = _source("fix_add_derive", "src/lib.rs")
    for old, new in [("#[derive(Debug)]\npub struct Point", "#[derive(Debug, Clone, PartialEq)]\npub struct Point"),
                     ("#[derive(Clone, Copy)]\npub enum", "#[derive(Debug, Clone, Copy)]\npub enum"),
                     ("\npub struct Label", "\n#[derive(Debug)]\npub struct Label"),  # no list: rustc's line
                     ("(p, p)", "(p.clone(), p)"),  # Point had no Clone: rustc's `.clone()` (round 1)
                     # Mode derives Clone and its variants are Copy: Copy, where the list keeps it
                     ("#[derive(Clone, Debug, PartialEq)]\npub enum Mode", "#[derive(Clone, Debug, Copy, PartialEq)]\npub enum Mode")]:
        assert old in text
        text = text.replace(old, new)
    assert (ws / "src/lib.rs").read_text() == text
    assert_compiles(ws)


def test_nearest_name(tmp_path):
    ws, rep = fix_fixture(tmp_path, "fix_nearest_name", "src/lib.rs")
    assert rep["outcome"] == "fixed", rep
    # in a macro body rustc offers no similar name: the graph's method one edit away;
    # `LIMT` rustc corrects itself
    assert (ws / "src/lib.rs").read_text() == _source("fix_nearest_name", "src/lib.rs").replace(
        "$this.coy_to_slice(", "$this.copy_to_slice(").replace("min(LIMT)", "min(LIMIT)")
    assert_compiles(ws)


BROKEN_PATTERN = """# ---
# id: patterns.broken
# version: 1
# summary: Breaks its contract.
# codes: [E0603]
# params:
#   run_id: {type: String, required: true}
#   round:  {type: Int, default: 0}
# reads: [fix_diag]
# writes: []
# ---
?[diag, tier, file_path, start, end, replacement, note] := *fix_diag{run_id: $run_id, round: $round, diag,
    file_path, start, end}, tier = 2, replacement = '', note = ''
"""


@pytest.mark.parametrize("text, needle", [
    (BROKEN_PATTERN, ":12: a pattern outputs ?[diag, alt, tier, file_path, start, end, replacement, note], not ?[diag, tier,"),
    (BROKEN_PATTERN.replace("# codes: [E0603]\n", ""), ":1: a pattern needs `codes:`"),
])
def test_a_pattern_breaking_its_contract_is_skipped_with_a_warning(tmp_path, text, needle):
    """Before: wrong headers ended the run (exit 3, KeyError: 'alt'); no codes disabled it silently."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "fix_make_pub", ws, ignore=shutil.ignore_patterns("target", ".parseltongue", "Cargo.lock"))
    local = ws / ".parseltongue" / "patterns" / "broken.cozo"
    local.parent.mkdir(parents=True)
    local.write_text(text)
    proc = subprocess.run([str(Path(sys.executable).parent / "pt"), "run", "fix", "--seed", "src/lib.rs", "--dry-run", "--json"],
                          cwd=ws, env=dict(os.environ, PT_LLM="none"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["outcome"] == "would-fix", rep
    assert any(w.startswith("pattern patterns.broken skipped: ") and f"{local}{needle}" in w for w in rep["warnings"]), rep["warnings"]
