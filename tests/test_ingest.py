"""The ingest flow end to end on real files, real cargo metadata and real tree-sitter."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from parseltongue.adapters.store import open_store
from parseltongue.runner.api import Pt
from parseltongue.runner.ingest import ingest
from parseltongue.runner.watch import stale_files, watch_workspace

from conftest import FIXTURES


@pytest.fixture
def geo_ws(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    return ws


@pytest.fixture(params=["mem", "sqlite"])
def store(request, tmp_path):
    s = open_store("mem" if request.param == "mem" else str(tmp_path / "graph.db"))
    yield s
    s.close()


def edges(store, kind=None):
    rows = store.run("?[s, d, k] := *isg_edges{src_id: s, dst_id: d, kind: k}").rows
    return {(s, d, k) for s, d, k in rows if kind is None or k == kind}


def node_ids(store, file_path=None):
    rows = store.run("?[id, f] := *isg_nodes{id, file_path: f}").rows
    return {i for i, f in rows if file_path is None or f == file_path}


def test_cold_ingest_builds_nodes_and_resolved_edges(geo_ws, store):
    r = ingest(geo_ws, store)
    assert r.files_total == 6 and r.files_parsed == 6 and r.files_skipped == []
    calls = edges(store, "CALLS")
    assert ("fn:app/src/main.rs::main", "fn:geo/src/shapes/mod.rs::<impl Square>::new", "CALLS") in calls  # via alias Sq
    assert ("fn:geo/src/shapes/mod.rs::<impl Square>::doubled", "fn:geo/src/shapes/mod.rs::<impl Square>::new",
            "CALLS") in calls  # Self::new
    assert ("impl:geo/src/shapes/circle.rs::<impl Area for Circle>", "trait:geo/src/lib.rs::Area",
            "IMPLEMENTS") in edges(store)
    assert ("fn:geo/src/lib.rs::fancy_total", "feature:geo/fancy", "FEATURE_GATED_BY") in edges(store)
    row = store.run("?[m, t, c] := *isg_nodes{id: 'fn:geo/src/shapes/circle.rs::tests::unit_circle', "
                    "module_path: m, tdd_classification: t, confidence: c}").rows
    assert row == [["geo::shapes::circle::tests", "TEST_IMPLEMENTATION", 0.6]]
    smoke = store.run("?[t] := *isg_nodes{id: 'fn:app/tests/smoke.rs::squares_add_up', tdd_classification: t}").rows
    assert smoke == [["TEST_IMPLEMENTATION"]]


def test_no_change_reingest_touches_nothing(geo_ws, store):
    ingest(geo_ws, store)
    before_nodes, before_edges = node_ids(store), edges(store)
    r = ingest(geo_ws, store)
    assert r.files_parsed == 0 and r.files_unchanged == 6 and r.files_removed == 0
    assert node_ids(store) == before_nodes and edges(store) == before_edges


def test_touched_file_is_hashed_not_reparsed(geo_ws, store):
    ingest(geo_ws, store)
    p = geo_ws / "geo/src/units.rs"
    p.write_bytes(p.read_bytes())  # same content, new mtime
    r = ingest(geo_ws, store)
    assert r.files_parsed == 0
    assert sum(map(len, stale_files(Pt(geo_ws, store)).values())) == 0


def test_body_edit_reparses_one_file_and_keeps_ids_and_incoming_edges(geo_ws, store):
    ingest(geo_ws, store)
    ids_before = node_ids(store)
    p = geo_ws / "geo/src/shapes/mod.rs"
    p.write_text("// a comment\n// pushing every line down\n\n" + p.read_text())
    r = ingest(geo_ws, store)
    assert r.files_parsed == 1 and r.files_resolved == 1  # same names: nobody else re-resolved
    assert node_ids(store) == ids_before  # ids do not depend on lines
    assert ("fn:app/src/main.rs::main", "fn:geo/src/shapes/mod.rs::<impl Square>::new", "CALLS") in edges(store)
    line = store.run("?[l] := *node_pos{id: 'fn:geo/src/shapes/mod.rs::<impl Square>::new', line_start: l}").rows
    assert line == [[13]]


def test_an_edit_that_only_moves_items_rewrites_none_of_their_isg_nodes_rows(geo_ws, store):
    """Lines added above items move them; their isg_nodes rows (and so their four index rows)
    stay as they are - only their node_pos rows change (schema rev 13)."""
    ingest(geo_ws, store)
    f = "geo/src/shapes/mod.rs"
    before = dict(store.run(f"?[id, l] := *isg_nodes:by_file{{file_path: '{f}', id}}, *node_pos{{id, line_start: l}}").rows)
    # a Cozo trigger logs every row put into or removed from isg_nodes from here on
    arity = len(store.relations()["isg_nodes"])
    row = ", ".join(["id"] + ["_"] * (arity - 1))
    store.run("{:create moved_log {id: String, op: String}}")
    store.run(f"::set_triggers isg_nodes on put {{ ?[id, op] := _new[{row}], op = 'put' :put moved_log {{id, op}} }} "
              f"on rm {{ ?[id, op] := _old[{row}], op = 'rm' :put moved_log {{id, op}} }}")
    p = geo_ws / f
    p.write_text("// two lines\n// above everything\n" + p.read_text())
    ingest(geo_ws, store)
    moved = {i for i in before if not i.startswith("file:")}
    after = dict(store.run(f"?[id, l] := *isg_nodes:by_file{{file_path: '{f}', id}}, *node_pos{{id, line_start: l}}").rows)
    assert len(moved) > 3 and all(after[i] == before[i] + 2 for i in moved)
    written = {i for i, _ in store.run("?[id, op] := *moved_log{id, op}").rows} & set(before)
    assert written == {f"file:{f}"}  # of this file's nodes only the file node, whose text (hash) changed

def edge_rows(store):
    return sorted(map(tuple, store.run("?[s, d, k, w, p, e] := *isg_edges{src_id: s, dst_id: d, kind: k, "
                                       "weight: w, provenance: p, evidence: e}").rows))


@pytest.mark.parametrize("edit", [
    # a body edit on the same line: only that fn (and its enclosing items) is re-resolved
    lambda t: t.replace("fn main() {", "fn main() { let _pt = 1;"),
    # a new line at the top moves every node's lines: all of the file, evidence lines included
    lambda t: "// moved\n" + t,
    # a new call in a body, to a name resolved elsewhere
    lambda t: t.replace("fn main() {", "fn main() {\n    let _ = geo::total(&[]);"),
    # a new fn: a name comes, so the file is re-resolved whole
    lambda t: t.replace("fn main() {", "fn helper_gone() {}\nfn main() {"),
])
def test_incremental_edit_gives_the_graph_of_a_cold_ingest(geo_ws, store, tmp_path, edit):
    """Re-resolving only the changed nodes of an edited file leaves exactly the edges (weights,
    evidence lines) that ingesting the edited tree from scratch gives."""
    ingest(geo_ws, store)
    main = geo_ws / "app/src/main.rs"
    main.write_text(edit(main.read_text()))
    ingest(geo_ws, store, paths=["app/src/main.rs"])
    cold = open_store("mem")
    try:
        ingest(geo_ws, cold)
        assert edge_rows(store) == edge_rows(cold)
    finally:
        cold.close()


def test_lines_added_above_an_item_leave_its_edge_rows_as_they_are(geo_ws, store):
    """A heuristic CALLS edge's evidence is its first call site relative to the caller (`+N`
    lines below its line_start): an item that only moved keeps every edge row as it was (before,
    each one was rewritten with its file:line shifted), and the line it names is still the call's."""
    ingest(geo_ws, store)
    main = geo_ws / "app/src/main.rs"
    out_of_main = "?[d, k, w, p, e] := *isg_edges{src_id: 'fn:app/src/main.rs::main', dst_id: d, kind: k, " \
                  "weight: w, provenance: p, evidence: e}"
    before = store.run(out_of_main).rows
    main.write_text("// moved\n// twice\n" + main.read_text())
    ingest(geo_ws, store, paths=["app/src/main.rs"])
    assert store.run(out_of_main).rows == before
    [[first]] = store.run("?[l] := *node_pos{id: 'fn:app/src/main.rs::main', line_start: l}").rows
    lines = main.read_text().splitlines()
    calls = {d: e for d, k, w, p, e in before if k == "CALLS"}
    assert calls["fn:app/src/main.rs::report"] == "+3"
    for dst, ev in calls.items():
        assert dst.rsplit("::", 1)[1] in lines[first - 1 + int(ev)], (dst, ev)


