"""Program contracts (issue 12 item 3): each kind's required keys, declared params, enumerated
values, a pattern's exact output headers; a broken one is `file:line: what is wrong`, exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from parseltongue.runner.programs import Registry

from conftest import write_rule

PATTERN = """# ---
# id: patterns.demo
# version: 1
# summary: A test pattern.
# codes: [E0308]
# params:
#   run_id: {type: String, required: true}
#   round:  {type: Int, default: 0}
# reads: [fix_diag]
# writes: []
# ---
?[diag, alt, tier, file_path, start, end, replacement, note] := *fix_diag{run_id: $run_id, round: $round, diag,
    file_path, start, end}, alt = 0, tier = 2, replacement = '', note = 'nothing'
"""

QUERY = """# ---
# id: demo.q
# version: 1
# summary: A test query.
# params:
#   n: {type: Int, default: 1}
# reads: []
# writes: []
# ---
?[n] := n = $n
"""


def write_pattern(ws: Path, text: str) -> Path:
    path = ws / ".parseltongue" / "patterns" / "demo.cozo"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_well_formed_programs_load(pt, ws):
    write_pattern(ws, PATTERN)
    write_rule(ws, "demo/q.cozo", QUERY)
    r = pt("-C", str(ws), "rules", "ls", "--json")
    assert r.code == 0, r.err
    progs = {p["id"]: p for p in r.json()["programs"]}
    assert progs["patterns.demo"]["kind"] == "pattern" and progs["patterns.demo"]["codes"] == ["E0308"]
    assert progs["demo.q"]["kind"] == "query"


# (program text, line reported, words of the message)
PATTERN_CASES = [
    (PATTERN.replace("# codes: [E0308]\n", ""), 1, "a pattern needs `codes:`"),
    (PATTERN.replace("# codes: [E0308]", "# codes: []"), 5, "codes must be a non-empty list"),
    (PATTERN.replace("# codes: [E0308]", "# codes: [E308, E0277]"), 5, "code 'E308' is not a rustc error code"),
    (PATTERN.replace("# codes: [E0308]", "# codes: [E0308]\n# tier: 2"), 6,
     "unknown front-matter key 'tier' for a pattern program (a pattern's tier is a column of its rows)"),
    (PATTERN.replace("?[diag, alt, tier,", "?[diag, tier,"), 12,
     "a pattern outputs ?[diag, alt, tier, file_path, start, end, replacement, note], not ?[diag, tier, file_path"),
    (PATTERN + "?[diag, alt] := diag = 1, alt = 2\n", 14, "not ?[diag, alt]"),
    (PATTERN.replace("?[diag, alt, tier, file_path, start, end, replacement, note] :=", "res[] :="), 1,
     "no `?[diag, alt, tier, file_path, start, end, replacement, note]` rule"),
    (PATTERN.replace("round: $round, diag,", "round: $round, diag: $which,"), 12, "$which is not a declared param"),
    (PATTERN.replace("#   round:  {type: Int, default: 0}\n", ""), 6, "a pattern declares param round (Int)"),
    (PATTERN.replace("#   round:  {type: Int, default: 0}", "#   round:  {type: Int, default: 0}\n#   k: {type: Int, required: true}"),
     9, "a pattern's param k must have a default"),
    (PATTERN.replace("# writes: []", "# writes: [fix_diag]"), 10, "a pattern only proposes edits: writes must be []"),
]


@pytest.mark.parametrize("text, line, needle", PATTERN_CASES, ids=[c[2][:40] for c in PATTERN_CASES])
def test_a_pattern_breaking_its_contract_is_file_line_exit_2(pt, ws, text, line, needle):
    path = write_pattern(ws, text)
    r = pt("-C", str(ws), "rules", "ls")
    assert r.code == 2, (r.code, r.err)
    assert f"{path}:{line}: " in r.err and needle in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err
    # named, it is the same error; a broken pattern does not stop other programs
    assert pt("-C", str(ws), "query", "patterns.demo", "-p", "run_id=x").code == 2
    assert pt("-C", str(ws), "query", "meta.status").code == 0


RULE_CASES = [
    (QUERY.replace("# version: 1\n", ""), 1, "missing front-matter key 'version'"),
    (QUERY.replace("# summary: A test query.", "# summary: ''"), 4, "summary must be a non-empty line"),
    (QUERY.replace("# reads: []", "# reads: isg_nodes"), 7, "reads must be a list of relation names"),
    (QUERY.replace("# reads: []", "# reads: []\n# codes: [E0308]"), 8, "unknown front-matter key 'codes' for a query"),
    (QUERY.replace("{type: Int, default: 1}", "{type: Integer, default: 1}"), 6, "param n: unknown param type 'Integer'"),
    (QUERY.replace("{type: Int, default: 1}", "{type: Int, default: one}"), 6, "param n: default: expected Int, got 'one'"),
    (QUERY.replace("{type: Int, default: 1}", "{type: Int, default: 1, choices: [1, 2]}"), 6, "param n: unknown keys ['choices']"),
    (QUERY.replace("{type: Int, default: 1}", "{type: Int, default: 3, enum: [1, 2]}"), 6,
     "param n: default 3 is not one of its enum values"),
    (QUERY.replace("{type: Int, default: 1}", "{type: Int, enum: [1, two]}"), 6, "param n: enum value: expected Int"),
    (QUERY.replace("{type: Int, default: 1}", "{type: Int, required: true, default: 1}"), 6,
     "a required param has no use for a default"),
    (QUERY.replace("?[n] := n = $n", "?[n] := n = $n + $m"), 10, "$m is not a declared param (declared: n)"),
    # was: exit 3, "internal error: AttributeError: 'list' object has no attribute 'items'"
    (QUERY.replace("# params:\n#   n: {type: Int, default: 1}", "# params: [n]"), 5, "params must be a mapping of names to specs"),
    (QUERY.replace("# reads: []", "# vars:\n#   k: {default: 1, type: Int}\n# reads: []"), 8, "var k: unknown keys ['type']"),
]


@pytest.mark.parametrize("text, line, needle", RULE_CASES, ids=[c[2][:40] for c in RULE_CASES])
def test_a_rule_breaking_its_contract_is_file_line_exit_2(pt, ws, text, line, needle):
    path = write_rule(ws, "demo/q.cozo", text)
    for args in (["rules", "ls"], ["query", "demo.q"], ["test"]):
        r = pt("-C", str(ws), *args)
        assert r.code == 2, (args, r.code, r.err)
        assert f"{path}:{line}: " in r.err and needle in r.err, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err


def test_a_schema_revision_lives_in_its_numbered_file(pt, ws):
    path = write_rule(ws, "schema/rev_901.cozo", "# ---\n# id: schema.rev_901\n# version: 1\n# schema_rev: 900\n"
                      "# summary: test migration\n# reads: []\n# writes: [pt_meta]\n# ---\n"
                      "{?[key, value] <- [['schema_rev', 900]] :put pt_meta {key => value}}\n")
    r = pt("-C", str(ws), "status")
    assert r.code == 2, (r.code, r.err)
    assert f"{path}:4: schema_rev 900 belongs in rules/schema/rev_900.cozo" in r.err, r.err


def test_strings_and_comments_are_not_code(pt, ws):
    # a `$` or `?[` inside a string or a comment is neither a param nor a head
    write_pattern(ws, PATTERN.replace("note = 'nothing'", "note = '$x ?[a] := b'\n# ?[a] := $y\n/* $z */"))
    assert pt("-C", str(ws), "rules", "ls").code == 0


# ------------------------------------------------------------------ in `pt test`: the rendered text

def _golden(ws: Path, pid: str) -> None:
    gdir = ws / ".parseltongue" / "golden" / Path(*pid.split("."))
    gdir.mkdir(parents=True)
    (gdir / "basic.yaml").write_text("params: {}\n")


@pytest.mark.parametrize("text, line, needle", [
    (QUERY.replace("?[n] := n = $n", "?[n] := n = 1"), 6, "param n is declared but the program never uses $n"),
    (QUERY.replace("# reads: []", "# reads: [pt_meta]"), 7, "reads 'pt_meta' in its front matter but never reads it"),
    # an index read is a read (it was not seen before: `*rel:index{..}`)
    (QUERY.replace("?[n] := n = $n", "?[n] := n = $n, *pt_meta:nope{key: n}"), 7, "reads 'pt_meta' but its front matter does not"),
])
def test_pt_test_checks_the_rendered_program(pt, ws, text, line, needle):
    path = write_rule(ws, "demo/q.cozo", text)
    _golden(ws, "demo.q")
    r = pt("-C", str(ws), "test", "demo.q")
    assert r.code == 2, (r.code, r.err)
    assert f"{path}:{line}: " in r.err and needle in r.err, r.err


def test_a_param_used_only_in_a_fragment_or_branch_counts_as_used():
    # retrieval.context's $ef is used only by retrieval/_vec.cozo, included when use_vectors is on
    Registry(None).check(deep=["retrieval.context", "fix.fix_report"])


def test_every_packaged_program_keeps_its_contract():
    reg = Registry(None)
    assert reg.problems() == {}
    reg.check(deep=True)
    kinds = {p.kind for p in reg.all().values()}
    assert kinds == {"schema", "pattern", "write", "query"}
    for prog in reg.all().values():
        if prog.kind == "pattern":
            assert "tier" not in prog.meta and prog.meta["codes"], prog.id


# ------------------------------------------------------------------ enumerated params, a program's own message

@pytest.mark.parametrize("args, needle", [
    (["query", "two_hop", "-p", "seeds=x", "-p", "direction=bogus"],
     "retrieval.two_hop: param direction must be one of fwd, rev, both, got 'bogus'"),
    (["query", "context", "-p", "seeds=x", "-p", "seed_order=bogus"],
     "retrieval.context: param seed_order must be one of given, score, got 'bogus'"),
    (["query", "merge_rank_context", "-p", "seeds=x", "--params-json", '{"direction": "up"}'],
     "param direction must be one of fwd, rev, both, got 'up'"),
])
def test_enumerated_params_are_validated(pt, ws, args, needle):
    r = pt("-C", str(ws), *args)
    assert r.code == 2, (r.code, r.err)
    assert needle in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_rules_ls_shows_enum_values_and_codes(pt, ws):
    out = pt("-C", str(ws), "rules", "ls").out
    assert "direction?:String{fwd|rev|both}" in out
    assert "codes: E0603 E0624 E0616" in out
    progs = {p["id"]: p for p in pt("-C", str(ws), "rules", "ls", "--json").json()["programs"]}
    assert progs["retrieval.context"]["params"]["seed_order"]["enum"] == ["given", "score"]


def test_enum_values_pass(pt, ws):
    r = pt("-C", str(ws), "query", "context", "-p", "seeds=x", "-p", "seed_order=score", "--json")
    # the param passed and the program ran: the one error left is the unknown seed (not in the graph)
    assert r.code == 2 and "seed_order" not in r.err and "no node has the id x" in r.err, r.err


def test_a_programs_own_assert_message_is_shown(pt, ws):
    write_rule(ws, "demo/q.cozo", QUERY.replace("?[n] := n = $n", "?[n] := n = assert($n < 1, 'n must be \"below\" one')"))
    r = pt("-C", str(ws), "query", "demo.q")
    assert r.code == 2
    assert 'demo.q: n must be "below" one' in r.err and "Evaluation of expression failed" not in r.err, r.err
    # two_hop's own check of its var: max_hops above hop_limit
    r = pt("-C", str(ws), "query", "two_hop", "-p", "seeds=x", "-p", "max_hops=9")
    assert r.code == 2 and "max_hops is above the hop_limit var" in r.err, r.err


def test_pt_test_checks_every_flow_step_names_a_program(pt, ws, monkeypatch, tmp_path):
    from parseltongue.runner import flows

    declared = tmp_path / "flow.yaml"
    declared.write_text("summary: a test flow\nsteps:\n  - step: facts\n    program: fix.no_such_step\n")
    monkeypatch.setattr(flows, "_path", lambda name: declared)
    flows.flow.cache_clear()
    try:
        r = pt("-C", str(ws), "test", "meta.status")
    finally:
        flows.flow.cache_clear()
    assert r.code == 2, (r.code, r.err)
    assert f"{declared}: step facts: no program 'fix.no_such_step'" in r.err, r.err


def test_code_only_blanks_strings_and_comments_keeping_every_offset():
    from parseltongue.runner.contracts import code_only

    text = "?[a] := a = '$x # no', b = \"it\\'s\" # $y\n/* $z\n  two */ c = $p\n"
    out = code_only(text)
    assert len(out) == len(text) and [i for i, c in enumerate(out) if c == "\n"] == [i for i, c in enumerate(text) if c == "\n"]
    assert "$x" not in out and "$y" not in out and "$z" not in out and "$p" in out
    assert out.index("$p") == text.index("$p") and out.startswith("?[a] := a = ")
