"""A pattern's golden case (issue 12 item 4): a small crate through the real extractor and the real
`cargo check`, each candidate shown as a before/after diff of the source."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from parseltongue.runner import golden as G
from parseltongue.runner.fix_text import Tree
from parseltongue.runner.programs import PATTERNS_DIR, Registry

FIXTURES = Path(__file__).resolve().parent / "fixtures"

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")

_CASES = [c for c in G.discover(G.GOLDEN_ROOT, Registry(None).all()) if c.program.startswith("patterns.")]


def test_every_pattern_case_is_a_real_crate_shown_as_diffs():
    assert _CASES
    for case in _CASES:
        spec = yaml.safe_load(case.path.read_text())
        assert set(spec) <= {"fixture", "seed", "params"} and spec["fixture"] and spec["seed"], case.label
        expected = case.expected_path.read_text()
        assert "# errors (cargo check):" in expected, case.label
        assert '"start"' not in expected and "headers:" not in expected, case.label  # no offsets


def test_a_pattern_change_shows_in_the_diff(ws):
    # make_pub's first choice becomes pub(super): the case fails and its output shows the new line
    src = (PATTERNS_DIR / "make_pub.cozo").read_text()
    changed = src.replace("v = if(c > p, 'pub(crate)', 'pub')", "v = if(c > p, 'pub(crate)', 'pub(super)')")
    assert changed != src
    local = ws / ".parseltongue" / "patterns" / "make_pub.cozo"
    local.parent.mkdir(parents=True)
    local.write_text(changed)
    case = next(c for c in _CASES if c.label == "patterns.make_pub/private")
    outcome = G.run_case(case, "mem", registry=Registry(ws))
    assert not outcome.ok
    assert "-const SCALE: f64 = 2.0;\n+pub(super) const SCALE: f64 = 2.0;\n" in outcome.actual, outcome.actual
    assert G.run_case(case, "mem").ok


def test_edits_diff_shows_what_a_candidate_does_or_that_it_is_none(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lib.rs").write_text("fn a() {\n    1\n}\n")
    tree = Tree(tmp_path)
    edit = lambda s, e, r: {"file_path": "src/lib.rs", "start": s, "end": e, "replacement": r}  # noqa: E731
    assert G.edits_diff(tree, [edit(13, 14, "2"), edit(0, 0, "pub ")]) == [
        "--- a/src/lib.rs", "+++ b/src/lib.rs", "@@ -1,3 +1,3 @@",
        "-fn a() {", "-    1", "+pub fn a() {", "+    2", " }"]
    none = ["   (no candidate: the edits overlap, fall outside the text or change nothing)"]
    assert G.edits_diff(tree, [edit(0, 5, "x"), edit(3, 4, "y")]) == none
    assert G.edits_diff(tree, [edit(0, 0, "a"), edit(0, 0, "b")]) == none  # two inserts at one point: order unknown
    assert G.edits_diff(tree, [edit(0, 99, "")]) == none
    assert G.edits_diff(tree, [edit(0, 2, "fn")]) == none
    assert G.edits_diff(tree, [dict(edit(0, 0, "x"), file_path="src/nope.rs")]) == none


def test_a_seed_case_of_a_rule_is_refused(pt, ws):
    gdir = ws / ".parseltongue" / "golden" / "meta" / "status"
    gdir.mkdir(parents=True)
    (gdir / "crate.yaml").write_text("fixture: fix_make_pub\nseed: src/lib.rs\n")
    r = pt("-C", str(ws), "test", str(gdir))
    assert r.code == 2, r.err
    assert f"{gdir / 'crate.yaml'}: `seed` cases are for patterns and name a `fixture` crate" in r.err


def test_a_fixture_copy_is_shared_until_the_crate_changes(tmp_path):
    """Cases of one crate share a copy (its mirror stays warm); an edited crate never reuses a stale one."""
    src = tmp_path / "crate"
    shutil.copytree(FIXTURES / "fix_make_pub", src)
    first = G._fixture_copy(src)
    assert G._fixture_copy(src) == first
    assert (first / "src" / "lib.rs").read_text() == (src / "src" / "lib.rs").read_text()
    (src / "target").mkdir()  # build output and state are not content
    (src / "target" / "x").write_text("x")
    assert G._fixture_copy(src) == first and not (first / "target").exists()
    (src / "src" / "lib.rs").write_text((src / "src" / "lib.rs").read_text() + "\n// edited\n")
    second = G._fixture_copy(src)
    assert second != first and (second / "src" / "lib.rs").read_text().endswith("// edited\n")


def test_a_row_of_the_wrong_type_is_named_not_a_crash(ws):
    """Was: TypeError inside the splice (exit 3); now the case's output names the column."""
    local = ws / ".parseltongue" / "patterns" / "make_pub.cozo"
    local.parent.mkdir(parents=True)
    local.write_text("""# ---
# id: patterns.make_pub
# version: 1
# summary: A start that is not a number.
# codes: [E0603]
# params:
#   run_id: {type: String, required: true}
#   round:  {type: Int, default: 0}
# reads: [fix_diag]
# writes: []
# ---
?[diag, alt, tier, file_path, start, end, replacement, note] := *fix_diag{run_id: $run_id, round: $round, diag, file_path},
    alt = 0, tier = 2, start = 'x', end = 0, replacement = '', note = ''
""")
    case = next(c for c in _CASES if c.label == "patterns.make_pub/private")
    outcome = G.run_case(case, "mem", registry=Registry(ws))
    assert not outcome.ok
    assert "# error: a row breaks the pattern's contract\ncolumn start holds 'x', not int\n" in outcome.actual, outcome.actual


def test_a_workspace_pattern_case_names_a_crate_beside_it(pt, ws):
    """A project-local pattern's case (.parseltongue/golden/patterns/...) keeps its crate beside it."""
    gdir = ws / ".parseltongue" / "golden" / "patterns" / "make_pub"
    shutil.copytree(FIXTURES / "fix_make_pub", gdir / "crate")
    (gdir / "mine.yaml").write_text("fixture: ./crate\nseed: src/lib.rs\n")
    r = pt("-C", str(ws), "test", str(gdir), "--update")
    assert r.code == 0, r.err
    out = (gdir / "mine.expected").read_text()
    assert "# crate: ./crate, seed: src/lib.rs" in out
    assert "-const SCALE: f64 = 2.0;\n+pub const SCALE: f64 = 2.0;\n" in out
