"""The rule runner and CLI contract of issue 2: discovery, params, vars, gates, errors, exit codes."""
from __future__ import annotations

import sqlite3

import pytest

from parseltongue.adapters.store import Store, StoreError
from parseltongue.runner.api import Pt
from parseltongue.runner.errors import GateFailed

from conftest import write_rule

ECHO = """# ---
# id: demo.echo
# version: 1
# summary: Echo params back (test program).
# params:
#   name:  {type: String, required: true}
#   n:     {type: Int, default: 2}
#   ratio: {type: Float, default: 0.5}
#   tags:  {type: "[String]", default: []}
#   flag:  {type: Bool, default: false}
# vars:
#   kind: {default: fn}
# reads: []
# writes: []
# ---
?[name, n, ratio, tags, flag, kind] := name = $name, n = $n, ratio = $ratio, tags = $tags, flag = $flag, kind = '{{ kind }}'
"""

SNEAKY = """# ---
# id: demo.sneaky
# version: 1
# summary: Claims to be read-only but writes.
# reads: []
# writes: []
# ---
?[key, value] <- [['sneaky', 1]] :put pt_meta {key => value}
"""

GATED = """# ---
# id: demo.gated
# version: 1
# summary: Writes, then a gate fails in a later block of the same script.
# params:
#   key: {type: String, required: true}
# reads: [pt_meta]
# writes: [pt_meta]
# ---
{?[key, value] <- [[$key, 42]] :put pt_meta {key => value}}
{?[key, value] <- [['other', 7]] :put pt_meta {key => value}}
{?[v] := *pt_meta{key: 'schema_rev', value: v} :assert none}
"""

BAD_SYNTAX = """# ---
# id: demo.bad_syntax
# version: 1
# summary: A Cozo parse error on line 9 of the rendered text.
# reads: []
# writes: []
# ---
?[a] := a = 1
?[b] := b = = 2
"""


@pytest.fixture
def demo_ws(ws):
    write_rule(ws, "demo/echo.cozo", ECHO)
    write_rule(ws, "demo/sneaky.cozo", SNEAKY)
    write_rule(ws, "demo/gated.cozo", GATED)
    write_rule(ws, "demo/bad_syntax.cozo", BAD_SYNTAX)
    return ws


def test_rules_ls_json_lists_every_program_with_summary_and_params(pt, demo_ws):
    r = pt("-C", str(demo_ws), "rules", "ls", "--json")
    assert r.code == 0, r.err
    progs = {p["id"]: p for p in r.json()["programs"]}
    assert {"schema.rev_001", "meta.status", "demo.echo", "demo.gated"} <= set(progs)
    echo = progs["demo.echo"]
    assert echo["summary"] == "Echo params back (test program)."
    assert echo["origin"] == "local"
    assert echo["params"]["name"] == {"type": "String", "required": True, "default": None, "doc": ""}
    assert echo["params"]["tags"]["type"] == "[String]"
    assert all(p["summary"] for p in progs.values())


def test_query_coerces_cli_strings_and_returns_json(pt, demo_ws):
    r = pt("-C", str(demo_ws), "query", "echo", "-p", "name=it's \"quoted\" ]} :put x", "-p", "n=5",
           "-p", "ratio=2", "-p", "tags=a,b", "-p", "flag=true", "--json")
    assert r.code == 0, r.err
    row = r.json()["rows"][0]
    # the value travelled as a $param: quotes and Cozo syntax come back untouched
    assert row == {"name": "it's \"quoted\" ]} :put x", "n": 5, "ratio": 2.0, "tags": ["a", "b"],
                   "flag": True, "kind": "fn"}


def test_query_table_output_goes_to_stdout_and_count_to_stderr(pt, demo_ws):
    r = pt("-C", str(demo_ws), "query", "demo.echo", "-p", "name=x")
    assert r.code == 0
    assert r.out.splitlines()[0].split() == ["name", "n", "ratio", "tags", "flag", "kind"]
    assert "(1 row)" in r.err and "(1 row)" not in r.out


def test_params_json(pt, demo_ws):
    r = pt("-C", str(demo_ws), "query", "echo", "--params-json", '{"name": "j", "tags": ["x"]}', "--json")
    assert r.code == 0, r.err
    assert r.json()["rows"][0]["tags"] == ["x"]


