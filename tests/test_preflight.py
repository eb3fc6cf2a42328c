"""PreFlight with real cargo on copies of fixture workspaces: candidates from node edits and from
diffs, the gate and the policy, diagnostics mapped to nodes, the mirror synced by hash, and the
promise that the user's tree is byte-identical after any PreFlight."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from parseltongue.adapters import cargo
from parseltongue.adapters import rust_analyzer as ra
from parseltongue.runner.api import Pt
from parseltongue.runner.errors import UsageError
from parseltongue.adapters.mirror import Mirror
from parseltongue.runner.candidate import FileChange, NodeEdit, build_from_diff, build_from_nodes
from parseltongue.runner.diffs import Region, parse_diff

from conftest import FIXTURES

pytestmark = pytest.mark.timeout(300)
needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo not on PATH")

LIB = "calc/src/lib.rs"
ADD = f"fn:{LIB}::add"
DOUBLE = f"fn:{LIB}::double"


def tree(root: Path) -> dict[str, str]:
    """Hash of every file of the user's tree (pt's own state dir aside)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".parseltongue" not in p.relative_to(root).parts}


def code_file(tmp_path: Path, text: str, name: str = "code.rs") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def git_diff(ws: Path, rel: str, new_text: str) -> str:
    """The unified diff a user would hand over (a/ b/ prefixes), made with difflib."""
    import difflib

    old = (ws / rel).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new_text.splitlines(keepends=True), f"a/{rel}", f"b/{rel}"))


# ------------------------------------------------------------------ the gate on real cargo

