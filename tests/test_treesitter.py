"""Tree-sitter extraction (adapters/treesitter.py) on real Rust: the fixture
workspaces under tests/fixtures/ and small inline sources. No mocks."""
from __future__ import annotations

import os
import pickle
import random
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import blake3
import pytest

from parseltongue.adapters.treesitter import (
    BinaryFileError,
    FileFacts,
    NotUtf8Error,
    extract,
)

FIXTURES = Path(__file__).parent / "fixtures"
MULTI = FIXTURES / "multi"
BROKEN = FIXTURES / "broken"

# column positions of the `nodes` tuples (see the module docstring)
ID, FILE, KIND, NAME, ITEM_PATH, PARENT, LEVEL, SIG, VIS, GENERICS, WHERE, CFG, FEATURES, \
    IS_TEST, DOC, SPAN_START, SPAN_END, LINE_START, LINE_END, ERRORS, HASH, RECOVERED = range(22)


def facts_of(root: Path, rel: str) -> FileFacts:
    return extract(rel, (root / rel).read_bytes())


def nodes_by_id(facts: FileFacts) -> dict:
    return {n[ID]: n for n in facts.nodes}


@pytest.fixture(scope="module")
def shapes():
    return facts_of(MULTI, "crates/geo/src/shapes.rs")


@pytest.fixture(scope="module")
def util():
    return facts_of(MULTI, "crates/geo/src/util.rs")


@pytest.fixture(scope="module")
def geo_lib():
    return facts_of(MULTI, "crates/geo/src/lib.rs")


# --------------------------------------------------------------------- nodes
def test_file_node(shapes, geo_lib):
    f = shapes.nodes[0]
    data = (MULTI / "crates/geo/src/shapes.rs").read_bytes()
    assert f[ID] == "file:crates/geo/src/shapes.rs"
    assert (f[KIND], f[NAME], f[ITEM_PATH], f[PARENT], f[LEVEL]) == ("file", "shapes", "", "", 0)
    assert (f[SPAN_START], f[SPAN_END], f[LINE_START]) == (0, len(data), 1)
    assert f[LINE_END] == data.count(b"\n")
    assert f[HASH] == blake3.blake3(data).hexdigest()
    assert f[ERRORS] == 0 and f[RECOVERED] is False
    assert geo_lib.nodes[0][DOC] == "Geometry primitives shared by the workspace."
    assert all(n[ID] != f[ID] for n in shapes.nodes[1:])
    assert [c[0] for c in shapes.code] == [n[ID] for n in shapes.nodes[1:]]


def test_tuple_shapes_and_unique_ids(shapes, util):
    for facts in (shapes, util):
        ids = [n[ID] for n in facts.nodes]
        assert len(ids) == len(set(ids))
        known = set(ids)
        for n in facts.nodes:
            assert len(n) == 22
            assert n[PARENT] in known or n[KIND] == "file"
        assert all(len(c) == 9 for c in facts.calls)
        assert all(len(u) == 7 for u in facts.uses)
        assert all(len(t) == 4 for t in facts.type_refs)
        assert all(len(i) == 5 for i in facts.impls)
        assert all(len(b) == 4 for b in facts.bounds)


def test_kinds_levels_parents_nested_items(util):
    n = nodes_by_id(util)
    rel = "crates/geo/src/util.rs"
    expect = {
        f"fn:{rel}::histogram": ("fn", 1, f"file:{rel}"),
        f"fn:{rel}::histogram::normalize": ("fn", 2, f"fn:{rel}::histogram"),
        f"struct:{rel}::histogram::Acc": ("struct", 2, f"fn:{rel}::histogram"),
        f"impl:{rel}::histogram::<impl Acc>": ("impl", 2, f"fn:{rel}::histogram"),
        f"fn:{rel}::histogram::<impl Acc>::add": ("fn", 3, f"impl:{rel}::histogram::<impl Acc>"),
        f"mod:{rel}::outer": ("mod", 1, f"file:{rel}"),
        # ISGL1 = items directly in a file or an inline module, however deep
        f"mod:{rel}::outer::inner": ("mod", 1, f"mod:{rel}::outer"),
        f"fn:{rel}::outer::inner::deep": ("fn", 1, f"mod:{rel}::outer::inner"),
        f"fn:{rel}::outer::helper": ("fn", 1, f"mod:{rel}::outer"),
        f"macro_call:{rel}::thread_local": ("macro_call", 1, f"file:{rel}"),
        f"const:{rel}::SCALE": ("const", 1, f"file:{rel}"),
        f"static:{rel}::NAMES": ("static", 1, f"file:{rel}"),
        f"type:{rel}::Grid": ("type", 1, f"file:{rel}"),
        f"use:{rel}::<use std::collections::{{BTreeSet, HashMap as Map}}>": ("use", 1, f"file:{rel}"),
    }
    for iid, (kind, level, parent) in expect.items():
        assert iid in n, iid
        assert (n[iid][KIND], n[iid][LEVEL], n[iid][PARENT]) == (kind, level, parent), iid
    assert n[f"fn:{rel}::outer::inner::deep"][ITEM_PATH] == "outer::inner::deep"
    assert n[f"fn:{rel}::outer::inner::deep"][NAME] == "deep"


