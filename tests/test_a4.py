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