@pytest.mark.parametrize("args, needle", [
    (["query", "no_such_program"], "no program named 'no_such_program'"),
    (["query", "echo"], "missing required param 'name'"),
    (["query", "echo", "-p", "name=x", "-p", "bogus=1"], "unknown param 'bogus'"),
    (["query", "echo", "-p", "name=x", "-p", "n=many"], "param n: expected Int, got 'many'"),
    (["query", "echo", "-p", "name=x", "-p", "flag=perhaps"], "param flag: expected Bool"),
    (["query", "echo", "--params-json", '{"name": 3}'], "param name: expected String, got 3"),
    (["query", "echo", "-p", "name=x", "-v", "kind=fn'] :put pt_meta"], "is not an identifier"),
    (["query", "echo", "-p", "name=x", "-v", "nope=1"], "unknown var 'nope'"),
    (["query", "echo", "-p", "novalue"], "must look like key=value"),
])
def test_bad_input_exits_2_with_one_line(pt, demo_ws, args, needle):
    r = pt("-C", str(demo_ws), *args)
    assert r.code == 2, (r.code, r.err)
    assert needle in r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    assert r.out == ""


def test_broken_front_matter_exits_2_naming_the_file(pt, demo_ws):
    path = write_rule(demo_ws, "demo/broken.cozo", "# ---\n# id: demo.broken\n# params: {a: [\n# ---\n?[a] := a = 1\n")
    r = pt("-C", str(demo_ws), "query", "echo", "-p", "name=x")
    assert r.code == 2
    assert str(path) in r.err and "bad front matter" in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_missing_front_matter_exits_2(pt, demo_ws):
    write_rule(demo_ws, "demo/bare.cozo", "?[a] := a = 1\n")
    r = pt("-C", str(demo_ws), "rules", "ls")
    assert r.code == 2 and "must start with a '# ---' front-matter block" in r.err


def test_cozo_parse_error_reported_as_file_line_of_rendered_text(pt, demo_ws):
    r = pt("-C", str(demo_ws), "query", "bad_syntax")
    assert r.code == 2
    compiled = demo_ws / ".parseltongue" / "target" / "compiled" / "demo.bad_syntax.cozo"
    assert f"{compiled}:9:" in r.err, r.err
    assert compiled.read_text().splitlines()[8] == "?[b] := b = = 2"
    assert len(r.err.strip().splitlines()) == 1


def test_a_writer_of_edges_reports_a_parse_error_on_its_own_line(pt, demo_ws):
    # A program that writes isg_edges runs with a block put before its text (the kept graph
    # counts go: runner/programs.py drop_kept_size); its errors still name the line of its text.
    write_rule(demo_ws, "demo/bad_writer.cozo", BAD_SYNTAX.replace("demo.bad_syntax", "demo.bad_writer")
               .replace("writes: []", "writes: [isg_edges]").replace("?[b] := b = = 2", "?[b] := b = = 2\n:put isg_edges {b}"))
    r = pt("-C", str(demo_ws), "query", "bad_writer")
    assert r.code == 2
    compiled = demo_ws / ".parseltongue" / "target" / "compiled" / "demo.bad_writer.cozo"
    assert f"{compiled}:9:" in r.err, r.err


def test_write_through_read_only_program_is_refused(pt, demo_ws):
    r = pt("-C", str(demo_ws), "query", "sneaky")
    assert r.code == 2 and "writes 'pt_meta' but its front matter does not declare it" in r.err
    with Pt.open(demo_ws) as p:
        assert p.store.run("?[k] := *pt_meta{key: k}").rows == [["schema_rev"]]


def test_store_refuses_writes_in_immutable_mode(tmp_path):
    # The second line of defence under the static check: Cozo itself in immutable mode.
    store = Store("sqlite", tmp_path / "g.db")
    store.run(":create t {k: String => v: Int}")
    with pytest.raises(StoreError, match="write lock required"):
        store.run("?[k, v] <- [['a', 1]] :put t {k => v}", immutable=True)
    assert store.run("?[k] := *t{k}").rows == []


def mode(path):
    """The journal mode sqlite reads from the file's header."""
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()