def test_trait_enum_variant_extern_and_assoc_items():
    src = b"""
pub trait Store: Send + Sync {
    type Key: Ord;
    const LIMIT: usize = 8;
    fn get(&self, k: &Self::Key) -> Option<u8>;
}
pub enum Op { Add(u8), Neg { v: i8 } = 4, Nop }
union Bits { i: u32, f: f32 }
extern "C" {
    fn abs(x: i32) -> i32;
    static errno: i32;
}
extern crate alloc as heap;
"""
    n = nodes_by_id(extract("src/store.rs", src))
    r = "src/store.rs"
    assert n[f"trait:{r}::Store"][SIG] == "pub trait Store: Send + Sync"
    assert n[f"type:{r}::Store::Key"][LEVEL] == 2
    assert n[f"const:{r}::Store::LIMIT"][SIG] == "const LIMIT: usize"
    assert n[f"fn:{r}::Store::get"][SIG] == "fn get(&self, k: &Self::Key) -> Option<u8>"
    assert n[f"variant:{r}::Op::Neg"][SIG] == "Neg { v: i8 }"
    assert n[f"variant:{r}::Op::Add"][PARENT] == f"enum:{r}::Op"
    assert n[f"union:{r}::Bits"][SIG] == "union Bits"
    assert n[f'extern_block:{r}::<extern "C">'][LEVEL] == 1
    assert n[f'fn:{r}::<extern "C">::abs'][PARENT] == f'extern_block:{r}::<extern "C">'
    assert n[f'static:{r}::<extern "C">::errno'][KIND] == "static"
    assert f"use:{r}::<extern crate alloc as heap>" in n


def test_signatures_visibility_generics_where(shapes, util):
    n = nodes_by_id(shapes)
    r = "crates/geo/src/shapes.rs"
    largest = n[f"fn:{r}::largest"]
    assert largest[SIG] == ("pub fn largest<'a, S>(items: &'a [S]) -> Option<&'a S> "
                            "where S: Shape + PartialOrd,")
    assert (largest[VIS], largest[GENERICS]) == ("pub", "<'a, S>")
    assert largest[WHERE] == "where S: Shape + PartialOrd,"
    assert n[f"trait:{r}::Shape"][SIG] == "pub trait Shape: fmt::Debug"
    assert n[f"struct:{r}::Circle"][SIG] == "pub struct Circle"
    assert n[f"struct:{r}::Wrapper"][SIG] == "pub struct Wrapper<T>(pub T)"
    assert n[f"fn:{r}::<impl Display for Rect>::fmt"][SIG] == \
        "fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result"
    imp = n[f"impl:{r}::<impl<T: Clone> From<T> for Wrapper<T>>"]
    assert (imp[SIG], imp[GENERICS]) == ("impl<T: Clone> From<T> for Wrapper<T>", "<T: Clone>")
    u = nodes_by_id(util)
    ru = "crates/geo/src/util.rs"
    assert u[f"const:{ru}::SCALE"][SIG] == "pub const SCALE: f64"
    assert u[f"static:{ru}::NAMES"][SIG] == "pub static NAMES: [&str; 2]"
    assert u[f"type:{ru}::Grid"][SIG] == "pub type Grid = Vec<Vec<u8>>"
    assert u[f"mod:{ru}::outer"][SIG] == "pub mod outer"
    assert u[f"macro_call:{ru}::thread_local"][SIG] == "thread_local!"
    assert u[f"fn:{ru}::outer::helper"][VIS] == ""


def test_disambiguators_for_impl_blocks_and_cfg_variants(shapes):
    n = nodes_by_id(shapes)
    r = "crates/geo/src/shapes.rs"
    assert f"impl:{r}::<impl Circle>" in n and f"impl:{r}::<impl Circle>~2" in n
    assert n[f"fn:{r}::<impl Circle>::new"][PARENT] == f"impl:{r}::<impl Circle>"
    assert n[f"fn:{r}::<impl Circle>~2::diameter"][PARENT] == f"impl:{r}::<impl Circle>~2"
    first, second = n[f"fn:{r}::platform"], n[f"fn:{r}::platform~2"]
    assert (first[CFG], second[CFG]) == (["unix"], ["not(unix)"])
    assert first[SPAN_START] < second[SPAN_START]
    # the same trait method name in several impls is no collision
    assert f"fn:{r}::<impl Shape for Circle>::area" in n
    assert f"fn:{r}::<impl Shape for Rect>::area" in n
    assert f"fn:{r}::Shape::area" in n


def test_duplicate_items_in_broken_code_get_suffixes():
    src = b"fn dup() {}\nfn dup() {}\nmod m { fn x() {} }\nmod m { fn x() {} }\n"
    ids = [n[ID] for n in extract("src/d.rs", src).nodes]
    assert ids == ["file:src/d.rs", "fn:src/d.rs::dup", "fn:src/d.rs::dup~2", "mod:src/d.rs::m",
                   "fn:src/d.rs::m::x", "mod:src/d.rs::m~2", "fn:src/d.rs::m~2::x"]


