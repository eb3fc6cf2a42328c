"""A long-lived rust-analyzer session kept in step with the disk (adapters/ra_warm.py), against
the real binary on a copy of tests/fixtures/ra_basic."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from parseltongue.adapters import rust_analyzer as ra
from parseltongue.adapters.ra_warm import WarmRa

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ra_basic"
BINARY, NOTES = ra.probe_rust_analyzer()
pytestmark = [pytest.mark.skipif(BINARY is None, reason="no rust-analyzer binary: " + "; ".join(NOTES)),
              pytest.mark.timeout(300)]


def names(session: ra.RaSession, rel: str) -> set[str]:
    return {s.name for top in session.document_symbols(rel) for s in top.walk()}


def position(ws: Path, rel: str, needle: str) -> ra.Pos:
    data = (ws / rel).read_bytes()
    return ra.LineIndex(data).position(data.index(needle.encode()))


def test_a_warm_session_sees_edits_new_files_and_restarts_for_deletions(tmp_path):
    ws = tmp_path / "ra_basic"
    shutil.copytree(FIXTURE, ws)
    warm = WarmRa(ws)
    try:
        s = warm.fresh()
        pid = s.pid
        assert "triple" not in names(s, "src/util.rs")

        util = ws / "src/util.rs"
        util.write_text(util.read_text() + "\npub fn triple(x: i32) -> i32 {\n    x * 3\n}\n")
        assert "triple" not in names(s, "src/util.rs")  # no file watcher: the session alone does not see it
        s = warm.fresh()
        assert "triple" in names(s, "src/util.rs")
        assert (s.pid, warm.starts, warm.reloaded) == (pid, 1, 1)

        # A new module file and the line that declares it: resolved without a new session
        (ws / "src/extra.rs").write_text("pub fn helper() -> i32 {\n    7\n}\n")
        lib = ws / "src/lib.rs"
        original_lib = lib.read_text()
        lib.write_text(original_lib + "\npub mod extra;\n\npub fn uses_extra() -> i32 {\n    extra::helper()\n}\n")
        s = warm.fresh()
        [loc] = s.definition("src/lib.rs", *position(ws, "src/lib.rs", "helper()"))
        assert loc.path == "src/extra.rs"
        assert (s.pid, warm.starts, warm.reloaded) == (pid, 1, 3)

        s = warm.fresh()  # nothing changed: nothing handed over
        assert warm.reloaded == 3

        # A deleted file: a new session, as a cold command would start
        (ws / "src/extra.rs").unlink()
        lib.write_text(original_lib)
        s = warm.fresh()
        assert warm.starts == 2 and s.pid != pid
        assert "uses_extra" not in names(s, "src/lib.rs") and "triple" in names(s, "src/util.rs")

        # The workspace's shape (a manifest) changed: a new session too
        pid = s.pid
        manifest = ws / "Cargo.toml"
        manifest.write_text(manifest.read_text() + "\n[features]\nextra = []\n")
        s = warm.fresh()
        assert warm.starts == 3 and s.pid != pid
        assert warm.describe()["pid"] == s.pid
    finally:
        warm.close()
    assert warm.session is None