def test_sqlite_store_uses_a_write_ahead_log(tmp_path):
    # A new file is bulk-loaded with the rollback journal by its first process; every later open
    # (and any existing rollback-journal file, here one made by plain sqlite3) is WAL.
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE x (a)")
    con.close()
    new = tmp_path / "new.db"
    store = Store("sqlite", new)
    store.run(":create t {k: String => v: Int}")
    store.run("?[k, v] <- [['a', 1]] :put t {k => v}")
    store.close()
    assert mode(new) == "delete"
    for path in (new, old):
        store = Store("sqlite", path)
        store.run("?[k, v] <- [['b', 2]] :put t {k => v}" if path == new else ":create t {k: String => v: Int}")
        store.close()
        assert mode(path) == "wal"
    assert Store("sqlite", new).run("?[k, v] := *t{k, v}").rows == [["a", 1], ["b", 2]]


def test_bulk_writes_use_the_rollback_journal_then_wal_again(tmp_path):
    path = tmp_path / "g.db"
    Store("sqlite", path).close()
    store = Store("sqlite", path)  # second open: WAL
    store.run(":create t {k: Int}")
    assert mode(path) == "wal"
    with store.bulk():
        assert mode(path) == "delete"
        store.run("?[k] <- [[1], [2]] :put t {k}")
    assert mode(path) == "wal"
    other = sqlite3.connect(path)  # another process's reader: the mode cannot change, writes still work
    other.execute("SELECT count(*) FROM sqlite_master").fetchone()
    try:
        with store.bulk():
            store.run("?[k] <- [[3]] :put t {k}")
    finally:
        other.close()
    assert store.run("?[k] := *t{k}").rows == [[1], [2], [3]]
    assert mode(path) == "wal"
    store.close()


def test_page_cache_is_raised_for_a_long_write_then_back_to_sqlites_default(tmp_path):
    """Cozo sets no connection's cache size: Store.page_cache stores the file's default (read by
    every connection that opens it), reopens, and puts sqlite's default back afterwards."""
    path = tmp_path / "g.db"
    store = Store("sqlite", path)
    store.run(":create t {k: Int}")
    cache = lambda: sqlite3.connect(path).execute("PRAGMA cache_size").fetchone()[0]
    default = cache()
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with store.page_cache(64):
        assert cache() == 64 * 2**20 // page
        store.run("?[k] <- [[1], [2]] :put t {k}")
    assert cache() == default
    assert store.run("?[k] := *t{k}").rows == [[1], [2]]
    store.close()


def test_failed_assert_rolls_back_every_block_on_sqlite(pt, demo_ws):
    with Pt.open(demo_ws) as p:
        snapshot = p.store.run("?[k, v] := *pt_meta{key: k, value: v}").rows
        assert p.store.path.endswith("graph.db")
    r = pt("-C", str(demo_ws), "query", "demo.gated", "-p", "key=new")
    assert r.code == 1, r.err
    assert "gate failed" in r.err
    with Pt.open(demo_ws) as p:
        assert p.store.run("?[k, v] := *pt_meta{key: k, value: v}").rows == snapshot


def test_gate_failure_raises_from_python_api(demo_ws):
    with Pt.open(demo_ws) as p:
        with pytest.raises(GateFailed):
            p.run("demo.gated", {"key": "k"})


def test_python_api_mirrors_cli(demo_ws):
    with Pt.open(demo_ws) as p:
        rows = p.query("echo", name="api", tags=["t"])
    assert rows == [{"name": "api", "n": 2, "ratio": 0.5, "tags": ["t"], "flag": False, "kind": "fn"}]


def test_vars_shape_the_script(pt, demo_ws):
    r = pt("-C", str(demo_ws), "query", "echo", "-p", "name=x", "-v", "kind=struct", "--json")
    assert r.json()["rows"][0]["kind"] == "struct"


def test_compile_writes_rendered_script(pt, demo_ws):
    r = pt("-C", str(demo_ws), "compile", "echo", "-v", "kind=enum")
    assert r.code == 0
    out = demo_ws / ".parseltongue" / "target" / "compiled" / "demo.echo.cozo"
    assert r.out.strip() == str(out)
    assert "kind = 'enum'" in out.read_text()


