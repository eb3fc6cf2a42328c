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
