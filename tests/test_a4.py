"""A4 anti-pattern findings (rules/a4/) where a user sees them: the context pack and the fix report.

The rules themselves are covered by their golden cases (golden/a4/) on the fixture a4_ws."""
from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES


@pytest.fixture
def a4_ws(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "a4_ws", ws)
    return ws


def test_context_pack_carries_the_findings_near_the_seed(pt, a4_ws):
    assert pt("-C", str(a4_ws), "ingest").code == 0
    r = pt("-C", str(a4_ws), "context", "fn:src/lib.rs::total", "--budget", "2000", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    found = {(f["id"], f["rule"]) for f in doc["findings"]}
    shown = {n["id"] for n in doc["nodes"]}
    # lookup is total's callee: in the pack, and its expect is reachable from the public total.
    assert ("fn:src/lib.rs::lookup", "unwrap_in_library") in found
    assert all(i in shown for i, _ in found)  # findings only among the pack's nodes
    r = pt("-C", str(a4_ws), "context", "fn:src/lib.rs::total", "--budget", "2000")
    assert r.code == 0 and "--- A4 findings" in r.out and "[unwrap_in_library]" in r.out
    assert r.out.index("--- A4 findings") < r.out.index("=== CONTEXT END ===")


def test_no_findings_no_section(pt, a4_ws):
    assert pt("-C", str(a4_ws), "ingest").code == 0
    r = pt("-C", str(a4_ws), "context", "fn:src/lib.rs::first", "--budget", "10")
    assert r.code == 0 and "A4 findings" not in r.out


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_fix_report_carries_what_the_change_introduces(pt, tmp_path, monkeypatch):
    """The try_or_unwrap pattern fixes `?` in fns that return no Result by unwrapping: the fix is
    offered as before (findings never block) and the report says it adds unwrap calls."""
    monkeypatch.setenv("PT_LLM", "none")
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "fix_try_or_unwrap", ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    r = pt("-C", str(ws), "run", "fix", "--seed", "src/lib.rs", "--dry-run", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["outcome"] == "would-fix"
    change = {(f["id"], f["rule"]) for f in doc["findings"] if f["where"] == "change"}
    assert ("fn:src/lib.rs::square", "unwrap_added") in change
    assert all(f["rule"] != "placeholder_added" for f in doc["findings"])