def test_new_file_re_resolves_the_callers_of_its_names(geo_ws, store):
    main = geo_ws / "app/src/main.rs"
    main.write_text(main.read_text().replace("fn main() {", "fn main() {\n    brand_new_helper();"))
    ingest(geo_ws, store)
    (geo_ws / "app/src/helpers.rs").write_text("pub fn brand_new_helper() {}\n")
    r = ingest(geo_ws, store, paths=["app/src/helpers.rs"])
    assert r.files_resolved == 2  # helpers.rs and main.rs, which calls the new name
    cold = open_store("mem")
    try:
        ingest(geo_ws, cold)
        assert edge_rows(store) == edge_rows(cold)
        assert ("fn:app/src/main.rs::main", "fn:app/src/helpers.rs::brand_new_helper", "CALLS") in edges(store)
    finally:
        cold.close()


def test_deleted_file_disappears_with_its_edges(geo_ws, store):
    ingest(geo_ws, store)
    (geo_ws / "geo/src/units.rs").unlink()
    r = ingest(geo_ws, store)
    assert r.files_removed == 1
    assert node_ids(store, "geo/src/units.rs") == set()
    assert not any("units.rs" in s or "units.rs" in d for s, d, _ in edges(store))
    assert store.run("?[c] := *raw_calls{file_path: 'geo/src/units.rs', caller_id: c}").rows == []