def test_ids_stable_when_lines_are_inserted_above():
    rel = "crates/geo/src/shapes.rs"
    src = (MULTI / rel).read_text()
    before = {n[ID]: n[HASH] for n in extract(rel, src.encode()).nodes[1:]}
    # new lines at the top, and a new method inside the first impl block
    edited = "// a new comment\n\nconst EXTRA: u8 = 1;\n" + src.replace(
        "impl Circle {\n", "impl Circle {\n    fn added(&self) {}\n\n", 1)
    after = {n[ID]: n[HASH] for n in extract(rel, edited.encode()).nodes[1:]}
    assert set(after) - set(before) == {f"const:{rel}::EXTRA", f"fn:{rel}::<impl Circle>::added"}
    assert set(before) - set(after) == set()
    changed = {i for i in before if before[i] != after[i]}
    assert changed == {f"impl:{rel}::<impl Circle>"}  # only the block that got a new method


def test_spans_include_attributes_and_docs_and_code_matches(shapes):
    rel = "crates/geo/src/shapes.rs"
    data = (MULTI / rel).read_bytes()
    n = nodes_by_id(shapes)
    circle = n[f"struct:{rel}::Circle"]
    assert data[circle[SPAN_START]:].startswith(b"#[derive(Debug, Clone, PartialEq)]\npub struct")
    area = n[f"fn:{rel}::Shape::area"]
    assert data[area[SPAN_START]:area[SPAN_END]] == \
        b"/// The area of the shape.\n    fn area(&self) -> f64;"
    assert (area[LINE_START], area[LINE_END]) == (5, 6)
    code = dict(shapes.code)
    for node in shapes.nodes[1:]:
        piece = data[node[SPAN_START]:node[SPAN_END]]
        assert code[node[ID]] == piece.decode()
        assert node[HASH] == blake3.blake3(piece).hexdigest()
        assert node[LINE_START] == data.count(b"\n", 0, node[SPAN_START]) + 1
        assert node[LINE_END] == node[LINE_START] + piece.count(b"\n")


def test_docs(shapes, util):
    n = nodes_by_id(shapes)
    r = "crates/geo/src/shapes.rs"
    assert n[f"trait:{r}::Shape"][DOC] == "Anything with an area."
    assert n[f"fn:{r}::Shape::area"][DOC] == "The area of the shape."
    assert n[f"fn:{r}::largest"][DOC] == "Largest item by area."
    assert n[f"fn:{r}::Shape::name"][DOC] == ""
    src = b'''/// first
// a plain comment in between
/** block
 * doc */
#[doc = "attr doc"]
fn f() {}
mod m {
    //! inner doc of m
}
'''
    m = nodes_by_id(extract("src/d.rs", src))
    assert m["fn:src/d.rs::f"][DOC] == "first\nblock\ndoc\nattr doc"
    assert m["fn:src/d.rs::f"][SPAN_START] == 0
    assert m["mod:src/d.rs::m"][DOC] == "inner doc of m"


def test_bom_and_crlf():
    src = b"\xef\xbb\xbf/// doc\r\nfn a() -> u8 {\r\n    b(1)\r\n}\r\n"
    facts = extract("src/w.rs", src)
    a = facts.nodes[1]
    assert (a[ID], a[DOC], a[SIG], a[LINE_START], a[LINE_END]) == \
        ("fn:src/w.rs::a", "doc", "fn a() -> u8", 1, 4)
    assert [c[1:5] + (c[7],) for c in facts.calls] == [("b", "b", "", "plain", 3)]


# ------------------------------------------------------- cfg, features, tests
def test_features_and_cfg(geo_lib):
    n = nodes_by_id(geo_lib)
    fancy_mod = n["mod:crates/geo/src/lib.rs::fancy"]
    assert fancy_mod[CFG] == ['feature = "fancy"'] and fancy_mod[FEATURES] == ["fancy"]
    fancy = nodes_by_id(facts_of(MULTI, "crates/geo/src/fancy.rs"))
    assert fancy["fn:crates/geo/src/fancy.rs::to_pairs"][FEATURES] == ["serde_like"]
    report = nodes_by_id(facts_of(MULTI, "crates/app/src/report.rs"))
    assert report["fn:crates/app/src/report.rs::verbose"][FEATURES] == ["verbose"]
    # every feature used in the fixture is declared in its crate's Cargo.toml
    declared = set()
    for toml in MULTI.glob("crates/*/Cargo.toml"):
        declared |= set(tomllib.loads(toml.read_text()).get("features", {}))
    assert {"fancy", "serde_like", "verbose"} <= declared
    src = b"""#[cfg(all(feature = "a", any(unix, feature = "b")))]
#[cfg_attr(feature = "c", derive(Debug))]
struct S;
"""
    s = extract("src/s.rs", src).nodes[1]
    assert s[CFG] == ['all(feature = "a", any(unix, feature = "b"))', 'cfg_attr:feature = "c"']
    assert s[FEATURES] == ["a", "b", "c"]