def test_init_is_idempotent_and_status_reports(pt, ws):
    first = pt("-C", str(ws), "init", "--json").json()
    second = pt("-C", str(ws), "init", "--json").json()
    with Pt.open(ws, init=False) as p:
        revs = [s.id for s in p.schema_programs()]
        latest = p.latest_rev()
    assert first["applied"] == revs and revs[:2] == ["schema.rev_001", "schema.rev_002"]
    assert first["schema_rev"] == latest
    assert second["applied"] == [] and second["schema_rev_before"] == latest
    st = pt("-C", str(ws), "status", "--json").json()
    assert st["schema_rev"] == latest and st["rows"]["isg_nodes"] == 0


def test_older_database_must_be_migrated_explicitly(pt, ws):
    write_rule(ws, "schema/rev_900.cozo", "# ---\n# id: schema.rev_900\n# version: 1\n# schema_rev: 900\n# summary: test migration\n"
               "# reads: []\n# writes: [pt_meta, extra]\n# ---\n{:create extra {k: String}}\n"
               "{?[key, value] <- [['schema_rev', 900]] :put pt_meta {key => value}}\n")
    # a database at rev 1 (created before the new revision existed)
    with Pt.open(ws, init=False) as p:
        p.run("schema.rev_001")
    r = pt("-C", str(ws), "status")
    assert r.code == 2 and "run `pt init` to migrate it" in r.err
    r = pt("-C", str(ws), "init", "--json")
    applied = r.json()["applied"]
    assert r.code == 0 and applied[0] == "schema.rev_002" and applied[-1] == "schema.rev_900"
    assert pt("-C", str(ws), "status", "--json").json()["schema_rev"] == 900


def test_locked_or_unopenable_db_is_a_clear_error(pt, ws):
    (ws / "dir.db").mkdir()
    r = pt("-C", str(ws), "--db", str(ws / "dir.db"), "status")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1


def test_workspace_must_exist(pt, tmp_path):
    r = pt("-C", str(tmp_path / "nope"), "status")
    assert r.code == 2 and "is not a directory" in r.err


def test_golden_update_round_trips(pt, demo_ws):
    gdir = demo_ws / ".parseltongue" / "golden" / "demo" / "echo"
    gdir.mkdir(parents=True)
    (gdir / "basic.yaml").write_text("params: {name: g, n: 3}\n")
    r = pt("-C", str(demo_ws), "test", str(gdir))
    assert r.code == 1 and (gdir / "basic.actual").exists()
    r = pt("-C", str(demo_ws), "test", str(gdir), "--update")
    assert r.code == 0 and not (gdir / "basic.actual").exists()
    expected = (gdir / "basic.expected").read_text()
    assert '["g", 3, 0.5, [], false, "fn"]' in expected
    for engine in ("mem", "sqlite"):
        r = pt("-C", str(demo_ws), "test", str(gdir), "--engine", engine)
        assert r.code == 0, r.err
    (gdir / "basic.expected").write_text(expected.replace('"g"', '"h"'))
    r = pt("-C", str(demo_ws), "test", str(gdir))
    assert r.code == 1 and "differs" in r.err


def test_find_workspace_ignores_a_stray_state_dir_above_a_package(tmp_path):
    from parseltongue.runner.api import find_workspace

    (tmp_path / ".parseltongue").mkdir()  # e.g. someone ran pt in /tmp
    pkg = tmp_path / "ws"
    (pkg / "src").mkdir(parents=True)
    (pkg / "Cargo.toml").write_text('[package]\nname = "ws"\nversion = "0.1.0"\n')
    assert find_workspace(pkg / "src") == pkg
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "top"\nversion = "0.1.0"\n')
    assert find_workspace(pkg / "src") == tmp_path  # a state dir beside a manifest is a root
    (pkg / ".parseltongue").mkdir()
    assert find_workspace(pkg / "src") == pkg


def test_row_params_are_checked_shallowly_and_passed_as_lists():
    from parseltongue.runner.errors import UsageError
    from parseltongue.runner.programs import coerce

    rows = [("a", 1, ["x"]), ["b", None, ("y",)]]
    assert coerce("[[Any]]", rows, False, "p") == [["a", 1, ["x"]], ["b", None, ("y",)]]
    with pytest.raises(UsageError, match=r"p: expected a list \[Any\], got 'oops'"):
        coerce("[[Any]]", [["a"], "oops"], False, "p")
    with pytest.raises(UsageError, match="expected a list"):
        coerce("[[Any]]", "oops", False, "p")
