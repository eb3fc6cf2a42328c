"""End to end for issue 14's ownership-and-borrowing family (and what a removed `?` leaves):
`pt run fix --yes` on tiny broken crates - the real flow, PreFlight and apply - then the exact
fixed text and `cargo check`."""
from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, assert_compiles, fix_fixture

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _fixed(fixture: str, *pairs: tuple[str, str]) -> str:
    text = (FIXTURES / fixture / "src/lib.rs").read_text()
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def test_a_removed_question_mark_is_put_back_or_unwrapped(tmp_path):
    """Arithmetic, a cast and a dereference on an `Option` a removed `?` left: `?` at the binding
    where the fn returns `Option` (also the right operand of `+`, E0277), `.unwrap()` where it
    returns something else; a local whose fields are read (E0609, twice) once where it is bound -
    every error in one candidate."""
    ws, rep = fix_fixture(tmp_path, "fix_removed_try")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_removed_try",
        ("let v = m.get(k).copied();", "let v = m.get(k).copied()?;"),
        ("Some(x + m.get(b).copied())", "Some(x + m.get(b).copied()?)"),
        ("let d = s.len().checked_sub(1);", "let d = s.len().checked_sub(1).unwrap();"),
        ("let hi = xs.iter().max().copied();", "let hi = xs.iter().max().copied().unwrap();"),
        ("let first = xs.first();", "let first = xs.first()?;"),
        (".max_by_key(|s| s.hi);", ".max_by_key(|s| s.hi)?;"))
    assert_compiles(ws)
    assert len(rep["rounds"]) == 1


def test_moved_values_are_cloned_derived_or_borrowed_by_the_method(tmp_path):
    """Moves rustc offers no clone for, all five fixed in one candidate: a destructured `*self`
    and a partial move cloned, a generic `T: Clone` cloned, `Token` (not Clone) derives it into
    its `#[derive(Debug)]` and is cloned, and `Meter::total` - private, taking `self` per the
    graph - borrows `&self` instead of consuming the receiver `report` still reads; `Gauge`, moved
    into a fn's parameter, derives Clone (no derive list) and is cloned."""
    ws, rep = fix_fixture(tmp_path, "fix_moved_value")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_moved_value",
        ("let Opt { name, items } = *self;", "let Opt { name, items } = (*self).clone();"),
        ("#[derive(Debug)]\npub struct Token", "#[derive(Debug, Clone)]\npub struct Token"),
        ("let n = o.name;", "let n = o.name.clone();"),
        ("let q = r.1.clone() / r.0;", "let q = r.1.clone() / r.0.clone();"),
        ("let kept = t;", "let kept = t.clone();"),
        ("fn total(self) -> u32", "fn total(&self) -> u32"),
        ("pub struct Gauge {", "#[derive(Clone)]\npub struct Gauge {"),
        ("reading(g, 2)", "reading(g.clone(), 2)"))
    assert_compiles(ws)
    assert [r["champion"]["pattern"] for r in rep["rounds"] if r["champion"]] == ["patterns.moved_value"]


def test_a_conflicting_statement_moves_below_the_borrows_last_use(tmp_path):
    """E0499, E0502 (a trailing comment, a comment line before the use), E0503 and E0505 (a
    `Mutex` rustc has no clone for): each conflicting line goes below the next statement, the
    borrow's later use - all four in one candidate."""
    ws, rep = fix_fixture(tmp_path, "fix_borrow_reorder")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_borrow_reorder",
        ("    let again = &mut total; // a second handle\n    *seen += 1;\n",
         "    *seen += 1;\n    let again = &mut total; // a second handle\n"),
        ("    bump(n); // counts the step\n    // the old value is still wanted here\n    let old = **before;\n",
         "    // the old value is still wanted here\n    let old = **before;\n    bump(n); // counts the step\n"),
        ("    let next = level + 1;\n    *guard += 2;\n", "    *guard += 2;\n    let next = level + 1;\n"),
        ("    let n = keep(m);\n    let k = held.try_lock().map(|g| *g).unwrap_or(0);\n",
         "    let k = held.try_lock().map(|g| *g).unwrap_or(0);\n    let n = keep(m);\n"))
    assert_compiles(ws)
    assert [r["champion"]["pattern"] for r in rep["rounds"] if r["champion"]] == ["patterns.borrow_conflict"]


def test_a_binding_that_dies_in_its_block_moves_out_of_it(tmp_path):
    """E0597 twice: a `String` bound in a bare block and one in a block expression, each borrowed
    by a value that outlives the block - each `let` moves before the statement opening its block."""
    ws, rep = fix_fixture(tmp_path, "fix_hoist_binding")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_hoist_binding",
        ("    {\n        let label = format!(\"[{}]\", name);\n",
         "    let label = format!(\"[{}]\", name);\n    {\n"),
        ("    let best = {\n        let fallback = String::from(\"none\"); // used when x is short\n",
         "    let fallback = String::from(\"none\"); // used when x is short\n    let best = {\n"))
    assert_compiles(ws)
    assert [r["champion"]["pattern"] for r in rep["rounds"] if r["champion"]] == ["patterns.hoist_binding"]


def test_a_closure_parameter_loses_the_annotation_that_kept_it_in_the_closure(tmp_path):
    """E0521: `|w: &str|` pushes `w` into a Vec declared outside - without the annotation the
    parameter's type (and lifetime) comes from the call."""
    ws, rep = fix_fixture(tmp_path, "fix_closure_param_type")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed("fix_closure_param_type", ("|w: &str|", "|w|"))
    assert_compiles(ws)


def test_an_argument_that_borrows_the_receiver_again_becomes_a_local(tmp_path):
    """E0499 twice, `self.x.insert(k, self.fresh())`: rustc says "try adding a local storing this
    argument" without an edit - the argument goes into a `let` before the statement, named after
    the method unless the fn already has that name."""
    ws, rep = fix_fixture(tmp_path, "fix_hoist_argument")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_hoist_argument",
        ("        self.ids.insert(name.to_string(), self.fresh());\n",
         "        let fresh = self.fresh();\n        self.ids.insert(name.to_string(), fresh);\n"),
        ("        self.order.push(self.fresh());\n",
         "        let fresh_arg = self.fresh();\n        self.order.push(fresh_arg);\n"))
    assert_compiles(ws)


def test_a_value_moved_into_a_crate_fn_is_lent_when_it_cannot_be_cloned(tmp_path):
    """E0382 after `reading(g, 2)`: `Gauge` holds a Mutex (no Clone to derive), so the private
    fn's parameter takes `&Gauge` and the call passes `&g`."""
    ws, rep = fix_fixture(tmp_path, "fix_moved_param")
    assert rep["outcome"] == "fixed", rep
    assert (ws / "src/lib.rs").read_text() == _fixed(
        "fix_moved_param", ("fn reading(g: Gauge,", "fn reading(g: &Gauge,"), ("reading(g, 2)", "reading(&g, 2)"))
    assert_compiles(ws)