def test_is_test(shapes):
    n = nodes_by_id(shapes)
    r = "crates/geo/src/shapes.rs"
    assert n[f"mod:{r}::tests"][IS_TEST] is True
    assert n[f"fn:{r}::tests::circle_area"][IS_TEST] is True
    assert n[f"use:{r}::tests::<use super::*>"][IS_TEST] is True  # inherited
    assert n[f"fn:{r}::largest"][IS_TEST] is False
    integ = facts_of(MULTI, "crates/geo/tests/integration.rs")
    assert integ.nodes[0][IS_TEST] is True  # an integration test target
    assert all(node[IS_TEST] for node in integ.nodes)
    src = b"""
#[tokio::test]
async fn a() {}
#[bench]
fn b(x: &mut Bencher) {}
#[cfg(not(test))]
fn c() {}
#[cfg(all(test, unix))]
fn d() { fn nested() {} }
fn e() {}
"""
    m = nodes_by_id(extract("src/t.rs", src))
    got = {k.rsplit("::", 1)[1]: v[IS_TEST] for k, v in m.items() if v[KIND] == "fn"}
    assert got == {"a": True, "b": True, "c": False, "d": True, "nested": True, "e": False}


# --------------------------------------------------------------------- calls
def test_calls_plain_path_method(shapes, util):
    r = "crates/geo/src/shapes.rs"
    calls = {c[:5] + (c[8],) for c in shapes.calls}
    assert (f"fn:{r}::<impl<T: Clone> From<T> for Wrapper<T>>::from", "Wrapper", "Wrapper", "",
            "plain", False) in calls
    assert (f"fn:{r}::<impl<T: Clone> From<T> for Wrapper<T>>::from", "clone", "clone", "value",
            "method", False) in calls
    assert (f"fn:{r}::names", "collect", "collect", "items.into_iter().map(|c| c.name())",
            "method", False) in calls
    assert (f"fn:{r}::tests::circle_area", "Circle::new", "new", "", "path", False) in calls
    u = "crates/geo/src/util.rs"
    ucalls = {c[:5] for c in util.calls}
    assert (f"fn:{u}::outer::inner::deep", "super::helper", "helper", "", "path") in ucalls
    assert (f"fn:{u}::outer::inner::deep", "crate::util::bump", "bump", "", "path") in ucalls
    assert (f"fn:{u}::outer::call_deep", "inner::deep", "deep", "", "path") in ucalls
    # calls in a nested fn / nested impl belong to them, not to the outer fn
    assert (f"fn:{u}::histogram::normalize", "trim", "trim", "w", "method") in ucalls
    assert (f"fn:{u}::histogram::<impl Acc>::add", "entry", "entry", "self.map", "method") \
        in ucalls
    assert (f"fn:{u}::histogram", "normalize", "normalize", "", "plain") in ucalls
    # spans point at the callee; lines are 1-based
    data = (MULTI / u).read_bytes()
    for c in util.calls:
        assert data[c[5]:c[6]].decode().endswith(c[2])
        assert c[7] == data.count(b"\n", 0, c[5]) + 1


def test_call_shapes_turbofish_self_and_exprs():
    src = b"""impl S {
    fn f(&self) {
        let v = Vec::<u8>::with_capacity(4);
        let n = parse::<u32>(x);
        Self::new();
        <T as Default>::default();
        self.items.iter().map(|i| i.len()).count();
        (self.cb)(1);
        x.0.go::<u8>();
    }
}
const C: u32 = compute(2);
"""
    calls = {c[:5] for c in extract("src/c.rs", src).calls}
    f = "fn:src/c.rs::<impl S>::f"
    assert (f, "Vec::with_capacity", "with_capacity", "", "path") in calls
    assert (f, "parse", "parse", "", "plain") in calls
    assert (f, "Self::new", "new", "", "path") in calls
    assert (f, "<T as Default>::default", "default", "", "path") in calls
    assert (f, "count", "count", "self.items.iter().map(|i| i.len())", "method") in calls
    assert (f, "(self.cb)", "", "", "expr") in calls
    assert (f, "go", "go", "x.0", "method") in calls
    assert ("const:src/c.rs::C", "compute", "compute", "", "plain") in calls


