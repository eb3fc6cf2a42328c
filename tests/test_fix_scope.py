"""`pt run fix` on code a plain `cargo check` does not compile: test, bench and example targets
(tests/fixtures/fix_targets: one error in each) and feature-gated code
(tests/fixtures/fix_features: errors only under the `extra` feature). Real cargo, the real CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES

PT = str(Path(sys.executable).with_name("pt"))

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _copy(name: str, tmp_path: Path) -> Path:
    ws = tmp_path / name
    shutil.copytree(FIXTURES / name, ws, ignore=shutil.ignore_patterns("target", ".parseltongue", "Cargo.lock"))
    return ws


def _pt(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PT_LLM"))}
    env["PT_LLM"] = "none"
    return subprocess.run([PT, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def _cargo(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["cargo", "check", "--offline", "--quiet", *args], cwd=ws, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CARGO_TARGET_DIR": str(ws / "target")})


@pytest.mark.parametrize("seed, fixed", [
    ("tests/it.rs", "assert_eq!(out.len(), 3);"),
    ("benches/speed.rs", "label.to_uppercase()"),
    ("examples/demo.rs", "let mut input = Vec::new();"),
])
def test_the_seeds_own_target_is_checked(tmp_path, seed, fixed):
    """The seed's target (a test, a bench, an example) is compiled, and so are the others: one
    failing target must not hide another's error (which a fix of the first would then reveal as
    new, failing it)."""
    ws = _copy("fix_targets", tmp_path)
    assert _cargo(ws).returncode == 0  # the plain check sees nothing
    r = _pt(ws, "run", "fix", "--seed", seed, "--yes", "--json")
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "fixed", r.stderr
    assert sorted(e["file"] for e in doc["errors_before"]) == ["benches/speed.rs", "examples/demo.rs", "tests/it.rs"]
    assert fixed in (ws / seed).read_text()
    assert _cargo(ws, "--all-targets").returncode == 0


def test_feature_gated_seed_is_not_reported_as_nothing_to_fix(tmp_path):
    ws = _copy("fix_features", tmp_path)
    r = _pt(ws, "run", "fix", "--seed", "src/extra.rs", "--dry-run")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing to fix" not in r.stdout
    assert "mod extra: only with feature `extra`" in r.stdout and "--features extra" in r.stdout
    r = _pt(ws, "run", "fix", "--seed", "src/extra.rs", "--dry-run", "--json")
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "not-compiled" and doc["needs_features"] == [{"feature": "extra", "items": ["mod extra"]}]
    # `fast` is on by default: its file was checked, unless the defaults are off
    assert _pt(ws, "run", "fix", "--seed", "src/fast.rs", "--dry-run").returncode == 0
    doc = json.loads(_pt(ws, "run", "fix", "--seed", "src/fast.rs", "--no-default-features", "--dry-run", "--json").stdout)
    assert doc["outcome"] == "not-compiled" and [g["feature"] for g in doc["needs_features"]] == ["fast"]
    assert doc["features"] == {"features": [], "all_features": False, "no_default_features": True}


@pytest.mark.parametrize("flags", [["--features", "extra"], ["--all-features"]])
def test_features_reach_every_check(tmp_path, flags):
    """The errors exist only under `extra`: round 0's check and PreFlight both compile with it,
    and the run records the features it used."""
    ws = _copy("fix_features", tmp_path)
    r = _pt(ws, "run", "fix", "--seed", "src/extra.rs", *flags, "--yes", "--json")
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "fixed", r.stderr
    assert sorted((e["file"], e["code"]) for e in doc["errors_before"]) == [("src/extra.rs", "E0599"), ("src/lib.rs", "E0599")]
    assert doc["features"]["features" if flags[0] == "--features" else "all_features"] in (["extra"], True)
    assert "word.to_uppercase()" in (ws / "src/extra.rs").read_text()
    assert "values.len()" in (ws / "src/lib.rs").read_text()
    assert _cargo(ws, "--features", "extra").returncode == 0
    rows = _pt(ws, "query", "fix_report", "--json")
    assert rows.returncode == 0, rows.stderr


def test_unknown_feature_is_bad_input(tmp_path):
    ws = _copy("fix_features", tmp_path)
    r = _pt(ws, "run", "fix", "--seed", "src/lib.rs", "--features", "nosuch", "--dry-run")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3


def test_rust_analyzer_gets_the_features():
    from parseltongue.adapters.cargo import Features
    from parseltongue.adapters.rust_analyzer import ra_config

    cfg = ra_config(FIXTURES / "fix_features", features=Features(("extra",), False, True))["cargo"]
    assert cfg["features"] == ["extra"] and cfg["noDefaultFeatures"] is True
    cfg = ra_config(FIXTURES / "fix_features", features=Features((), True, False))["cargo"]
    assert cfg["allFeatures"] is True and cfg["features"] == "all" and "noDefaultFeatures" not in cfg
    assert "features" not in ra_config(FIXTURES / "fix_features")["cargo"]


def _has_ra() -> bool:
    from parseltongue.adapters import rust_analyzer as ra

    return ra.probe_rust_analyzer()[0] is not None


@pytest.mark.skipif(not _has_ra(), reason="needs rust-analyzer")
@pytest.mark.parametrize("features", [None, ("extra",), "all"])
def test_a_real_rust_analyzer_session_sees_the_features(tmp_path, features):
    """The real binary with the config pt gives it: without `extra`, the gated items are inactive
    code and src/extra.rs is in no module; with --features extra or --all-features they are live."""
    from parseltongue.adapters import rust_analyzer as ra
    from parseltongue.adapters.cargo import Features

    ws = _copy("fix_features", tmp_path)
    feats = None if features is None else Features((), True) if features == "all" else Features(features)
    s = ra.open_session(ws, config=ra.ra_config(ws, features=feats), request_timeout=30, ready_timeout=60)
    try:
        lib = {d.code for d in s.diagnostics("src/lib.rs", 30)}
        extra = {d.code for d in s.diagnostics("src/extra.rs", 30)}
    finally:
        s.shutdown()
    if features is None:
        assert "inactive-code" in lib and "unlinked-file" in extra
    else:
        assert "inactive-code" not in lib and "unlinked-file" not in extra