def test_renamed_file_moves_its_facts(geo_ws, store):
    ingest(geo_ws, store)
    (geo_ws / "app/tests/smoke.rs").rename(geo_ws / "app/tests/smoke2.rs")
    ingest(geo_ws, store)
    assert node_ids(store, "app/tests/smoke.rs") == set()
    assert "fn:app/tests/smoke2.rs::squares_add_up" in node_ids(store)
    assert ("fn:app/tests/smoke2.rs::squares_add_up", "fn:geo/src/lib.rs::total", "CALLS") in edges(store)


def test_new_name_re_resolves_callers_in_other_files(geo_ws, store):
    ingest(geo_ws, store)
    main = geo_ws / "app/src/main.rs"
    main.write_text(main.read_text().replace("fn main() {", "fn main() {\n    let _ = geo::units::half(2.0);"))
    ingest(geo_ws, store)
    assert not any(d.endswith("::half") for _, d, _ in edges(store, "CALLS"))  # unresolved, kept as a fact
    assert store.run("?[n] := *raw_calls{file_path: 'app/src/main.rs', callee_name: n}, n = 'half'").rows == [["half"]]
    units = geo_ws / "geo/src/units.rs"
    units.write_text(units.read_text() + "\npub fn half(x: f64) -> f64 {\n    x / 2.0\n}\n")
    r = ingest(geo_ws, store, paths=["geo/src/units.rs"])
    assert r.files_parsed == 1 and r.files_resolved == 2  # units.rs and main.rs, which calls `half`
    assert ("fn:app/src/main.rs::main", "fn:geo/src/units.rs::half", "CALLS") in edges(store)


def test_gitignore_and_target_are_skipped_and_stray_files_marked(geo_ws, store):
    (geo_ws / ".gitignore").write_text("generated/\n")
    (geo_ws / "geo/generated").mkdir()
    (geo_ws / "geo/generated/big.rs").write_text("fn ignored() {}\n")
    (geo_ws / "target/debug").mkdir(parents=True)
    (geo_ws / "target/debug/build.rs").write_text("fn built() {}\n")
    (geo_ws / "geo/scratch.rs").write_text("fn stray() {}\n")  # not under any target: still ingested
    ingest(geo_ws, store)
    files = {f for f, in store.run("?[f] := *file_state{file_path: f}").rows}
    assert "geo/scratch.rs" in files
    assert not any(f.startswith(("geo/generated", "target/")) for f in files)
    marked = store.run("?[t] := *file_crate{file_path: 'geo/scratch.rs', in_target: t}").rows
    assert marked == [[False]]


def test_non_utf8_and_binary_files_are_reported_not_fatal(geo_ws, store):
    (geo_ws / "geo/src/latin1.rs").write_bytes(b"// caf\xe9\nfn f() {}\n")
    (geo_ws / "geo/src/blob.rs").write_bytes(b"\x00\x01\x02")
    r = ingest(geo_ws, store)
    skipped = dict(r.files_skipped)
    assert set(skipped) == {"geo/src/latin1.rs", "geo/src/blob.rs"}
    assert "UTF-8" in skipped["geo/src/latin1.rs"] and "binary" in skipped["geo/src/blob.rs"]
    assert len(node_ids(store, "geo/src/shapes/circle.rs")) > 3


def test_broken_file_keeps_its_intact_items(geo_ws, store):
    p = geo_ws / "geo/src/shapes/mod.rs"
    p.write_text(p.read_text().replace("pub fn doubled(&self) -> Self {", "pub fn doubled(&self) -> Self {{ let ("))
    ingest(geo_ws, store)
    ids = node_ids(store, "geo/src/shapes/mod.rs")
    assert "struct:geo/src/shapes/mod.rs::Square" in ids
    pec = store.run("?[n] := *file_state{file_path: 'geo/src/shapes/mod.rs', parse_error_count: n}").rows[0][0]
    assert pec > 0