def test_calls_inside_macro_token_trees(shapes):
    r = "crates/geo/src/shapes.rs"
    in_macro = {c[:5] for c in shapes.calls if c[8]}
    assert (f"fn:{r}::Shape::name", "area", "area", "self", "method") in in_macro  # format!
    assert (f"fn:{r}::tests::circle_area", "diameter", "diameter", "c", "method") in in_macro
    assert (f"fn:{r}::tests::rect_display", "largest", "largest", "", "plain") in in_macro
    assert (f"fn:{r}::tests::rect_display", "format", "format", "", "macro") in in_macro
    assert (f"fn:{r}::tests::rect_display", "map", "map", "largest(&[r.clone()])",
            "method") in in_macro
    macros = {c[:5] for c in shapes.calls if c[4] == "macro" and not c[8]}
    assert (f"fn:{r}::tests::circle_area", "assert_eq", "assert_eq", "", "macro") in macros
    assert (f"fn:{r}::<impl Shape for Circle>::area", "crate::square", "square", "",
            "macro") in macros
    fancy = facts_of(MULTI, "crates/geo/src/fancy.rs")
    vec_calls = {c[1:5] for c in fancy.calls if c[8]}
    assert ("to_string", "to_string", '"outer"', "method") in vec_calls  # inside vec![..]
    src = b"""fn f() {
    println!("{} (not a call) {}", a::b::<u8>::c(1), 'x');
    assert_eq!(Vec::<u8>::new().len(), helper(2), "msg(no) {}", r#"raw(no)"#);
    my_macro! { fn defined_inside(x: u8) { if (x > 1) { inner(x) } } };
    write!(out, "{}", nested!(k(1)))?;
}
"""
    got = {c[1:5] for c in extract("src/m.rs", src).calls if c[8]}
    assert got == {
        ("a::b::c", "c", "", "path"), ("Vec::new", "new", "", "path"),
        ("len", "len", "Vec::<u8>::new()", "method"), ("helper", "helper", "", "plain"),
        ("inner", "inner", "", "plain"), ("nested", "nested", "", "macro"),
        ("k", "k", "", "plain"),
    }


def test_item_level_macros_and_macro_rules(geo_lib, util):
    n = nodes_by_id(geo_lib)
    sq = n["macro_rules:crates/geo/src/lib.rs::square"]
    assert (sq[SIG], sq[DOC]) == ("macro_rules! square", "Square a number.")
    assert ("macro_call:crates/geo/src/util.rs::thread_local", "Cell::new", "new", "", "path",
            True) in {c[:5] + (c[8],) for c in util.calls}
    src = b"""lazy_static! { static ref A: u8 = 1; }
fn f() { thread_local!(static B: u8 = 2); }
impl From<Token![_]> for Ident { delegate!(x); }
mod m { make_tests!(a, b); }
"""
    kinds = [(x[ID], x[LEVEL]) for x in extract("src/l.rs", src).nodes if x[KIND] != "file"]
    assert kinds == [  # the one in a fn body and the one in an impl header are calls only
        ("macro_call:src/l.rs::lazy_static", 1), ("fn:src/l.rs::f", 1),
        ("impl:src/l.rs::<impl From<Token![_]> for Ident>", 1),
        ("macro_call:src/l.rs::<impl From<Token![_]> for Ident>::delegate", 2),
        ("mod:src/l.rs::m", 1), ("macro_call:src/l.rs::m::make_tests", 1)]


def test_cross_crate_calls():
    main = facts_of(MULTI, "crates/app/src/main.rs")
    m = "fn:crates/app/src/main.rs::main"
    calls = {c[:5] + (c[8],) for c in main.calls}
    assert (m, "Circle::new", "new", "", "path", False) in calls
    assert (m, "report::line", "line", "", "path", False) in calls
    assert (m, "deep_fn", "deep_fn", "", "plain", True) in calls
    assert (m, "geo::util::outer::call_deep", "call_deep", "", "path", True) in calls
    uses = {(u[2], u[3], u[4]) for u in main.uses}
    assert ("geo::util::outer::inner::deep", "deep_fn", "deep_fn") in uses
    report = facts_of(MULTI, "crates/app/src/report.rs")
    assert ("fn:crates/app/src/report.rs::line", "geo::total_area", "total_area", "", "path",
            True) in {c[:5] + (c[8],) for c in report.calls}


# ---------------------------------------------------------- uses, impls, ...
def test_use_tree_expansion(geo_lib, shapes):
    lib_uses = {u[2:] for u in geo_lib.uses}
    assert lib_uses == {
        ("shapes::Circle", "Circle", "", False, "pub"),
        ("shapes::Rect", "Rectangle", "Rectangle", False, "pub"),
        ("shapes::Shape", "Shape", "", False, "pub"),
        ("util", "*", "", True, "pub"),
    }
    rel = "crates/geo/src/shapes.rs"
    assert (f"mod:{rel}::tests", f"use:{rel}::tests::<use super::*>", "super", "*", "", True,
            "") in shapes.uses
    src = b"""use a::{b, c as d, e::*, self, f::{g, self as h}};
pub(crate) use ::std::x as y;
extern crate foo as bar;
fn scoped() { use inner::thing; }
"""
    facts = extract("src/u.rs", src)
    assert [(u[2], u[3], u[4], u[5]) for u in facts.uses] == [
        ("a::b", "b", "", False), ("a::c", "d", "d", False), ("a::e", "*", "", True),
        ("a", "a", "", False), ("a::f::g", "g", "", False), ("a::f", "h", "h", False),
        ("::std::x", "y", "y", False), ("foo", "bar", "bar", False),
        ("inner::thing", "thing", "", False),
    ]
    assert facts.uses[6][6] == "pub(crate)"
    assert facts.uses[-1][0] == "fn:src/u.rs::scoped"  # the scope is the fn


