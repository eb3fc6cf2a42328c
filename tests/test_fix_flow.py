"""The fix flow's edges, each once a defect: a broken project-local pattern, a seed in an
integration test, a sibling `path =` dependency outside the workspace, the wording of a run that
kept changes it could not finish; and the flow declarations themselves. Real cargo, the real CLI
in a subprocess (tests/test_fix.py holds the main journeys)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, cargo_check

PT = str(Path(sys.executable).with_name("pt"))
needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _pt(ws: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PT_LLM"))}
    env["PT_LLM"] = "none"
    return subprocess.run([PT, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _crate(root: Path, name: str, files: dict[str, str], deps: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "Cargo.toml").write_text(f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
                                     f"[dependencies]\n{deps}")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


_WRONG_HEADERS = """# ---
# id: patterns.broken_headers
# version: 1
# summary: A local pattern whose output has the wrong columns.
# codes: ["*"]
# params:
#   run_id: {type: String, required: true}
#   round:  {type: Int, default: 0}
# reads: [fix_diag]
# writes: []
# ---
?[diag, file_path] := *fix_diag{run_id: $run_id, round: $round, diag, file_path}
"""

_FAILS = """# ---
# id: patterns.broken_eval
# version: 1
# summary: A local pattern that fails when it runs.
# codes: [E0425]
# params:
#   run_id: {type: String, required: true}
#   round:  {type: Int, default: 0}
# reads: [fix_diag]
# writes: []
# ---
?[diag, alt, tier, file_path, start, end, replacement, note] := *fix_diag{run_id: $run_id, round: $round, diag, file_path},
    alt = 0, tier = 2, start = to_int('not a number'), end = 0, replacement = '', note = ''
"""


@needs_cargo
def test_a_broken_local_pattern_is_skipped_with_a_warning(tmp_path):
    """Was: exit 3 with KeyError 'alt'. Now each broken pattern is named in one warning and the
    other patterns still fix the crate."""
    ws = tmp_path / "fix_flow"
    shutil.copytree(FIXTURES / "fix_flow", ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    pats = ws / ".parseltongue" / "patterns"
    pats.mkdir(parents=True)
    (pats / "broken_headers.cozo").write_text(_WRONG_HEADERS)
    (pats / "broken_eval.cozo").write_text(_FAILS)
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs", "--dry-run", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "would-fix"
    warned = [w for w in doc["warnings"] if "skipped" in w]
    # its contract (runner/contracts.py) already names the headers when it loads: file:line
    assert any("patterns.broken_headers" in w and "broken_headers.cozo:12: a pattern outputs ?[diag, alt, tier" in w
               for w in warned), doc["warnings"]
    assert any("patterns.broken_eval" in w for w in warned), doc["warnings"]
    assert all("\n" not in w for w in doc["warnings"])
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs", "--dry-run")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "warning: pattern patterns.broken_headers skipped" in r.stderr


@needs_cargo
def test_a_seed_in_an_integration_test_is_checked(tmp_path):
    """Was: `--seed tests/it.rs` with a type error there said "nothing to fix" (a plain `cargo
    check` never compiles integration tests). Now the seed's own target is checked."""
    ws = _crate(tmp_path / "it", "itcrate", {
        "src/lib.rs": "pub fn one() -> u32 {\n    1\n}\n",
        "tests/it.rs": "#[test]\nfn adds() {\n    let x: u32 = itcrate::one();\n    let y: u32 = \"two\";\n    assert_eq!(x + y, 3);\n}\n"})
    r = _pt(ws, "run", "fix", "--seed", "tests/it.rs", "--dry-run", "--json")
    doc = json.loads(r.stdout)
    assert doc["outcome"] != "no-errors", r.stderr
    assert [e["code"] for e in doc["errors_before"]] == ["E0308"]
    assert doc["errors_before"][0]["file"] == "tests/it.rs"


@needs_cargo
def test_a_sibling_path_dependency_outside_the_workspace_resolves_in_the_mirror(tmp_path):
    """Was: the mirror lacked ../common, cargo failed to load the manifest, and the run blamed
    the code. Now the mirror links the sibling and the missing import is fixed."""
    _crate(tmp_path / "common", "common", {"src/lib.rs": "pub fn base() -> usize {\n    7\n}\n"})
    ws = _crate(tmp_path / "app", "app", {
        "src/lib.rs": "pub fn tally(words: &[&str]) -> HashMap<String, usize> {\n"
                      "    let mut m = HashMap::new();\n    for w in words {\n"
                      "        *m.entry(w.to_string()).or_insert(common::base()) += 1;\n    }\n    m\n}\n"},
        deps='common = { path = "../common" }\n')
    before = (ws / "src/lib.rs").read_bytes()
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "fixed" and "E0433" in {e["code"] for e in doc["errors_before"]}
    assert (ws / "src/lib.rs").read_bytes() != before and cargo_check(ws).returncode == 0
    assert not (tmp_path / "common" / "target").exists()  # the sibling is built in the mirror's target dir


