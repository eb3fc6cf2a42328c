"""End to end for the names, paths, structs and arguments family (E0063, E0061, ...): `pt run fix
--yes` on a tiny broken crate per pattern - the real flow, PreFlight and apply - then the exact fixed
text and `cargo check`."""
from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, assert_compiles, fix_fixture

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def test_missing_field_types(tmp_path):
    """Missing fields of generic literals (`Self {..}`, `Pair::<u8> {..}`) are found; a field is given
    the one binding of its type (`s: &str` for `&'a str`, `&mut self` for `&'a mut Stack<T>`), and
    a name only in a comment is no binding: its type's plain default (`false`)."""
    ws, rep = fix_fixture(tmp_path, "fix_missing_field_types")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_missing_field_types/src/lib.rs").read_text()
    expected = (original.replace("        Self { a }\n", "        Self { a, b }\n")
                .replace("    Pair::<u8> { b: 2 }\n", "    Pair::<u8> { a: Default::default(), b: 2 }\n")
                .replace("    Parser { pos: 0 }\n", "    Parser { src: s, pos: 0, strict: false }\n")
                .replace("        let g = Guard { n: 0 };\n", "        let g = Guard { v: self, n: 0 };\n"))
    assert expected != original
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_fill_placeholder_unused_bindings(tmp_path):
    """A dropped argument with no parameter name or typed binding in scope: the closure's or `if
    let`'s binding nothing uses fills it; a nested fn's parameter is not in scope, so the type's
    default; a generic position (`get_mut(/* index */)`) is `0`."""
    ws, rep = fix_fixture(tmp_path, "fix_fill_unused")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_fill_unused/src/lib.rs").read_text()
    expected = (original.replace("map(move |x| f.call())", "map(move |x| f.call(x))")
                .replace("    scale(twice(2))\n", "    scale(twice(2), 0)\n")
                .replace("        return scale(k);\n", "        return scale(k, v);\n")
                .replace("    v.get_mut()\n", "    v.get_mut(0)\n"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_restore_field(tmp_path):
    """Fields a literal, a read, an assignment and a pattern use but the struct lacks (E0560, E0609,
    E0026) are declared again - with the types the uses imply, where the literal's order puts
    them, or the reads imply (`+=` a `u64`, a condition, a getter's `&str`) - and no use is
    deleted; a struct gone whole (E0422) is declared from its literal."""
    ws, rep = fix_fixture(tmp_path, "fix_restore_field")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_restore_field/src/lib.rs").read_text()
    expected = (original.replace("    pub mother: u32,\n", "    pub mother: u32,\n    pub father: u64,\n")
                .replace("    pub name: String,\n", "    pub name: String,\n    pub size: usize,\n    pub owner: String,\n")
                .replace("pub fn corner(", "struct Corner {\n    w: u16,\n    h: u16,\n    label: &'static str,\n}\n\npub fn corner(")
                .replace("    pub hits: u64,\n", "    pub hits: u64,\n    pub total: u64,\n    pub enabled: bool,\n    pub name: String,\n")
                .replace("    pub start: usize,\n", "    pub start: usize,\n    pub text: &'a str,\n"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_duplicate_field(tmp_path):
    """A field declared twice (E0124) or initialized twice (E0062), a generic parameter declared twice
    (E0403), is said once: the repeat goes with its separator (its whole line when it has one),
    every item stays."""
    ws, rep = fix_fixture(tmp_path, "fix_duplicate_field")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_duplicate_field/src/lib.rs").read_text()
    expected = (original.replace("    pub y: i32,\n    pub y: i32,\n", "    pub y: i32,\n")
                .replace("pub h: u32, pub w: u32 }", "pub h: u32 }")
                .replace("Point { x: 0, y: 0, x: 0 }", "Point { x: 0, y: 0 }")
                .replace("        h: 1,\n        w,\n", "        h: 1,\n")
                .replace("pair<T, U, T>", "pair<T, U>"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_trait_member(tmp_path):
    """Impl items their trait lacks (E0407, E0438) are declared in the trait again - signatures
    without bodies, one edit per trait - rather than renamed or deleted; the calls through the
    trait (E0599) compile with them; a trait gone whole (E0405) is declared from its impl."""
    ws, rep = fix_fixture(tmp_path, "fix_trait_member")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_trait_member/src/lib.rs").read_text()
    expected = (original.replace("    fn area(&self) -> f64;\n}",
                                 "    fn area(&self) -> f64;\n    fn side(&self) -> f64;\n    const SIDES: usize;\n}")
                .replace("pub trait Named {}", "pub trait Named {\n    fn name(&self) -> String;\n}")
                .replace("impl Measure for", "trait Measure {\n    type Unit;\n    fn size(&self) -> f64;\n}\n\nimpl Measure for"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_unused_import(tmp_path):
    """Unresolved imports (E0432) of names the file never uses are removed - a group member, a
    line, an aliased line - and nothing else changes."""
    ws, rep = fix_fixture(tmp_path, "fix_unused_import")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_unused_import/src/lib.rs").read_text()
    expected = (original.replace("{HashMap, Nothing}", "{HashMap}").replace("use std::fmt::Missing;\n", "")
                .replace("use std::io::Absent as Gone;\n", ""))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_pattern_field(tmp_path):
    """Struct patterns missing fields (E0027) get them where the struct declares them: bound by name
    when the code after the pattern reads the name (rustc's E0425 goes too), else `name: _`."""
    ws, rep = fix_fixture(tmp_path, "fix_pattern_field")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_pattern_field/src/lib.rs").read_text()
    expected = (original.replace("let P { x, z } = p;", "let P { x, y, z } = p;")
                .replace("P { x } => *x,", "P { x, y: _, z: _ } => *x,")
                .replace("            x: _,\n            z,\n", "            x: _,\n            y,\n            z,\n"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_static_pattern(tmp_path):
    """A match arm naming a static (E0530) compares with it in a guard, with a binding the fn does
    not use; an existing guard is kept."""
    ws, rep = fix_fixture(tmp_path, "fix_static_pattern")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_static_pattern/src/lib.rs").read_text()
    expected = (original.replace('        LIMIT => "limit",', '        v if v == LIMIT => "limit",')
                .replace("        LIMIT if strict => true,", "        value if value == LIMIT && strict => true,"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)


def test_variant_field(tmp_path):
    """An enum's struct variant missing a field, in a literal (E0063, rustc names the enum) and in a
    pattern (E0027): the variant's declaration gives the fields."""
    ws, rep = fix_fixture(tmp_path, "fix_variant_field")
    assert rep["outcome"] == "fixed", rep
    original = (FIXTURES / "fix_variant_field/src/lib.rs").read_text()
    expected = (original.replace("    Event::Click { x }\n", "    Event::Click { x, y }\n")
                .replace("        Event::Click { x } => *x,", "        Event::Click { x, y: _ } => *x,"))
    assert (ws / "src/lib.rs").read_text() == expected
    assert_compiles(ws)
