"""End to end: `pt run fix --yes` on a tiny broken crate per pattern (borrow conflicts, `?`/unwrap,
missing fields, placeholders, annotations) - the real flow, PreFlight and apply, then `cargo check`."""
from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, assert_compiles, fix_fixture

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


BORROW_FIXED = """\
pub struct Stack {
    items: Vec<u32>,
    top: u32,
}

impl Stack {
    pub fn push_twice(&mut self, x: u32) {
        self.items.push(x);
        self.items.push(x);
    }

    pub fn reset(&mut self) -> u32 {
        self.top = 0;
        self.top
    }
}

pub fn total(v: &mut Vec<u32>) -> u32 {
    let first = &v[0];
    let n = *first;
    v.push(1);
    n + v.len() as u32
}
"""


def test_borrow_conflict(tmp_path):
    """Dead `let held = &..; drop(held);` pairs go (E0502, E0506); a conflicting push moves below
    the borrow's later use (E0502)."""
    ws, rep = fix_fixture(tmp_path, "fix_borrow_conflict")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == BORROW_FIXED
    assert_compiles(ws)


def test_try_or_unwrap(tmp_path):
    """`?` where the fn returns the same kind (or the line already uses `?`), `.unwrap()` elsewhere;
    an Option local is fixed where it is bound."""
    ws, rep = fix_fixture(tmp_path, "fix_try_or_unwrap")
    assert rep["outcome"] == "fixed", rep
    text = (ws / "src/lib.rs").read_text()
    for line in ("    let width: u32 = s.trim().parse()?;\n", "    let sum = a.checked_add(b).unwrap();\n    sum * 2\n",
                 "    let w = m.get(k)?.width;\n", "    v.push(s.parse::<u32>()?);\n",
                 "    Ok(digit(a)? << 4 | digit(b)?)\n", "    s.parse::<u32>().unwrap().pow(2)\n"):
        assert line in text
    original = (FIXTURES / "fix_try_or_unwrap/src/lib.rs").read_text()
    assert len(text) == len(original) + 4 * len("?") + 2 * len(".unwrap()")
    assert_compiles(ws)


def test_missing_field(tmp_path):
    """Missing fields land where the struct declares them, in the literal's layout: shorthand for
    names in scope, the type's plain default otherwise."""
    ws, rep = fix_fixture(tmp_path, "fix_missing_field")
    assert rep["outcome"] == "fixed", rep
    text = (ws / "src/lib.rs").read_text()
    assert "        Reader {\n            pos: 0,\n            name,\n            strict: false,\n            limit,\n        }\n" in text
    assert "    Point { x: 0, y }\n" in text
    assert "    Point3 { x, y, z: 1 }\n" in text
    assert "    Reader { pos: 0, name: String::new(), strict: true, limit: None }\n" in text
    assert "        Point3 {\n            x: self.x,\n            y: self.y,\n            z: 0,\n        }\n" in text
    assert_compiles(ws)


def test_fill_placeholder(tmp_path):
    """rustc's `/* Type */` argument placeholders filled: by the parameter's name in scope, else by the
    one binding of that type."""
    ws, rep = fix_fixture(tmp_path, "fix_fill_placeholder")
    assert rep["outcome"] == "fixed", rep
    text = (ws / "src/lib.rs").read_text()
    assert "        pad(&self.0, width, f)\n" in text
    assert "    scale(label.len() as u32, k)\n" in text
    assert_compiles(ws)


TYPE_FIXED = """\
pub struct Slab {
    entries: Vec<Option<u32>>,
}

impl Slab {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn vacant(&self) -> bool {
        self.is_empty()
    }
}

fn describe(name: &str, vacant: bool) -> String {
    if vacant { format!("{name}: empty") } else { name.to_string() }
}

pub fn report(s: &Slab) -> String {
    let vacant: bool = s.entries.is_empty();
    describe("slab", s.entries.iter().all(|e| e.is_none()))
}
"""


def test_type_annotation(tmp_path):
    """The written `u8` gets the found `bool`: a private fn's return type, a parameter, a `let`
    annotation (the pub `vacant` keeps its signature)."""
    ws, rep = fix_fixture(tmp_path, "fix_type_annotation")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == TYPE_FIXED
    assert_compiles(ws)