def test_not_a_cargo_workspace(pt, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/lib.rs").write_text("pub fn a() { b() }\nfn b() {}\n")
    r = pt("-C", str(tmp_path), "ingest")
    assert r.code == 2 and "not a cargo workspace" in r.err and "--no-cargo" in r.err
    r = pt("-C", str(tmp_path), "ingest", "--no-cargo", "--json")
    assert r.code == 0, r.err
    assert r.json()["files_parsed"] == 1 and r.json()["edges"] >= 1


def test_cli_ingest_json_and_status_staleness(pt, geo_ws):
    r = pt("-C", str(geo_ws), "ingest", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["files_total"] == 6 and doc["nodes"] > 30 and doc["edges"] > 30
    (geo_ws / "geo/src/units.rs").write_text("pub fn scale(x: f64) -> f64 { x }\n")
    st = pt("-C", str(geo_ws), "status", "--json").json()
    assert st["stale_files"] == {"new": 0, "changed": 1, "deleted": 0}


def test_failed_replace_leaves_the_file_untouched(geo_ws, tmp_path):
    store = open_store(str(tmp_path / "g.db"))
    ingest(geo_ws, store)
    before = node_ids(store, "geo/src/units.rs")
    pt = Pt(geo_ws, store)
    with pytest.raises(Exception):
        # a malformed node row: the remove blocks ran first in the same transaction, and roll back
        pt.run("ingest.replace_files", {"files": ["geo/src/units.rs"], "nodes": [["only-an-id"]]})
    assert node_ids(store, "geo/src/units.rs") == before


def test_watch_picks_up_an_atomic_rename_save(geo_ws, tmp_path):
    store = open_store(str(tmp_path / "w.db"))
    pt = Pt(geo_ws, store)
    th = threading.Thread(target=watch_workspace, args=(pt,), kwargs={"debounce": 0.1, "interval": 0.1, "max_cycles": 40})
    th.start()
    time.sleep(1.0)
    target = geo_ws / "geo/src/units.rs"
    tmp = target.with_name(".units.rs.swp")
    tmp.write_text(target.read_text() + "\npub fn triple(x: f64) -> f64 { x * 3.0 }\n")
    tmp.replace(target)  # how editors save
    th.join(timeout=30)
    assert "fn:geo/src/units.rs::triple" in node_ids(store)


def test_sites_answered_by_rust_analyzer_get_no_heuristic_edge(geo_ws, store):
    # Hydration found main.rs:13 calls something else than the heuristic guess; re-resolving the
    # (unchanged) caller must not bring the guessed edge back.
    ingest(geo_ws, store)
    guess = ("fn:app/src/main.rs::main", "fn:geo/src/shapes/mod.rs::<impl Square>::new", "CALLS")
    assert guess in edges(store)
    store.run("?[src_id, dst_id, kind, provenance, evidence, weight] <- [['fn:app/src/main.rs::main', "
              "'fn:geo/src/lib.rs::total', 'CALLS', 'ra', 'app/src/main.rs:13', 1.0]] "
              ":put isg_edges {src_id, dst_id, kind => provenance, evidence, weight}")
    store.run("?[src_id, dst_id, kind] <- [[$s, $d, $k]] :rm isg_edges {src_id, dst_id, kind}",
              {"s": guess[0], "d": guess[1], "k": guess[2]})
    Pt(geo_ws, store).run("ingest.resolve_edges", {"files": ["app/src/main.rs"]})
    assert guess not in edges(store)
    assert ("fn:app/src/main.rs::main", "fn:geo/src/lib.rs::total", "CALLS") in edges(store)


def fact_rows(store):
    """Every fact an ingest writes, relation by relation (file_state without its ingest time)."""
    scripts = {
        "isg_nodes": "?[id, f, c, m, k, n, p, l, s, se, ra, v, g, cfg, pe, conf, h, t, rh, sr] := "
                     "*isg_nodes{id, file_path: f, crate: c, module_path: m, kind: k, name: n, parent_id: p, "
                     "isgl_level: l, signature_ts: s, signature_exact: se, ra_signature: ra, visibility: v, "
                     "generics: g, cfg, parse_error_count: pe, confidence: conf, hash: h, tdd_classification: t, "
                     "ra_hydrated_ts: rh, schema_rev: sr}",
        "node_pos": "?[id, ss, se, ls, le] := *node_pos{id, span_start: ss, span_end: se, line_start: ls, line_end: le}",
        "code_blobs": "?[id, c, r] := *code_blobs{id, code: c, recovered: r}",
        "node_meta": "?[id, f, i, w, fe, t, d] := *node_meta{id, file_path: f, item_path: i, where_clause: w, "
                     "features: fe, is_test: t, doc: d}",
        "raw_calls": "?[f, c, s, p, n, q, k, e, l] := *raw_calls{file_path: f, caller_id: c, rel_start: s, "
                     "callee_path: p, callee_name: n, callee_qual: q, call_kind: k, rel_end: e, rel_line: l}",
        "raw_uses": "?[f, p, n, a] := *raw_uses{file_path: f, path: p, name: n, alias: a}",
        "raw_type_refs": "?[f, i, p, n] := *raw_type_refs{file_path: f, item_id: i, type_path: p, type_name: n}",
        "raw_impls": "?[f, i, a, b, d] := *raw_impls{file_path: f, impl_id: i, trait_path: a, trait_name: b, "
                     "self_name: d}",
        "raw_bounds": "?[f, i, p, t, n] := *raw_bounds{file_path: f, item_id: i, param: p, trait_path: t, trait_name: n}",
        "file_state": "?[f, h, s, m, e] := *file_state{file_path: f, hash: h, size: s, mtime: m, parse_error_count: e}",
        "file_crate": "?[f, c, t, r, d] := *file_crate{file_path: f, crate: c, in_target: t, root_dir: r, is_test_dir: d}",
        "search_text": "?[f, id, k, i, c, h] := *search_text{file_path: f, id, kind: k, iface: i, code_terms: c, hash: h}",
    }
    out = {name: sorted(map(repr, store.run(s).rows)) for name, s in scripts.items()}
    out["isg_edges"] = edge_rows(store)
    return out


def same_as_cold(ws, store):
    """Every fact in `store` is what a cold ingest of the tree as it is now gives."""
    cold = open_store("mem")
    try:
        ingest(ws, cold)
        got, want = fact_rows(store), fact_rows(cold)
        for rel in want:
            assert got[rel] == want[rel], rel
    finally:
        cold.close()


@pytest.mark.parametrize("edit, report_same", [
    # bytes inserted on a line: the spans (and call-site keys) of every later node shift
    (lambda t: t.replace("fn report(label: &str, value: f64) -> String {",
                         "fn report(label: &str, value: f64) -> String { let _pt = 1;"), False),
    # a fn removed, one renamed: rows and edges of nodes that go are removed, not left behind
    (lambda t: t.replace("fn round2(v: f64) -> f64 {\n    (v * 100.0).round() / 100.0\n}\n", "")
                .replace("round2(value)", "value").replace("fn main()", "fn main2()"), False),
    # text appended after the last item: no node but the file's changes
    (lambda t: t + "\n// the end\n", True),
    # a call added and a `use` dropped (every line moves)
    (lambda t: t.replace("use geo::shapes::Square as Sq;\n", "")
                .replace("Sq::new(1.0), Sq::new(2.0)", "geo::shapes::Square::new(1.0)"), False),
    # a line added above main: main's text is the same, its call edges keep their targets and
    # their file:line evidence moves one line down (shifted, not re-derived)
    (lambda t: t.replace("fn main() {", "// the entry point\nfn main() {"), True),
    # a line added above report, which has a rust-analyzer edge: that edge goes with its old
    # lines and report is re-resolved; round2 and main only move
    (lambda t: t.replace("fn report(", "// formatting\nfn report("), False),
])
def test_incremental_edit_writes_the_facts_of_a_cold_ingest(geo_ws, store, edit, report_same):
    """ingest.replace_files and ingest.resolve_edges write an edit as a difference (rows already
    stored are left alone) inside one transaction; every relation must still end up as a cold
    ingest of the edited tree leaves it - including the columns hydration fills, which a
    rewritten node loses, and the edges rust-analyzer gave a node whose text changed (a node
    whose text and lines did not change keeps them)."""
    ingest(geo_ws, store)
    ra = ("fn:app/src/main.rs::report", "fn:geo/src/lib.rs::total", "CALLS")
    store.run("?[id, ra_signature] <- [['fn:app/src/main.rs::report', 'fn report(..)'], "
              "['fn:app/src/main.rs::main', 'fn main()']] "
              ":update isg_nodes {id => ra_signature}")
    # (hydrate.write_files stamps every node of a file it hydrated, the file node included)
    store.run("?[id, ra_hydrated_ts] := *isg_nodes:by_file{file_path: 'app/src/main.rs', id}, ra_hydrated_ts = 1.0 "
              ":update isg_nodes {id => ra_hydrated_ts}")
    store.run("?[src_id, dst_id, kind, provenance, evidence, weight] <- [['fn:app/src/main.rs::report', "
              "'fn:geo/src/lib.rs::total', 'CALLS', 'ra', 'app/src/main.rs:5', 1.0]] "
              ":put isg_edges {src_id, dst_id, kind => provenance, evidence, weight}")
    main = geo_ws / "app/src/main.rs"
    main.write_text(edit(main.read_text()))
    report = ingest(geo_ws, store, paths=["app/src/main.rs"])
    assert report.files_parsed == 1
    assert (ra in edges(store)) == report_same
    store.run("?[src_id, dst_id, kind] <- [[$s, $d, $k]] :rm isg_edges {src_id, dst_id, kind}",
              {"s": ra[0], "d": ra[1], "k": ra[2]})
    same_as_cold(geo_ws, store)


def test_cold_ingest_in_parallel_batches_gives_the_same_graph(geo_ws, store, monkeypatch):
    """A cold ingest of more files than one resolve batch derives the batches' edges on several
    threads (ingest.derive_edges) and writes them in waves (ingest.put_edges), hub tables at the
    end: every relation must equal a small ingest's, which resolves in one writing script."""
    import parseltongue.runner.ingest as ingest_mod

    want, want_hubs = cold_graph(geo_ws)
    monkeypatch.setattr(ingest_mod, "RESOLVE_BATCH_FILES", 1)  # 6 files: bulk, 6 batches,
    monkeypatch.setattr(ingest_mod, "DERIVE_WAVE_PER_JOB", 1)  # 3 waves of 2 on 2 threads
    calls = []
    real = ingest_mod._derive_in_parallel
    monkeypatch.setattr(ingest_mod, "_derive_in_parallel", lambda *a: calls.append(len(a[1])) or real(*a))
    ingest(geo_ws, store, jobs=2)
    assert calls == [6]
    got = fact_rows(store)
    for rel in want:
        assert got[rel] == want[rel], rel
    assert hub_rows(store) == want_hubs


def test_a_fwd_hub_loses_its_mark_when_its_calls_drop(geo_ws, store):
    """node_hubs for out-degrees is recounted for the re-derived nodes: a fn that called 70
    distinct fns is a fwd CALLS hub (more than 64); after an edit leaves it 3 calls the mark is
    gone, as a cold ingest of the edited tree has it."""
    lib = geo_ws / "geo/src/lib.rs"
    helpers = "".join(f"pub fn helper_{i}() {{}}\n" for i in range(70))
    calls = "".join(f"    helper_{i}();\n" for i in range(70))
    lib.write_text(lib.read_text() + helpers + "pub fn fan_out() {\n" + calls + "}\n")
    ingest(geo_ws, store)
    hubs = "?[i, d, k, n] := *node_hubs{id: i, dir: d, kind: k, n}"
    assert ["fn:geo/src/lib.rs::fan_out", "fwd", "CALLS", 70] in store.run(hubs).rows
    lib.write_text(lib.read_text().replace(calls, "".join(f"    helper_{i}();\n" for i in range(3))))
    ingest(geo_ws, store, paths=["geo/src/lib.rs"])
    cold = open_store("mem")
    try:
        ingest(geo_ws, cold)
        assert store.run(hubs).rows == cold.run(hubs).rows
        assert not [r for r in store.run(hubs).rows if r[0] == "fn:geo/src/lib.rs::fan_out"]
    finally:
        cold.close()


def test_seed_ingest_of_a_cold_graph_takes_the_seed_crate_and_its_deps_first(geo_ws, store, monkeypatch):
    """`pt run fix` on a workspace with no graph ingests only the seed's crate and the members it
    depends on; the next full ingest adds the rest (its new files' edges derived in parallel
    batches, the stored files re-resolved for the names that arrive) and the graph is then the
    one a cold ingest of the whole workspace gives. Here app's `.doubled()` is unique among app
    and geo (an edge of the scoped graph) but not once `extra` arrives (no edge in a cold one)."""
    import parseltongue.runner.ingest as ingest_mod

    (geo_ws / "Cargo.toml").write_text((geo_ws / "Cargo.toml").read_text().replace('"app"]', '"app", "extra"]'))
    (geo_ws / "extra/src").mkdir(parents=True)
    (geo_ws / "extra/Cargo.toml").write_text('[package]\nname = "extra"\nversion = "0.1.0"\nedition = "2021"\n')
    (geo_ws / "extra/src/lib.rs").write_text("pub struct X;\nimpl X {\n    pub fn doubled(&self) -> Self { X }\n}\n")
    main = geo_ws / "app/src/main.rs"
    main.write_text(main.read_text().replace("fn main() {", "fn main() {\n    let _d = Sq::new(1.0).doubled();"))
    want, want_hubs = cold_graph(geo_ws)
    doubled = ("fn:app/src/main.rs::main", "fn:geo/src/shapes/mod.rs::<impl Square>::doubled", "CALLS")
    assert doubled not in {e[:3] for e in want["isg_edges"]}
    r = ingest_mod.ingest_for_seed(geo_ws, store, "app/src/main.rs")
    assert r.scoped == ["app", "geo"] and r.files_total == 6 and r.files_parsed == 6
    assert doubled in edges(store)  # unique among the crates ingested so far
    assert ingest_mod.crate_scope(ingest_mod.discover(geo_ws, True), "geo/src/lib.rs") == ["geo"]
    monkeypatch.setattr(ingest_mod, "RESOLVE_BATCH_FILES", 1)  # the rest: a bulk update with new files
    calls = []
    real = ingest_mod._derive_in_parallel
    monkeypatch.setattr(ingest_mod, "_derive_in_parallel", lambda *a: calls.append(sorted(f for b in a[1] for f in b))
                        or real(*a))
    r = ingest_mod.ingest_for_seed(geo_ws, store, "app/src/main.rs")  # not cold: everything
    assert r.files_parsed == 1 and r.files_unchanged == 6 and not r.scoped
    assert calls == [["extra/src/lib.rs"]]  # only the file new to the graph; app/src/main.rs is re-resolved
    got = fact_rows(store)
    for rel in want:
        assert got[rel] == want[rel], rel
    assert hub_rows(store) == want_hubs


def test_a_file_added_to_an_ingested_workspace_re_resolves_its_callers(geo_ws, store):
    """A full ingest that finds only new files is not a cold one when the graph holds files: the
    callers of the names the new file defines are re-resolved (app's `.doubled()` was unique,
    then `extra` defines another), as a cold ingest of the tree has them."""
    main = geo_ws / "app/src/main.rs"
    main.write_text(main.read_text().replace("fn main() {", "fn main() {\n    let _d = Sq::new(1.0).doubled();"))
    ingest(geo_ws, store)
    doubled = ("fn:app/src/main.rs::main", "fn:geo/src/shapes/mod.rs::<impl Square>::doubled", "CALLS")
    assert doubled in edges(store)
    (geo_ws / "geo/src/extra.rs").write_text("pub struct X;\nimpl X {\n    pub fn doubled(&self) -> Self { X }\n}\n")
    r = ingest(geo_ws, store)
    assert r.files_parsed == 1
    assert doubled not in edges(store)

def hub_rows(store) -> list:
    return store.run("?[i, d, k, n] := *node_hubs{id: i, dir: d, kind: k, n}").rows


def cold_graph(ws: Path) -> tuple[dict, list]:
    """Every fact relation and the hub table of a one-shot ingest of `ws` into a fresh store."""
    store = open_store("mem")
    try:
        ingest(ws, store)
        return fact_rows(store), hub_rows(store)
    finally:
        store.close()


def test_parsing_stays_a_bounded_distance_ahead_of_the_writer(tmp_path, monkeypatch):
    """The parse pool runs ahead of the (slower) writer by at most PARSE_AHEAD_FILES files: the
    parsed facts of a whole workspace must not pile up in memory waiting to be written. Files are
    yielded in order, each once."""
    from parseltongue.runner import ingest as ingest_mod

    for i in range(120):
        (tmp_path / f"f{i:03}.rs").write_text(f"fn f{i}() {{}}\n")
    marks = tmp_path / "parsed"
    marks.mkdir()
    real = ingest_mod._parse_one

    def counted(args):  # runs in the pool's (forked) workers: counts by leaving a file behind
        (marks / Path(args[1]).stem).touch()
        return real(args)

    monkeypatch.setattr(ingest_mod, "_parse_one", counted)
    monkeypatch.setattr(ingest_mod, "PARSE_CHUNK_FILES", 4)
    monkeypatch.setattr(ingest_mod, "PARSE_AHEAD_FILES", 16)
    files = sorted(p.name for p in tmp_path.glob("*.rs"))
    seen = []
    for res in ingest_mod._parse_iter(tmp_path, files, 2):
        seen.append(res[0])
        time.sleep(0.005)  # a slow writer
        assert len(list(marks.iterdir())) <= len(seen) + 16 + 4
    assert seen == files


def test_every_edge_leaves_a_node_of_the_graph(tmp_path):
    """A file no module path is found for (here tests/common/mod.rs with autotests off: no target,
    in a package whose build script makes the crate root a target directory) gets no nodes; then
    its call sites must not give edges either: an edge out of a node the graph lacks."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "tests" / "common").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\nbuild = "build.rs"\nautotests = false\n')
    (ws / "build.rs").write_text("fn main() {}\n")
    (ws / "src" / "lib.rs").write_text("pub fn parse_header() -> u32 { 1 }\n")
    (ws / "tests" / "common" / "mod.rs").write_text("pub fn helper() -> u32 { demo::parse_header() + checked() }\n"
                                                    "fn checked() -> u32 { 2 }\n")
    (ws / "tests" / "smoke.rs").write_text("mod common;\n#[test]\nfn smoke() { assert_eq!(common::helper(), 3); }\n")
    store = open_store("mem")
    try:
        ingest(ws, store)
        dangling = store.run("?[s, d, k] := *isg_edges{src_id: s, dst_id: d, kind: k}, not *isg_nodes{id: s}").rows
        assert dangling == []
        assert store.run("?[id] := *node_pos{id}, not *isg_nodes{id}").rows == []
    finally:
        store.close()


def full_count(store) -> tuple[int, int]:
    size = {r["what"]: r["n"] for r in Pt(Path("."), store).query("ingest.graph_size")}
    return size["nodes"], size["edges"]


def kept_count(store) -> tuple[int, int] | None:
    size = {r["what"]: r["n"] for r in Pt(Path("."), store).query("ingest.kept_graph_size")}
    return (size["nodes"], size["edges"]) if size else None


def test_report_counts_are_the_graphs_after_every_kind_of_ingest(geo_ws, store):
    # A full ingest reports counts kept from the last count when nothing wrote nodes or edges
    # since (every writer drops them): after each step they are what a full count says.
    steps = [
        ("cold", lambda: None),
        ("no change", lambda: None),
        ("one file", lambda: (geo_ws / "geo/src/units.rs").write_text(
            (geo_ws / "geo/src/units.rs").read_text() + "\npub fn quarter(x: f64) -> f64 { half(half(x)) }\n")),
        ("removal", lambda: (geo_ws / "app/tests/smoke.rs").unlink()),
        ("new file", lambda: (geo_ws / "geo/src/extra.rs").write_text("pub fn extra() -> u8 { 1 }\n")),
        ("no change again", lambda: None),
    ]
    for name, change in steps:
        change()
        r = ingest(geo_ws, store)
        assert (r.nodes, r.edges) == full_count(store), name
        assert kept_count(store) == full_count(store), name


def test_a_few_file_update_drops_the_kept_counts(geo_ws, store):
    # `ingest(paths=...)` (pt watch, pt run fix) does not count; the counts kept before it are
    # dropped by its writes, so the next full ingest counts again instead of reporting them.
    ingest(geo_ws, store)
    before = kept_count(store)
    p = geo_ws / "geo/src/units.rs"
    p.write_text(p.read_text() + "\npub fn quarter(x: f64) -> f64 { half(half(x)) }\n")
    ingest(geo_ws, store, paths=["geo/src/units.rs"])
    assert kept_count(store) is None
    r = ingest(geo_ws, store)
    assert (r.nodes, r.edges) == full_count(store) != before


def test_a_no_change_ingest_writes_nothing(geo_ws, store, monkeypatch):
    # Not even the workspace's crate rows (ingest.set_workspace) when cargo gives the same
    # layout: any write would drop the kept counts, and a no-change ingest would count again.
    ingest(geo_ws, store)
    ran = []
    real = Pt.run
    monkeypatch.setattr(Pt, "run", lambda self, name, *a, **k: ran.append(self.registry.get(name)) or real(self, name, *a, **k))
    r = ingest(geo_ws, store)
    assert r.files_parsed == 0
    assert [p.id for p in ran if not p.read_only] == []
    assert kept_count(store) == full_count(store) == (r.nodes, r.edges)


def test_a_changed_manifest_is_written_though_no_rs_file_changed(geo_ws, store):
    # The workspace layout is compared with what is stored on every full ingest: a feature
    # added, a dependency dropped, a new member crate all reach the graph.
    ingest(geo_ws, store)
    geo = geo_ws / "geo/Cargo.toml"
    geo.write_text(geo.read_text().replace("fancy = []", "fancy = []\nsimd = []"))
    r = ingest(geo_ws, store)
    assert "feature:geo/simd" in node_ids(store)
    assert ("feature:geo/simd", "crate:geo", "CONTAINS") in edges(store)
    assert (r.nodes, r.edges) == full_count(store)
    app = geo_ws / "app/Cargo.toml"
    app.write_text(app.read_text().replace('geo = { path = "../geo" }', ""))
    ingest(geo_ws, store)
    assert ("crate:app", "crate:geo", "DEPENDS") not in edges(store)
    (geo_ws / "util/src").mkdir(parents=True)
    (geo_ws / "util/Cargo.toml").write_text('[package]\nname = "util"\nversion = "0.1.0"\nedition = "2021"\n')
    (geo_ws / "util/src/lib.rs").write_text("pub fn one() -> u8 { 1 }\n")
    root = geo_ws / "Cargo.toml"
    root.write_text(root.read_text().replace('members = ["geo", "app"]', 'members = ["geo", "app", "util"]'))
    r = ingest(geo_ws, store)
    assert {"crate:util", "fn:util/src/lib.rs::one"} <= node_ids(store)
    assert (r.nodes, r.edges) == full_count(store)