def test_impls(shapes):
    r = "crates/geo/src/shapes.rs"
    assert set(shapes.impls) == {
        (f"impl:{r}::<impl Circle>", "", "", "Circle", "Circle"),
        (f"impl:{r}::<impl Circle>~2", "", "", "Circle", "Circle"),
        (f"impl:{r}::<impl Shape for Circle>", "Shape", "Shape", "Circle", "Circle"),
        (f"impl:{r}::<impl Shape for Rect>", "Shape", "Shape", "Rect", "Rect"),
        (f"impl:{r}::<impl Display for Rect>", "Display", "Display", "Rect", "Rect"),
        (f"impl:{r}::<impl<T: Clone> From<T> for Wrapper<T>>", "From", "From", "Wrapper",
         "Wrapper"),
    }
    src = b"impl<'a> fmt::Write for &'a mut Buf {}\nunsafe impl Send for X {}\nimpl !Sync for X {}\n"
    assert [i[1:] for i in extract("src/i.rs", src).impls] == [
        ("fmt::Write", "Write", "Buf", "Buf"), ("Send", "Send", "X", "X"),
        ("!Sync", "!Sync", "X", "X")]


def test_bounds(shapes, util):
    r = "crates/geo/src/shapes.rs"
    assert set(shapes.bounds) == {
        (f"trait:{r}::Shape", "Self", "fmt::Debug", "Debug"),
        (f"impl:{r}::<impl<T: Clone> From<T> for Wrapper<T>>", "T", "Clone", "Clone"),
        (f"fn:{r}::largest", "S", "Shape", "Shape"),
        (f"fn:{r}::largest", "S", "PartialOrd", "PartialOrd"),
        (f"fn:{r}::names", "impl:items", "IntoIterator", "IntoIterator"),
    }
    u = "crates/geo/src/util.rs"
    assert {b for b in util.bounds} == {(f"fn:{u}::scaled", "T", "Into", "Into"),
                                        (f"fn:{u}::scaled", "T", "Copy", "Copy")}
    src = b"""fn f<'a, T: Clone + ?Sized + 'a, F: Fn(u8) -> u8, const N: usize>(x: &mut impl Tr)
where for<'b> G: FnMut(&'b u8), Vec<T>: io::Read {}
trait Tr { type A: Iterator<Item = u8> + Send; }
"""
    got = [b[1:] for b in extract("src/b.rs", src).bounds]
    assert got == [("T", "Clone", "Clone"), ("T", "?Sized", "?Sized"), ("F", "Fn", "Fn"),
                   ("G", "FnMut", "FnMut"), ("Vec<T>", "io::Read", "Read"),
                   ("A", "Iterator", "Iterator"), ("A", "Send", "Send"),
                   ("impl:x", "Tr", "Tr")]


def test_type_refs(shapes, util):
    u = "crates/geo/src/util.rs"
    refs = {t[:3] for t in util.type_refs}
    assert (f"struct:{u}::histogram::Acc", "Map", "Map") in refs  # field types
    assert (f"struct:{u}::histogram::Acc", "String", "String") in refs
    assert (f"impl:{u}::histogram::<impl Acc>", "Acc", "Acc") in refs  # impl header
    assert (f"fn:{u}::unique_sorted", "BTreeSet", "BTreeSet") in refs  # return type
    assert not any(t[1] == "T" for t in util.type_refs)  # generic parameters are not types
    r = "crates/geo/src/shapes.rs"
    srefs = {t[:3] for t in shapes.type_refs}
    assert (f"fn:{r}::largest", "Option", "Option") in srefs  # in `let best: Option<..>`
    assert (f"fn:{r}::<impl Display for Rect>::fmt", "fmt::Formatter", "Formatter") in srefs
    assert not any(t[1] in ("Self", "S", "f64") for t in shapes.type_refs)
    keys = [(t[0], t[1]) for t in shapes.type_refs]
    assert len(keys) == len(set(keys))  # one row per (item, type)
    src = b"""const K: Kind = Kind::A;
fn f<I: Iterator<Item = u8>>(it: I) -> io::Result<()> {
    let c: Circle = make();
    let n = x as Count;
    Point { x: 1 }
}
"""
    got = {t[:2] for t in extract("src/t.rs", src).type_refs}
    assert got == {("const:src/t.rs::K", "Kind"), ("fn:src/t.rs::f", "Iterator"),
                   ("fn:src/t.rs::f", "io::Result"), ("fn:src/t.rs::f", "Circle"),
                   ("fn:src/t.rs::f", "Count"), ("fn:src/t.rs::f", "Point")}


def test_mods_rows(geo_lib, util):
    assert set(geo_lib.mods) == {("mod:crates/geo/src/lib.rs::shapes", "shapes", False, ""),
                                 ("mod:crates/geo/src/lib.rs::util", "util", False, ""),
                                 ("mod:crates/geo/src/lib.rs::fancy", "fancy", False, "")}
    assert ("mod:crates/geo/src/util.rs::outer::inner", "inner", True, "") in util.mods
    src = b'#[path = "imp/unix.rs"]\nmod sys;\n'
    assert extract("src/p.rs", src).mods == [("mod:src/p.rs::sys", "sys", False, "imp/unix.rs")]