def test_the_mirror_links_outside_path_dependencies(tmp_path, monkeypatch):
    from parseltongue.adapters.mirror import Mirror, outside_path_deps

    monkeypatch.setenv("PT_CACHE_DIR", str(tmp_path / "cache"))
    _crate(tmp_path / "libs" / "common", "common", {"src/lib.rs": "", }, deps='deep = { path = "../deep" }\n')
    _crate(tmp_path / "libs" / "deep", "deep", {"src/lib.rs": ""})
    ws = _crate(tmp_path / "ws" / "app", "app", {"src/lib.rs": ""}, deps='common = { path = "../../libs/common" }\n')
    links, notes = outside_path_deps(ws, ["Cargo.toml"])
    assert links == {"../../libs/common": str(tmp_path / "libs" / "common"),
                     "../../libs/deep": str(tmp_path / "libs" / "deep")} and notes == []
    m = Mirror(ws)
    with m.locked():
        m.sync()
        assert (m.root / "../../libs/deep/Cargo.toml").resolve() == (tmp_path / "libs/deep/Cargo.toml").resolve()
        assert (m.root / "src/lib.rs").is_file() and m.state in m.root.parents
    # the workspace's own ancestor cannot be mirrored: said plainly
    (ws / "Cargo.toml").write_text((ws / "Cargo.toml").read_text() + 'up = { path = ".." }\n')
    _, notes = outside_path_deps(ws, ["Cargo.toml"])
    assert notes and "contains the workspace itself" in notes[0]


@needs_cargo
def test_kept_changes_that_do_not_finish_the_job_are_not_reported_as_fixes(tmp_path):
    """Was: a no-safe-fix run printed `round fix:` lines as if they were applied, and rustc's
    notes cut mid-word, again under every error, and the errors explained were round 0's (some of
    which the kept change fixes). Now the kept rounds are marked not applied, the errors left are
    explained, and each note is printed once, whole."""
    ws = _crate(tmp_path / "half", "half", {"src/lib.rs": (
        "pub fn tally(words: &[&str]) -> HashMap<String, usize> {\n    let mut m = HashMap::new();\n"
        "    for w in words {\n        *m.entry(w.to_string()).or_insert(0) += 1;\n    }\n    m\n}\n\n"
        "fn takes_copy<T: Copy>(t: T) -> T {\n    t\n}\n\n"
        "pub fn a() -> usize {\n    takes_copy(std::collections::BTreeMap::<u8, u8>::new()).len()\n}\n\n"
        "pub fn b() -> usize {\n    takes_copy(std::collections::BTreeMap::<u8, u8>::new()).len()\n}\n")})
    before = (ws / "src/lib.rs").read_bytes()
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "round fix:" not in r.stdout
    assert "not applied: round 0" in r.stdout and "nothing written" in r.stdout
    notes = [ln.strip() for ln in r.stdout.splitlines() if ln.strip().startswith("= ")]
    assert notes.count("= required by a bound in `takes_copy`") == 1, r.stdout
    # what is explained is what is left (round 0 fixed the import)
    assert "E0277" in r.stdout and "cannot find type `HashMap`" not in r.stdout
    assert (ws / "src/lib.rs").read_bytes() == before


def test_every_declared_flow_step_names_a_program():
    from parseltongue.runner import flows
    from parseltongue.runner.programs import Registry

    assert flows.check(Registry(None)) == []
    assert {s.program for s in flows.flow("codegraph").steps} >= {"codegraph.approve_flip", "codegraph.undo_plan"}
    fix = flows.flow("fix")
    assert [s.name for s in fix.steps][:3] == ["policy", "library", "facts"]
    assert fix.step("preflight").flow == "preflight"


