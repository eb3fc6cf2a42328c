"""Hydration against the real rust-analyzer binary on tests/fixtures/hydrate_ws.

No mocks: the binary comes from ``find_rust_analyzer()`` and the tests that need it skip (with
the reason) only when none exists. The fixture is copied to a temp dir first: rust-analyzer's
``cargo metadata`` may write ``Cargo.lock``, and tests edit files.

The fixture (two crates) has cross-file, cross-module and cross-crate calls, a trait with two
impls, a local closure named like a crate fn (RA contradicts the name heuristic), a
``macro_rules!``-generated fn, and ``broken_sum`` calling ``clamp`` with two arguments instead
of three (rust-analyzer's native ``mismatched-arg-count``; the fixture does not compile).
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES
from parseltongue.adapters import rust_analyzer as ra
from parseltongue.adapters.store import open_store
from parseltongue.runner.api import Pt
from parseltongue.runner.hydrate import hydrate
from parseltongue.runner.ingest import ingest

BINARY, NOTES = ra.probe_rust_analyzer()
needs_ra = pytest.mark.skipif(BINARY is None, reason="no rust-analyzer binary: " + "; ".join(NOTES))
pytestmark = pytest.mark.timeout(180)

AREA = "shapes/src/area.rs"
UTIL = "shapes/src/util.rs"
MAIN = "app/src/main.rs"
TRIPLE = "macro_interface:shapes/src/util.rs::make_scaler::triple"


def copy_ws(dest: Path) -> Path:
    shutil.copytree(FIXTURES / "hydrate_ws", dest)
    (dest / ".parseltongue").mkdir()
    return dest


def open_pt(ws: Path) -> Pt:
    return Pt(ws, open_store(ws / ".parseltongue" / "graph.db"))


def ra_edges(pt: Pt, kind: str = "CALLS") -> set[tuple[str, str]]:
    rows = pt.store.run("?[s, d] := *isg_edges{src_id: s, dst_id: d, kind: $k, provenance: 'ra'}", {"k": kind}).rows
    return {(s, d) for s, d in rows}


def calls(pt: Pt) -> set[tuple[str, str, str]]:
    rows = pt.store.run("?[s, d, p] := *isg_edges{src_id: s, dst_id: d, kind: 'CALLS', provenance: p}").rows
    return {tuple(r) for r in rows}


def node(pt: Pt, node_id: str) -> dict:
    rows = pt.store.run("?[kind, name, parent_id, ra_signature, signature_exact, ra_hydrated_ts, confidence] := "
                        "*isg_nodes{id: $id, kind, name, parent_id, ra_signature, signature_exact, ra_hydrated_ts, "
                        "confidence}", {"id": node_id}).dicts()
    assert rows, f"no node {node_id}"
    return rows[0]


def assert_consistent(pt: Pt) -> None:
    assert pt.query("hydrate.check") == []


def kill_now(pid: int) -> None:
    """SIGKILL from another thread, and wait until the process is really gone (or a zombie)."""
    def kill() -> None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if "zombie" in Path(f"/proc/{pid}/status").read_text():
                    return
            except OSError:
                return
            time.sleep(0.02)
    t = threading.Thread(target=kill)
    t.start()
    t.join()


@pytest.fixture(scope="module")
def hydrated(tmp_path_factory):
    """The fixture ingested and hydrated once: (workspace, pt, report)."""
    if BINARY is None:
        pytest.skip("no rust-analyzer binary")
    ws = copy_ws(tmp_path_factory.mktemp("hyd") / "hydrate_ws")
    pt = open_pt(ws)
    ingest(ws, pt.store)
    report = hydrate(ws, pt.store)
    yield ws, pt, report
    pt.close()


# -- the real binary, one hydration ---------------------------------------------


@needs_ra
def test_every_file_is_hydrated_and_the_graph_is_consistent(hydrated):
    ws, pt, report = hydrated
    assert report.ra_available and not report.warning, report.warning
    assert report.files_pending == report.files_hydrated == 6
    assert report.files_deferred == [] and report.files_skipped == [] and report.request_errors == 0
    assert report.symbols_matched == report.symbols > 0
    assert_consistent(pt)
    stamps = pt.store.run("?[f, ts] := *isg_nodes{file_path: f, kind: 'file', ra_hydrated_ts: ts}").rows
    assert len(stamps) == 6 and all(ts > 0 for _, ts in stamps)


@needs_ra
def test_hover_signatures_land_in_ra_signature(hydrated):
    _, pt, _ = hydrated
    clamp = node(pt, "fn:shapes/src/util.rs::clamp")
    assert clamp["ra_signature"] == "pub fn clamp(v: i32, lo: i32, hi: i32) -> i32"
    assert clamp["signature_exact"] == clamp["ra_signature"] and clamp["confidence"] == 1.0
    assert node(pt, "struct:shapes/src/area.rs::Circle")["ra_signature"] == "pub struct Circle"
    assert node(pt, "fn:shapes/src/area.rs::<impl Circle>::new")["ra_signature"] == "pub fn new(r: i32) -> Self"
    assert node(pt, "fn:shapes/src/lib.rs::inner::double")["ra_signature"] == "pub fn double(x: i32) -> i32"
    assert node(pt, "const:shapes/src/lib.rs::LIMIT")["ra_signature"].startswith("pub const LIMIT: i32 = 100")
    # Items without a signature of their own stay without one (and keep the confidence penalty).
    impl = node(pt, "impl:shapes/src/area.rs::<impl Shape for Circle>")
    assert impl["ra_signature"] == "" and impl["ra_hydrated_ts"] > 0 and impl["confidence"] == 0.6


@needs_ra
def test_definitions_become_ra_calls_edges_across_files_modules_and_crates(hydrated):
    _, pt, report = hydrated
    edges = ra_edges(pt)
    main = "fn:app/src/main.rs::main"
    assert {
        (main, "fn:shapes/src/area.rs::<impl Circle>::new"),    # another crate, qualified by type
        (main, "fn:shapes/src/area.rs::<impl Square>::new"),
        (main, "fn:shapes/src/lib.rs::inner::double"),          # an inline module of another crate
        (main, "fn:app/src/report.rs::print"),                  # another file of the same crate
        ("fn:shapes/src/lib.rs::inner::double", "fn:shapes/src/util.rs::twice"),  # crate:: path
        ("fn:shapes/src/area.rs::<impl Shape for Circle>::area", "fn:shapes/src/util.rs::twice"),  # via `use`
        ("fn:app/src/report.rs::print", "fn:shapes/src/util.rs::clamp"),
    } <= edges
    # The name heuristic cannot pick among three `area`s; rust-analyzer can (the trait method).
    assert (main, "fn:shapes/src/area.rs::Shape::area") in edges
    assert ("fn:shapes/src/area.rs::area_of", "fn:shapes/src/area.rs::Shape::area") in edges
    # A confirmed heuristic edge is now one 'ra' edge, weight 1.0, with its call site as evidence.
    row = pt.store.run("?[w, p, e] := *isg_edges{src_id: $s, dst_id: $d, kind: 'CALLS', weight: w, provenance: p, "
                       "evidence: e}", {"s": main, "d": "fn:app/src/report.rs::print"}).rows
    assert row == [[1.0, "ra", "app/src/main.rs:10"]]
    a = report.agreement
    assert (a["heuristic_edges"], a["confirmed"], a["contradicted"], a["unverified"], a["added"]) == (12, 11, 1, 0, 3)
    assert a["ra_edges"] == 14 and a["sites"] == a["sites_answered"] == 17


@needs_ra
def test_a_contradicted_heuristic_edge_does_not_survive(hydrated):
    _, pt, _ = hydrated
    scaled = "fn:shapes/src/area.rs::scaled"
    # `compute(c.r)` calls a local closure: the unique crate fn `util::compute` was a wrong guess.
    assert not [e for e in calls(pt) if e[0] == scaled]
    unresolved = pt.query("ingest.unresolved_calls", file=AREA)
    assert [r["caller_id"] for r in unresolved] == [scaled]


@needs_ra
def test_the_diagnostic_is_mapped_to_the_wrong_item(hydrated):
    _, pt, report = hydrated
    rows = pt.store.run("?[file, node, code, severity, span] := *diagnostics{file_path: file, node_id: node, code, "
                        "severity, span, source: 'ra'}").dicts()
    assert report.diagnostics == 1
    [d] = rows
    assert (d["file"], d["node"], d["code"], d["severity"]) == (
        AREA, "fn:shapes/src/area.rs::broken_sum", "mismatched-arg-count", "error")
    text = (FIXTURES / "hydrate_ws" / AREA).read_bytes()
    assert d["span"]["line"] == text[:text.index(b"crate::util::clamp(1, 2)")].count(b"\n") + 1


@needs_ra
def test_a_macro_rules_generated_fn_is_a_macro_interface_node(hydrated):
    _, pt, _ = hydrated
    n = node(pt, TRIPLE)
    assert (n["kind"], n["name"], n["parent_id"]) == ("macro_interface", "triple", "macro_call:shapes/src/util.rs::make_scaler")
    assert n["ra_signature"] == "pub fn triple(x: i32) -> i32" and n["ra_hydrated_ts"] > 0
    assert ("macro_call:shapes/src/util.rs::make_scaler", TRIPLE) in ra_edges(pt, "EXPANDS_TO")
    assert ("macro_call:shapes/src/util.rs::make_scaler", TRIPLE) in ra_edges(pt, "CONTAINS")
    [[code]] = pt.store.run("?[c] := *code_blobs{id: $id, code: c}", {"id": TRIPLE}).rows
    assert "pub fn triple(x: i32) -> i32" in code and "x * 3" in code
    # ... and the call `triple(total)` in the app crate resolves to it.
    assert ("fn:app/src/main.rs::main", TRIPLE) in ra_edges(pt)
    # It has no text of its own in util.rs: positions in the invocation still map to the invocation.
    text = (FIXTURES / "hydrate_ws" / UTIL).read_bytes()
    [at] = pt.query("ingest.node_at", file=UTIL, byte=text.index(b"triple"))
    assert at["id"] == "macro_call:shapes/src/util.rs::make_scaler"


@needs_ra
def test_nothing_left_to_hydrate_starts_no_analyzer(hydrated):
    ws, pt, _ = hydrated
    again = hydrate(ws, pt.store)
    assert again.files_pending == 0 and again.rust_analyzer == "" and again.agreement == {}


# -- the real binary, changes and failures ----------------------------------------


@needs_ra
def test_only_changed_files_are_rehydrated(tmp_path):
    ws = copy_ws(tmp_path / "ws")
    with open_pt(ws) as pt:
        ingest(ws, pt.store)
        hydrate(ws, pt.store)
        before = calls(pt)
        report_rs = ws / "app/src/report.rs"
        report_rs.write_text(report_rs.read_text().replace("clamp(x, 0, shapes::LIMIT)", "clamp(x, 1, shapes::LIMIT)"))
        ingest(ws, pt.store)
        # Re-ingesting the file dropped its 'ra' facts; the others keep theirs.
        assert ("fn:app/src/report.rs::print", "fn:shapes/src/util.rs::clamp", "heuristic") in calls(pt)
        assert [p["file_path"] for p in pt.query("hydrate.pending")] == ["app/src/report.rs"]
        report = hydrate(ws, pt.store)
        assert report.files_hydrated == 1 and report.agreement["confirmed"] == 1
        assert calls(pt) == before
        assert_consistent(pt)


@needs_ra
def test_a_file_changed_on_disk_since_ingest_is_skipped(tmp_path):
    ws = copy_ws(tmp_path / "ws")
    with open_pt(ws) as pt:
        ingest(ws, pt.store)
        (ws / UTIL).write_text((ws / UTIL).read_text() + "\npub fn later() {}\n")
        report = hydrate(ws, pt.store)
        assert report.files_hydrated == 5
        assert report.files_skipped == [[UTIL, "changed on disk since the last ingest (run `pt ingest`)"]]
        assert node(pt, f"file:{UTIL}")["ra_hydrated_ts"] == 0
        assert_consistent(pt)


@needs_ra
def test_killed_analyzer_is_restarted_once_and_hydration_completes(tmp_path):
    ws = copy_ws(tmp_path / "ws")
    with open_pt(ws) as pt, ra.RaSession(ws, BINARY, request_timeout=10, ready_timeout=60, max_restarts=1) as s:
        ingest(ws, pt.store)
        killed = []

        def after_file(path: str, done: int, total: int) -> None:
            if done == 1:
                killed.append(s.pid)
                kill_now(s.pid)

        report = hydrate(ws, pt.store, session=s, on_file=after_file)
        assert killed and s.pid != killed[0] and report.restarts == 1
        assert report.files_hydrated == 6 and report.ra_available and not report.warning
        assert ("fn:app/src/main.rs::main", TRIPLE) in ra_edges(pt)
        assert_consistent(pt)


@needs_ra
def test_analyzer_dying_mid_hydration_leaves_a_consistent_graph_and_pt_usable(tmp_path, pt, hydrated):
    ws = copy_ws(tmp_path / "ws")
    db = ws / ".parseltongue" / "graph.db"
    with open_pt(ws) as g:
        ingest(ws, g.store)
        heuristic = calls(g)
        # No restart allowed: the kill after the first file is final.
        with ra.RaSession(ws, BINARY, request_timeout=10, ready_timeout=60, max_restarts=0) as s:
            report = hydrate(ws, g.store, session=s, on_file=lambda path, done, total: done == 1 and kill_now(s.pid))
        assert not report.ra_available and "rust-analyzer" in report.warning and "\n" not in report.warning
        assert report.files_hydrated == 1 and len(report.files_deferred) == 5
        # The first file (util.rs: the macro invocation comes first) is fully hydrated, nothing else is.
        hydrated_files = {f for f, ts in g.store.run(
            "?[f, ts] := *isg_nodes{file_path: f, kind: 'file', ra_hydrated_ts: ts}").rows if ts > 0}
        assert hydrated_files == {UTIL}
        assert node(g, TRIPLE)["ra_hydrated_ts"] > 0
        assert_consistent(g)
        # Heuristic edges out of the files not hydrated are untouched.
        assert {e for e in calls(g) if f":{UTIL}::" not in e[0]} == {e for e in heuristic if f":{UTIL}::" not in e[0]}
    # pt is usable: queries work, and a second `pt hydrate` finishes the job.
    r = pt("-C", str(ws), "--db", str(db), "query", "counts", "--json")
    assert r.code == 0, r.err
    r = pt("-C", str(ws), "--db", str(db), "hydrate", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["files_pending"] == doc["files_hydrated"] == 5 and doc["warning"] == ""
    with open_pt(ws) as g:
        assert_consistent(g)
        # The same graph as one uninterrupted hydration.
        _, full, _ = hydrated
        assert calls(g) == calls(full)
        assert ra_edges(g, "EXPANDS_TO") == ra_edges(full, "EXPANDS_TO")


@needs_ra
def test_cli_ingest_hydrate_and_budget(tmp_path, pt):
    ws = copy_ws(tmp_path / "ws")
    db = str(ws / ".parseltongue" / "graph.db")
    r = pt("-C", str(ws), "--db", db, "ingest")
    assert r.code == 0, r.err
    r = pt("-C", str(ws), "--db", db, "hydrate", "--budget-s", "0.001", "--json")
    assert r.code == 0 and r.err.count("\n") == 1 and "budget" in r.err
    doc = r.json()
    assert doc["files_hydrated"] == 0 and len(doc["files_deferred"]) == 6
    r = pt("-C", str(ws), "--db", db, "ingest", "--hydrate", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["files_parsed"] == 0 and doc["hydrate"]["files_hydrated"] == 6
    assert doc["hydrate"]["agreement_shares"]["confirmed"] == round(11 / 12, 4)
    r = pt("-C", str(ws), "--db", db, "hydrate")
    assert r.code == 0 and "nothing to hydrate" in r.out


# -- no binary needed ----------------------------------------------------------------


def test_missing_analyzer_is_one_warning_and_the_graph_stays_heuristic(tmp_path, pt, monkeypatch):
    monkeypatch.setenv(ra.ENV_VAR, str(tmp_path / "no-such-rust-analyzer"))
    ws = copy_ws(tmp_path / "ws")
    db = str(ws / ".parseltongue" / "graph.db")
    r = pt("-C", str(ws), "--db", db, "ingest", "--hydrate")
    assert r.code == 0
    [warning] = r.err.splitlines()
    assert warning.startswith("pt: warning: rust-analyzer not found") and "heuristic" in warning
    r = pt("-C", str(ws), "--db", db, "hydrate", "--json")
    assert r.code == 0 and r.json()["ra_available"] is False and len(r.json()["files_deferred"]) == 6
    with open_pt(ws) as g:
        assert ra_edges(g) == set() and {p for _, _, p in calls(g)} == {"heuristic"}
        assert len(g.query("hydrate.pending")) == 6
        assert_consistent(g)