def test_facts_pickle_round_trip(shapes):
    assert pickle.loads(pickle.dumps(shapes)) == shapes


# ---------------------------------------------------------------- bad input
def test_non_utf8_and_binary_raise_typed_errors():
    with pytest.raises(NotUtf8Error) as e:
        extract("src/latin1.rs", "fn caf\u00e9() {}".encode("latin-1"))
    assert isinstance(e.value, ValueError) and e.value.rel_path == "src/latin1.rs"
    with pytest.raises(BinaryFileError):
        extract("src/blob.rs", b"fn a() {}\x00\x01\x02")
    assert isinstance(BinaryFileError("x"), ValueError)


@pytest.mark.parametrize("src", [
    b"", b"\n\n", b"}}}}", b"{{{{", b"fn", b"impl", b"#[", b"/*", b'"', b"r#\"", b"'",
    b"fn f(", "fn \u00e9t\u00e9() { \"\u00fc\" }".encode(), b"mod m { mod n { fn x() {",
    b"@@@ $$$ ###", b"struct S { a: }", b"macro_rules! m { ($x) => { $x( } }",
    b"fn f() { " + b"{" * 3000 + b"}" * 3000 + b" }",  # deep nesting: no recursion
    b"fn f() { let x = " + b"(" * 2000 + b"1" + b")" * 2000 + b"; }",
])
def test_odd_inputs_never_raise(src):
    facts = extract("src/odd.rs", src)
    assert facts.nodes[0][KIND] == "file"
    for n in facts.nodes:
        assert 0 <= n[SPAN_START] <= n[SPAN_END] <= len(src)


@pytest.mark.parametrize("line", [b"fn a(\n", b"fn b() {\n", b"impl X {\n  fn f() { if x {\n",
                                  b"struct S {\n", b"#[cfg(x)]\n", b"/// doc\n"])
def test_pathological_files_stay_linear(line):
    src = line * 20000
    t0 = time.process_time()
    facts = extract("src/p.rs", src)
    assert time.process_time() - t0 < 5.0  # bracket matching runs within a budget
    assert facts.nodes[0][SPAN_END] == len(src)


# ------------------------------------------------------------- broken code
def test_broken_fixture_keeps_intact_items():
    garbage = facts_of(BROKEN, "src/garbage.rs")
    g = nodes_by_id(garbage)
    r = "src/garbage.rs"
    assert garbage.parse_error_count > 0 and garbage.error_spans
    assert garbage.nodes[0][ERRORS] == garbage.parse_error_count
    intact = g[f"fn:{r}::clean_one"]
    assert (intact[ERRORS], intact[RECOVERED], intact[PARENT]) == (0, False, f"file:{r}")
    # tree-sitter broke `helper` apart because garbage follows it; its span
    # comes back from bracket matching, flagged as recovered
    helper = g[f"fn:{r}::helper"]
    data = (BROKEN / r).read_bytes()
    assert data[helper[SPAN_START]:helper[SPAN_END]] == b"fn helper(v: i32) -> i32 {\n    v\n}"
    assert helper[RECOVERED] is True and helper[SIG] == "fn helper(v: i32) -> i32"
    # parsed as an expression by tree-sitter, rebuilt from the text
    assert g[f"struct:{r}::AfterGarbage"][RECOVERED] is True
    assert g[f"fn:{r}::clean_two"][PARENT] == f"file:{r}"
    assert ("fn:src/garbage.rs::clean_two", "clean_one", "clean_one", "", "plain") in \
        {c[:5] for c in garbage.calls}
    half = g[f"fn:{r}::half_written"]
    assert half[ERRORS] >= 1 and half[RECOVERED] is True

    mb = nodes_by_id(facts_of(BROKEN, "src/missing_brace.rs"))
    r = "src/missing_brace.rs"
    assert mb[f"fn:{r}::before_break"][ERRORS] == 0
    assert mb[f"fn:{r}::<impl Config>::new"][RECOVERED] is False
    assert mb[f"fn:{r}::<impl Config>::broken"][RECOVERED] is True
    # without the brace, the following fns are inside `broken`, as rustc reads it
    assert mb[f"fn:{r}::<impl Config>::broken::after_break"][LEVEL] == 3

    tr = facts_of(BROKEN, "src/truncated.rs")
    t = nodes_by_id(tr)
    r = "src/truncated.rs"
    assert t[f"fn:{r}::complete"][ERRORS] == 0
    assert t[f"variant:{r}::Mode::Slow"][ERRORS] == 0
    assert t[f"fn:{r}::cut_short"][RECOVERED] is True
    assert tr.nodes[0][RECOVERED] is True

    lib = facts_of(BROKEN, "src/lib.rs")
    assert lib.parse_error_count == 0
    assert [m[1] for m in lib.mods] == ["garbage", "missing_brace", "truncated"]