def test_the_fix_flow_runs_no_program_it_does_not_declare():
    """Program ids live in the declarations (rules/*/flow.yaml), not in the flow's Python."""
    import re

    root = Path(__file__).resolve().parent.parent / "runner"
    for mod in ("fix.py", "fix_text.py", "preflight.py", "candidate.py", "apply.py", "cli_fix.py", "cli_preflight.py", "a4.py"):
        text = (root / mod).read_text()
        ids = re.findall(r"""(?:query|run)\(\s*["'](?:fix|preflight|codegraph|retrieval|ingest|a4)\.[a-z_]+["']""", text)
        assert ids == [], f"{mod} runs programs by id, not through its flow's declaration: {ids}"


def test_the_flow_modules_stay_below_the_cli():
    """click only in cli* modules: the fix flow and PreFlight import neither click nor a module
    that does (fix.py used to import runner.context, a click command module, for the LLM's pack)."""
    import re

    repo = Path(__file__).resolve().parent.parent
    for mod in ("runner/fix.py", "runner/fix_text.py", "runner/preflight.py", "runner/candidate.py",
                "runner/diffs.py", "runner/flows.py", "runner/apply.py", "adapters/mirror.py"):
        text = (repo / mod).read_text()
        bad = re.findall(r"^\s*(?:import click|from click|from \.(?:cli\w*|context|models) import)", text, re.M)
        assert bad == [], f"{mod}: {bad}"


@needs_cargo
def test_a_path_dependency_the_mirror_cannot_hold_is_named(tmp_path):
    """A dependency on a directory that contains the workspace cannot be put in the mirror: the
    run says so plainly (a warning naming it) instead of only cargo's manifest error."""
    outer = _crate(tmp_path / "outer", "outer", {"src/lib.rs": "pub fn base() -> usize {\n    1\n}\n"})
    ws = _crate(outer / "inner", "inner", {"src/lib.rs": "pub fn f() -> usize {\n    outer::base()\n}\n"},
                deps='outer = { path = ".." }\n')
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--dry-run", "--json")
    doc = json.loads(r.stdout)
    assert any("contains the workspace itself" in w and "'..'" in w for w in doc["warnings"]), doc


@needs_cargo
def test_a_cold_first_fix_checks_the_seed_crate_while_the_graph_is_built(tmp_path, monkeypatch):
    """A first fix on a workspace with no graph starts the seed crate's `cargo check` in the mirror
    before its ingest and takes that run as the tree's check (rustc builds while the graph is
    written); a second fix of the same fault, on the graph that now exists, runs as many cargo
    checks, all after its ingest."""
    import threading

    from parseltongue.adapters import cargo
    from parseltongue.runner import fix as fix_mod
    from parseltongue.runner import ingest as ingest_mod
    from parseltongue.runner.api import Pt

    monkeypatch.setenv("PT_CACHE_DIR", str(tmp_path / "cache"))
    ws = _crate(tmp_path / "app", "app", {
        "src/lib.rs": "pub fn tally(words: &[&str]) -> HashMap<String, usize> {\n"
                      "    let mut m = HashMap::new();\n    for w in words {\n"
                      "        *m.entry(w.to_string()).or_insert(0) += 1;\n    }\n    m\n}\n"})
    broken = (ws / "src/lib.rs").read_bytes()
    events: list = []
    real_check, real_ingest = cargo.start_check, ingest_mod.ingest

    def start_check(*a, **kw):
        events.append(("check", threading.current_thread() is threading.main_thread(), kw.get("packages")))
        return real_check(*a, **kw)

    def ingest(*a, **kw):
        try:
            return real_ingest(*a, **kw)
        finally:
            events.append(("ingested",))

    monkeypatch.setattr(cargo, "start_check", start_check)
    monkeypatch.setattr(ingest_mod, "ingest", ingest)
    runs = []
    for _ in range(2):
        events.clear()
        pt = Pt.open(ws)
        try:
            rep = fix_mod.run_fix(pt, fix_mod.FixOptions(seed="src/lib.rs"), approve=lambda diff: True)
        finally:
            pt.close()
        assert rep.outcome == "fixed" and cargo_check(ws).returncode == 0
        (ws / "src/lib.rs").write_bytes(broken)
        runs.append(list(events))
    cold, warm = runs
    assert cold[0] == ("check", False, ["app"])  # in its own thread, before the ingest returned
    assert ("ingested",) in cold[1:] and all(e[1] for e in cold[1:] if e[0] == "check")
    assert warm[0] == ("ingested",) and all(e[1] for e in warm if e[0] == "check")
    assert len(cold) == len(warm)  # the early run was taken, not done again
