"""End to end for the types-and-traits family of issue 14's long tail: `pt run fix --yes` on tiny
broken crates (tests/fixtures/fix_*), the real flow, PreFlight and apply, then the exact fixed text
and `cargo check`."""
from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, assert_compiles, fix_fixture

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _fixed(fixture: str, path: str, *pairs: tuple[str, str]) -> str:
    text = (FIXTURES / fixture / path).read_text()
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_lost_trait_bounds_go_back_on_the_declarations_spelled_as_the_file_names_them(tmp_path):
    """Seven bounds a crate lost (patterns.trait_bound): rustc spells them `std::fmt::Display`,
    `std::ops::Add<Output = T>` (E0369),
    `, A: std::fmt::Debug` at the end of the where clause and ` + std::marker::Send` after
    `'static`, suggests a bare `I2: IntoIterator` where the parallel `I1` has `<Item = T1>`, and
    has no suggestion at all for `impl<T> Bag<T>` calling a method of `impl<T: Area>`. Each goes
    where the file's own style puts it."""
    ws, rep = fix_fixture(tmp_path, "fix_trait_bound")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/pairs.rs").read_text() == _fixed(
        "fix_trait_bound", "src/pairs.rs",
        ("pub fn label<T>(", "pub fn label<T: fmt::Display>("),
        ("where\n    B: Debug,", "where\n    A: Debug,\n    B: Debug,"),
        ("F: Fn() -> u32 + Sync + 'static", "F: Fn() -> u32 + Send + Sync + 'static"),
        ("    I1: IntoIterator<Item = T1>,\n", "    I1: IntoIterator<Item = T1>,\n    I2: IntoIterator<Item = T2>,\n"))
    assert (ws / "src/bag.rs").read_text() == _fixed(
        "fix_trait_bound", "src/bag.rs",
        ("impl<T> Bag<T> {", "impl<T: Area> Bag<T> {"),
        ("pub fn biggest<T>(", "pub fn biggest<T: Area>("),
        ("pub fn combined<T>(", "pub fn combined<T: Add<Output = T>>("))
    assert_compiles(ws)


def test_moves_out_of_borrows_restore_copy_rather_than_clone_at_each_use(tmp_path):
    """`Meters` derives Clone but lost Copy: moved out of a borrow (E0507) and out of a slice
    (E0508) it gets Copy back in its derive list, not a `.clone()` at each use; `Switch` (a unit
    struct with no derives) consumed through a borrow gets `#[derive(Clone, Copy)]` (add_derive)."""
    ws, rep = fix_fixture(tmp_path, "fix_moved_copy")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == (FIXTURES / "fix_moved_copy/src/lib.rs").read_text()
    assert (ws / "src/unit.rs").read_text() == _fixed(
        "fix_moved_copy", "src/unit.rs",
        ("#[derive(Debug, Clone, PartialEq)]", "#[derive(Debug, Clone, Copy, PartialEq)]"),
        ("\npub struct Switch;", "\n#[derive(Clone, Copy)]\npub struct Switch;"))
    assert_compiles(ws)


def test_a_type_changed_at_a_declaration_is_changed_back_there_not_cast_at_each_use(tmp_path):
    """A `const`, a parameter, a `let` and a struct field that lost their types (patterns.decl_type):
    rustc offers `.try_into().unwrap()` / `.into()` at each use (and nothing at a struct field's
    init); the fix changes the four declarations and nothing else."""
    ws, rep = fix_fixture(tmp_path, "fix_decl_type")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_decl_type", "src/lib.rs",
        ("const WINDOW: u32 = 4;", "const WINDOW: usize = 4;"),
        ("fn blank(n: u32)", "fn blank(n: usize)"),
        ("let mut sum: u32 = 0;", "let mut sum: u64 = 0;"),
        ("    seen: u32,", "    seen: usize,"),
        ("fn resize(&mut self, size: u32)", "fn resize(&mut self, size: usize)"))
    assert_compiles(ws)


def test_trait_methods_take_the_trait_parameter_lists(tmp_path):
    """Four methods with another parameter count than the trait (E0050, rustc has no suggestion):
    the missing parameters appended after the impl's own (`_x` where the body does not use x),
    the extra one dropped where the trait has fewer (patterns.trait_params)."""
    ws, rep = fix_fixture(tmp_path, "fix_trait_params")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_trait_params", "src/lib.rs",
        ("fn area(&self) -> f64 {", "fn area(&self, _scale: f64) -> f64 {"),
        ("fn name(&self, _upper: bool) -> String {", "fn name(&self) -> String {"),
        ("fn grow(&mut self, by: u32) {", "fn grow(&mut self, by: u32, _times: u32) {"),
        ("fn make() -> Self {", "fn make(_w: u32) -> Self {"))
    assert_compiles(ws)


def test_copy_leaves_the_derive_of_a_type_whose_field_is_not_copy(tmp_path):
    """E0204 on two derives (patterns.copy_field): `Copy` leaves `Tag`'s list, `Cursor`'s
    `#[derive(Copy)]` line goes; the items stay."""
    ws, rep = fix_fixture(tmp_path, "fix_copy_field")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_copy_field", "src/lib.rs",
        ("#[derive(Debug, Clone, Copy, PartialEq)]", "#[derive(Debug, Clone, PartialEq)]"),
        ("#[derive(Copy)] // cheap to pass around\n", ""))
    assert_compiles(ws)


def test_an_unconstrained_impl_parameter_moves_onto_the_methods_that_use_it(tmp_path):
    """E0207 on two inherent impls (patterns.unconstrained_param): `T: FromStr` moves from
    `impl<T: FromStr> Config` onto `get`, the one method naming it; `const N` of `Grid`, named by
    no method, just goes. Every method stays."""
    ws, rep = fix_fixture(tmp_path, "fix_unconstrained")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_unconstrained", "src/lib.rs",
        ("impl<T: FromStr> Config {", "impl Config {"),
        ("pub fn get(&self", "pub fn get<T: FromStr>(&self"),
        ("impl<const N: usize> Grid {", "impl Grid {"))
    assert_compiles(ws)


def test_an_ambiguous_into_names_the_one_impl_of_the_workspace(tmp_path):
    """E0283 on `m.into() + 10` (patterns.impl_annotation): rustc's `<Meters as Into<T>>::into(m)`
    has a placeholder; the one impl rustc notes here, `impl Into<u64> for Meters`, fills it."""
    ws, rep = fix_fixture(tmp_path, "fix_impl_annotation")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_impl_annotation", "src/lib.rs", ("    m.into() + 10", "    <Meters as Into<u64>>::into(m) + 10"))
    assert_compiles(ws)


def test_a_trait_import_joins_the_root_import_of_its_module(tmp_path):
    """E0599 for a trait method whose trait is not in scope: rustc's `use crate::shapes::Area;`
    goes into the root's `use shapes::Square;` (patterns.use_into_group), not a new line above
    `mod shapes;`."""
    ws, rep = fix_fixture(tmp_path, "fix_trait_import")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_trait_import", "src/lib.rs", ("use shapes::Square;", "use shapes::{Area, Square};"))
    assert_compiles(ws)


def test_a_deref_of_a_plain_value_goes(tmp_path):
    """E0614 (patterns.plain_deref): `*x` where `.copied()` already gives a `u32`, `*f` of a `u64`
    read out of a Vec - the `*` goes; rustc suggests nothing."""
    ws, rep = fix_fixture(tmp_path, "fix_plain_deref")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_plain_deref", "src/lib.rs", ("s += *x;", "s += x;"), ("    *f + 1", "    f + 1"))
    assert_compiles(ws)