def test_items_rebuilt_from_loose_tokens():
    src = b"""fn good() -> u8 { 1 }
@@@ $$$
pub(crate) fn after(x: u8) -> u8 { x }
impl<T> Holder<T> where T: Copy {
    fn get(&self) -> T { self.0
"""
    facts = extract("src/r.rs", src)
    n = nodes_by_id(facts)
    assert n["fn:src/r.rs::good"][RECOVERED] is False
    after = n["fn:src/r.rs::after"]
    assert (after[VIS], after[SIG]) == ("pub(crate)", "pub(crate) fn after(x: u8) -> u8")
    holder = n["impl:src/r.rs::<impl<T> Holder<T>>"]
    assert holder[RECOVERED] is True and holder[SPAN_END] == len(src)
    assert facts.impls == [(holder[ID], "", "", "Holder", "Holder")]
    assert n["fn:src/r.rs::<impl<T> Holder<T>>::get"][PARENT] == holder[ID]
    # an unterminated block comment: its text is no source of items
    src = b"""mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::{unix, fd};
    /* fn commented_out() {
"""
    n = nodes_by_id(extract("src/c.rs", src))
    assert set(n) == {"file:src/c.rs", "mod:src/c.rs::tests", "use:src/c.rs::tests::<use super::*>",
                      "use:src/c.rs::tests::<use std::os::{unix, fd}>"}
    assert n["use:src/c.rs::tests::<use std::os::{unix, fd}>"][CFG] == ["unix"]


# --------------------------------------------------------------------- fuzz
FUZZ_FILES = sorted(MULTI.glob("crates/**/*.rs")) + sorted(BROKEN.glob("src/*.rs"))
GARBAGE = ["@@", "}", "{", "fn", "(", ")", ";", '"', "'", "/*", "#[", "\u00e9", "let x = ",
           "<", "impl", "::", "!", "garbage words", "\n", "]]", "\u2603"]


def _mutate(rng: random.Random, src: str):
    """-> (kind, character offset of the mutation, mutated text)."""
    kind = rng.choice(["truncate", "brace", "garbage", "dup"])
    if kind == "brace" and not any(c in "{}" for c in src):
        kind = "garbage"
    if kind == "truncate":
        x = rng.randrange(len(src) + 1)
        return kind, x, src[:x]
    if kind == "brace":
        x = rng.choice([i for i, c in enumerate(src) if c in "{}"])
        return kind, x, src[:x] + src[x + 1:]
    if kind == "garbage":
        x = rng.randrange(len(src) + 1)
        junk = "".join(rng.choice(GARBAGE) for _ in range(rng.randint(1, 4)))
        return kind, x, src[:x] + junk + src[x:]
    lines = src.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    line = lines[i] if lines[i].endswith("\n") else lines[i] + "\n"
    x = sum(len(ln) for ln in lines[:i]) + len(line)
    return kind, x, "".join(lines[:i]) + line + line + "".join(lines[i + 1:])


def test_fuzz_mutations_never_raise_and_keep_untouched_items():
    rng = random.Random(20240611)
    sources = {p: p.read_text() for p in FUZZ_FILES}
    baseline = {p: extract("x.rs", s.encode()) for p, s in sources.items()}
    checked = 0
    for _ in range(400):
        path = rng.choice(FUZZ_FILES)
        src = sources[path]
        kind, x, mutated = _mutate(rng, src)
        offset = len(src[:x].encode())
        facts = extract("x.rs", mutated.encode())  # must not raise
        got = {n[ID]: n[HASH] for n in facts.nodes}
        for n in baseline[path].nodes[1:]:
            # intact items that end before the mutation are found unchanged
            # (garbage glued to an item's last token, as in `Fast` -> `Fastimpl`,
            # changes that token, so there the item must end strictly before)
            before = n[SPAN_END] < offset or (n[SPAN_END] == offset and kind != "garbage")
            if before and n[ERRORS] == 0:
                assert got.get(n[ID]) == n[HASH], (kind, path.name, offset, n[ID])
                checked += 1
    assert checked > 1000


# ------------------------------------------------------------ the fixtures
def test_every_fixture_file_extracts_consistently():
    for path in FUZZ_FILES:
        rel = path.relative_to(path.parents[2] if "crates" in path.parts else BROKEN).as_posix()
        facts = extract(rel, path.read_bytes())
        ids = [n[ID] for n in facts.nodes]
        assert len(ids) == len(set(ids)), rel
        by_id = nodes_by_id(facts)
        for n in facts.nodes[1:]:
            parent = by_id[n[PARENT]]
            assert n[LEVEL] == (1 if parent[KIND] == "mod" else parent[LEVEL] + 1)
            assert parent[SPAN_START] <= n[SPAN_START] <= n[SPAN_END] <= parent[SPAN_END]


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_multi_fixture_compiles_offline(tmp_path):
    proc = subprocess.run(
        ["cargo", "check", "--offline", "--quiet", "--workspace", "--all-targets",
         "--all-features"],
        cwd=MULTI, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CARGO_TARGET_DIR": str(tmp_path / "target")})
    assert proc.returncode == 0, proc.stderr