@needs_cargo
def test_compiling_node_edit_passes_and_the_tree_is_untouched(pt, pws, tmp_path):
    before = tree(pws)
    code = code_file(tmp_path, "/// Twice a number.\npub fn double(x: i32) -> i32 {\n    x * 2\n}")
    run = pt("-C", str(pws), "preflight", "--node", DOUBLE, "--code", code, "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert doc["verdict"] == "passed"
    assert [s["stage"] for s in doc["stages"]] == ["cargo"] and doc["stages"][0]["passed"]
    assert doc["nodes"] == [{"id": DOUBLE, "action": "Edit"}]
    assert doc["files"][0]["path"] == LIB and not doc["files"][0]["created"]
    assert doc["scope"] == ["app", "calc"]  # app depends on calc
    assert "-    add(x, x)\n+    x * 2\n" in doc["diff"] and "-/// Twice" not in doc["diff"]
    # nothing in the user's tree changed, and no Cargo.lock / target/ appeared in it
    assert tree(pws) == before
    assert not (pws / "target").exists() and not (pws / "Cargo.lock").exists()
    assert Mirror(pws).target_dir.is_dir() and not (pws / ".parseltongue" / "mirror").exists()
    with Pt.open(pws) as p:
        rows = p.store.run("?[id, s, c] := *codegraph{id, preflight_state: s, candidate_id: c}").rows
        assert rows == [[DOUBLE, "passed", doc["candidate_id"]]]
        assert p.query("preflight.latest")[0]["state"] == "passed"


@needs_cargo
def test_failing_candidate_is_rejected_with_diagnostics_on_its_node(pt, pws, tmp_path):
    before = tree(pws)
    code = code_file(tmp_path, '/// Sum of two numbers.\npub fn add(a: i32, b: i32) -> i32 {\n    "a + b"\n}')
    run = pt("-C", str(pws), "preflight", "--node", ADD, "--code", code)
    assert run.code == 1
    assert "FAILED" in run.out and ADD in run.out and "error[E0308]" in run.out
    run = pt("-C", str(pws), "preflight", "--node", ADD, "--code", code, "--json")
    assert run.code == 1
    doc = run.json()
    assert doc["verdict"] == "failed" and doc["failed_stages"] == ["cargo"]
    errors = [d for d in doc["diagnostics"] if d["severity"] == "error"]
    assert errors and all(d["node_id"] == ADD and d["is_new"] for d in errors)
    assert errors[0]["code"] == "E0308" and errors[0]["file_path"] == LIB and errors[0]["line"] in (5, 6)
    assert tree(pws) == before


@needs_cargo
def test_a_signature_change_is_checked_in_the_crates_that_depend_on_it(pt, pws, tmp_path):
    """add gets a third parameter and double follows (calc compiles); app, which depends on
    calc, breaks - the check covers it and the error lands on app's main."""
    edits = tmp_path / "edits.json"
    edits.write_text(json.dumps([
        {"id": ADD, "code": "/// Sum of two numbers.\npub fn add(a: i32, b: i32, c: i32) -> i32 {\n    a + b + c\n}"},
        {"id": DOUBLE, "action": "Edit", "code": "/// Twice a number.\npub fn double(x: i32) -> i32 {\n    add(x, x, 0)\n}"}]))
    doc = pt("-C", str(pws), "preflight", "--edits", str(edits), "--json").json()
    assert doc["verdict"] == "failed" and doc["scope"] == ["app", "calc"]
    assert {d["node_id"] for d in doc["diagnostics"] if d["severity"] == "error"} == {"fn:app/src/main.rs::main"}
    assert sorted(n["id"] for n in doc["nodes"]) == [ADD, DOUBLE]


@needs_cargo
def test_diff_candidate_maps_hunks_to_nodes(pt, pws, tmp_path):
    text = (pws / LIB).read_text()
    new = text.replace("    a + b\n", "    b + a\n").replace("    add(x, x)\n", "    add(x, x) + 0\n")
    patch = tmp_path / "change.diff"
    patch.write_text(git_diff(pws, LIB, new))
    before = tree(pws)
    doc = pt("-C", str(pws), "preflight", "--diff", str(patch), "--json").json()
    assert doc["verdict"] == "passed"
    assert sorted(n["id"] for n in doc["nodes"]) == [ADD, DOUBLE]
    assert tree(pws) == before
    with Pt.open(pws) as p:
        files = p.query("preflight.candidate", candidate_id=doc["candidate_id"])
        assert files[0]["new_text"] == new


@needs_cargo
def test_diff_that_adds_an_item_and_an_import(pt, pws, tmp_path):
    """Top-level insertions belong to the file node; a new file is a Create."""
    text = (pws / LIB).read_text()
    new = text.replace("pub mod legacy;\n", "pub mod legacy;\npub mod extra;\nuse std::collections::HashMap;\n") + \
        "\n/// Counts.\npub fn counts() -> HashMap<i32, i32> {\n    HashMap::new()\n}\n"
    patch = git_diff(pws, LIB, new) + \
        "--- /dev/null\n+++ b/calc/src/extra.rs\n@@ -0,0 +1,3 @@\n+pub fn extra() -> i32 {\n+    crate::double(1)\n+}\n"
    (tmp_path / "p.diff").write_text(patch)
    doc = pt("-C", str(pws), "preflight", "--diff", str(tmp_path / "p.diff"), "--json").json()
    assert doc["verdict"] == "passed", doc["diagnostics"]
    assert sorted((n["id"], n["action"]) for n in doc["nodes"]) == [
        ("file:calc/src/extra.rs", "Create"), (f"file:{LIB}", "Edit")]
    assert not (pws / "calc/src/extra.rs").exists()


@needs_cargo
def test_baseline_warnings_are_not_new_and_new_ones_follow_the_policy(pt, pws, tmp_path):
    # legacy() already warns (unused variable); an edit that keeps that warning passes
    keep = code_file(tmp_path, "pub fn legacy() -> i32 {\n    let unused = 1;\n    3\n}", "keep.rs")
    doc = pt("-C", str(pws), "preflight", "--node", "fn:calc/src/legacy.rs::legacy", "--code", keep, "--json").json()
    assert doc["verdict"] == "passed"
    warn = [d for d in doc["diagnostics"] if d["severity"] == "warning"]
    assert warn and not any(d["is_new"] for d in warn)
    assert doc["stages"][0]["baseline"].startswith("baseline:")

    # a new warning fails under the default policy (max_new_warnings 0) ...
    noisy = code_file(tmp_path, "/// Twice a number.\npub fn double(x: i32) -> i32 {\n    let y = 1;\n    add(x, x)\n}", "noisy.rs")
    run = pt("-C", str(pws), "preflight", "--node", DOUBLE, "--code", noisy, "--json")
    assert run.code == 1
    st = run.json()["stages"][0]
    assert (st["new_errors"], st["new_warnings"]) == (0, 1)
    # ... and passes once the policy allows one; the baseline of this tree is reused, not rebuilt
    assert pt("-C", str(pws), "query", "set_policy", "-p", "key=max_new_warnings", "-p", "value=1").code == 0
    doc = pt("-C", str(pws), "preflight", "--node", DOUBLE, "--code", noisy, "--json").json()
    assert doc["verdict"] == "passed" and doc["stages"][0]["new_warnings"] == 1


@needs_cargo
def test_error_gate_any_or_new_on_a_workspace_that_is_already_broken(pt, tmp_path):
    """examples/shapes does not compile (HashMap not imported). Under the default policy no
    unrelated candidate passes there; under error_gate 'new' one that adds no error does."""
    ws = tmp_path / "shapes"
    shutil.copytree(FIXTURES.parent.parent / "examples" / "shapes", ws)
    (ws / ".parseltongue").mkdir()
    with Pt.open(ws) as p:
        from parseltongue.runner.ingest import ingest
        ingest(ws, p.store)
        fn = next(r for r in p.query("codegraph.node_spans", ids=[r["id"] for r in p.query(
            "retrieval.list_nodes_by_file", file="src/report.rs")]) if r["id"].endswith("::summary"))
    text = (ws / "src/report.rs").read_text()
    code = text[fn["span_start"]:fn["span_end"]].replace("let mut out", "let mut out: String")
    cf = code_file(tmp_path, code)
    run = pt("-C", str(ws), "preflight", "--node", fn["id"], "--code", cf, "--json")
    assert run.code == 1
    errors = [d for d in run.json()["diagnostics"] if d["severity"] == "error"]
    assert errors and not any(d["is_new"] for d in errors)  # all of them are the baseline's
    assert pt("-C", str(ws), "query", "set_policy", "-p", "key=error_gate", "-p", 'value="new"').code == 0
    assert pt("-C", str(ws), "preflight", "--node", fn["id"], "--code", cf).code == 0


@needs_cargo
def test_stage_tests_runs_the_tests_that_reach_the_edit(pt, pws, tmp_path):
    """`add` computing a - b still compiles; the unit test reaching it through double fails."""
    assert pt("-C", str(pws), "query", "set_policy", "-p", "key=stage_tests", "-p", "value=true").code == 0
    wrong = code_file(tmp_path, "/// Sum of two numbers.\npub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}")
    run = pt("-C", str(pws), "preflight", "--node", ADD, "--code", wrong, "--json")
    assert run.code == 1, run.err
    doc = run.json()
    assert [s["stage"] for s in doc["stages"]] == ["cargo", "tests"]
    assert doc["failed_stages"] == ["tests"]
    failed = [d for d in doc["diagnostics"] if d["code"] == "test-failed"]
    assert [d["node_id"] for d in failed] == [f"fn:{LIB}::tests::double_is_twice"]
    good = code_file(tmp_path, "/// Sum of two numbers.\npub fn add(a: i32, b: i32) -> i32 {\n    b + a\n}", "good.rs")
    doc = pt("-C", str(pws), "preflight", "--node", ADD, "--code", good, "--json").json()
    assert doc["verdict"] == "passed" and doc["stages"][1]["passed"]


@needs_cargo
def test_a_stage_that_runs_out_of_time_fails(pt, pws, tmp_path):
    assert pt("-C", str(pws), "query", "set_policy", "-p", "key=timeout_cargo_s", "-p", "value=0").code == 0
    code = code_file(tmp_path, "/// Twice a number.\npub fn double(x: i32) -> i32 {\n    x * 2\n}")
    run = pt("-C", str(pws), "preflight", "--node", DOUBLE, "--code", code, "--json")
    assert run.code == 1
    assert any(d["code"] == "pt-timeout" for d in run.json()["diagnostics"])


@needs_cargo
@pytest.mark.skipif(ra.find_rust_analyzer() is None, reason="no rust-analyzer binary")
def test_stage_ra_rejects_before_cargo_runs(pt, pws, tmp_path):
    assert pt("-C", str(pws), "query", "set_policy", "-p", "key=stage_ra", "-p", "value=true").code == 0
    bad = code_file(tmp_path, "/// Twice a number.\npub fn double(x: i32) -> i32 {\n    add(x)\n}")  # mismatched-arg-count
    before = tree(pws)
    run = pt("-C", str(pws), "preflight", "--node", DOUBLE, "--code", bad, "--json")
    assert run.code == 1, run.err
    doc = run.json()
    assert [s["stage"] for s in doc["stages"]] == ["ra"]
    assert doc["failed_stages"] == ["ra"] and doc["missing_stages"] == ["cargo"]
    assert any(d["node_id"] == DOUBLE and d["severity"] == "error" for d in doc["diagnostics"])
    assert tree(pws) == before


# ------------------------------------------------------------------ bad input: exit 2, nothing run

def test_bad_input_exits_2(pt, pws, tmp_path):
    code = code_file(tmp_path, "/// Twice a number.\npub fn double(x: i32) -> i32 { x }")
    assert pt("-C", str(pws), "preflight").code == 2
    assert pt("-C", str(pws), "preflight", "--node", DOUBLE).code == 2
    run = pt("-C", str(pws), "preflight", "--node", "fn:calc/src/lib.rs::nope", "--code", code)
    assert run.code == 2 and "unknown node" in run.err
    (tmp_path / "bad.diff").write_text("--- a/calc/src/lib.rs\n+++ b/calc/src/lib.rs\n@@ -1,1 +1,1 @@\n-no such line\n+x\n")
    run = pt("-C", str(pws), "preflight", "--diff", str(tmp_path / "bad.diff"))
    assert run.code == 2 and "does not apply" in run.err
    (tmp_path / "out.diff").write_text("--- a/../x.rs\n+++ b/../x.rs\n@@ -0,0 +1,1 @@\n+x\n")
    assert pt("-C", str(pws), "preflight", "--diff", str(tmp_path / "out.diff")).code == 2
    (tmp_path / "none.diff").write_text("hello\n")
    assert pt("-C", str(pws), "preflight", "--diff", str(tmp_path / "none.diff")).code == 2
    (tmp_path / "latin1.rs").write_bytes("fn x() { \"caf\xe9\" }".encode("latin-1"))
    assert pt("-C", str(pws), "preflight", "--node", DOUBLE, "--code", str(tmp_path / "latin1.rs")).code == 2
    assert pt("-C", str(pws), "preflight", "--diff", str(tmp_path / "missing.diff")).code == 2


def test_not_a_cargo_workspace_exits_2(pt, tmp_path):
    (tmp_path / ".parseltongue").mkdir()
    (tmp_path / "a.rs").write_text("fn a() {}\n")
    code = code_file(tmp_path, "fn a() { 1; }", "c.rs")
    run = pt("-C", str(tmp_path), "preflight", "--node", "fn:a.rs::a", "--code", code)
    assert run.code == 2 and "Cargo.toml" in run.err


# ------------------------------------------------------------------ pieces

def test_mirror_syncs_by_hash(pws):
    (pws / "target").mkdir()
    (pws / "target" / "big.bin").write_bytes(b"x" * 1000)
    m = Mirror(pws)
    with m.locked():
        first = m.sync()
        assert first.copied == first.files == 6 and not (m.root / "target").exists()
        again = m.sync()
        assert again.copied == 0
        # a touched file (same bytes, new mtime) is hashed, not copied
        (pws / LIB).write_bytes((pws / LIB).read_bytes())
        assert m.sync().copied == 0
        (pws / LIB).write_text("pub mod legacy;\n")
        (pws / "app/src/main.rs").unlink()
        rep = m.sync()
        assert (rep.copied, rep.removed) == (1, 1)
        assert (m.root / LIB).read_text() == "pub mod legacy;\n" and not (m.root / "app/src/main.rs").exists()
        d = rep.digest
        # a candidate written into the mirror is put back by the next sync
        m.write({LIB: b"// candidate\n"})
        assert (m.root / LIB).read_text() == "// candidate\n"
        rep = m.sync()
        assert rep.copied == 1 and rep.digest == d and (m.root / LIB).read_text() == "pub mod legacy;\n"


def test_offsets_map_back_to_the_users_file():
    # base "abcdef": "cd" -> "XYZW" at 2..4; a diagnostic at new byte 7 ('f') is base byte 5
    fc = FileChange("a.rs", b"abcdef", b"abXYZWef", [Region(2, 4, 2, 6, "fn:a.rs::n")])
    assert fc.to_base(1) == (1, "")
    assert fc.to_base(3) == (2, "fn:a.rs::n")
    assert fc.to_base(7) == (5, "")


def test_parse_diff_handles_no_newline_and_new_files():
    patch = (b"--- a/x.rs\n+++ b/x.rs\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n"
             b"\\ No newline at end of file\n--- /dev/null\n+++ b/y.rs\n@@ -0,0 +1 @@\n+new\n")
    files = parse_diff(patch)
    assert [(o, n) for o, n, _ in files] == [("x.rs", "x.rs"), (None, "y.rs")]
    assert files[0][2][0].lines == [(" ", b"a\n"), ("-", b"b"), ("+", b"c")]


def test_cargo_messages_are_parsed(tmp_path):
    msg = lambda level, text, spans, code=None: json.dumps({"reason": "compiler-message", "message": {  # noqa: E731
        "level": level, "message": text, "code": {"code": code} if code else None, "spans": spans,
        "children": [], "rendered": text}})
    span = {"file_name": "src/a.rs", "byte_start": 10, "byte_end": 12, "line_start": 2, "column_start": 3, "is_primary": True}
    macro = {"file_name": "/rustc/abc/library/core/src/macros.rs", "byte_start": 1, "byte_end": 2, "line_start": 1,
             "column_start": 1, "is_primary": True, "expansion": {"span": {**span, "byte_start": 20, "byte_end": 21}}}
    lines = [msg("error", "mismatched types", [span], "E0308"), msg("error", "mismatched types", [span], "E0308"),
             msg("warning", "unused", [macro], "unused_variables"), msg("error", "aborting due to 1 previous error", []),
             msg("failure-note", "For more information about this error, try `rustc --explain E0308`.", []),
             json.dumps({"reason": "build-finished", "success": False}), "test tests::x ... FAILED"]
    diags, success, other = cargo.parse_messages(lines, tmp_path)
    assert success is False and other == ["test tests::x ... FAILED"]
    assert [(d.severity, d.code, d.file, d.byte_start) for d in diags] == [
        ("error", "E0308", "src/a.rs", 10), ("warning", "unused_variables", "src/a.rs", 20)]


def test_node_edits_that_overlap_are_refused(pws):
    with Pt.open(pws) as p:
        with pytest.raises(UsageError, match="overlap"):
            build_from_nodes(p, [NodeEdit(ADD, "Edit", "pub fn add() {}"), NodeEdit(f"file:{LIB}", "Edit", "x")])
        cand = build_from_nodes(p, [NodeEdit("fn:calc/src/lib.rs::triple", "Create", "pub fn triple(x: i32) -> i32 { 3 * x }", after=DOUBLE),
                                    NodeEdit(ADD, "Delete")])
        new = cand.files[0].new.decode()
        assert "pub fn add" not in new and "}\n\npub fn triple(x: i32) -> i32 { 3 * x }\n" in new
        with pytest.raises(UsageError, match="overlap|changes nothing|does not apply"):
            build_from_diff(p, b"--- a/calc/src/lib.rs\n+++ b/calc/src/lib.rs\n@@ -1,1 +1,1 @@\n-nope\n+x\n")


def test_diff_regions_nest_into_one_node_per_place(pws):
    """Two hunks inside add and double give two node edits; an append at the end of the file
    (outside every item) makes the file itself the one edited node."""
    with Pt.open(pws) as p:
        text = (pws / LIB).read_text()
        two = text.replace("    a + b\n", "    b + a\n").replace("    add(x, x)\n", "    add(x, x) * 1\n")
        cand = build_from_diff(p, git_diff(pws, LIB, two).encode())
        assert sorted(n.id for n in cand.nodes) == [ADD, DOUBLE]
        add_row = next(n for n in cand.nodes if n.id == ADD)
        assert add_row.current_code.endswith("    a + b\n}") and add_row.future_code.endswith("    b + a\n}")
        tail = two + "\npub fn more() {}\n"
        cand = build_from_diff(p, git_diff(pws, LIB, tail).encode())
        assert [(n.id, n.action) for n in cand.nodes] == [(f"file:{LIB}", "Edit")]
        assert cand.nodes[0].future_code == tail
