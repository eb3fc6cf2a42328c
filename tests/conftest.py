"""Shared test helpers: run the real `pt` entry point in-process and capture its streams."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from parseltongue.runner.cli import main

# PreFlight mirrors live in pt's cache; the tests' go to a directory of their own (inherited by
# the `pt` subprocesses some tests start), never the user's ~/.cache.
os.environ.setdefault("PT_CACHE_DIR", tempfile.mkdtemp(prefix="pt-test-cache-"))

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def pt(capsys):
    """pt(*args) -> Run, through the same main() as the console script."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        cap = capsys.readouterr()
        return Run(code, cap.out, cap.err)

    return run


@pytest.fixture
def ws(tmp_path):
    """An empty workspace with a .parseltongue/ state dir."""
    (tmp_path / ".parseltongue").mkdir()
    return tmp_path


@pytest.fixture
def pws(tmp_path) -> Path:
    """A scratch copy of the preflight fixture workspace (tests never write into tests/fixtures)."""
    import shutil

    ws = tmp_path / "pws"
    shutil.copytree(FIXTURES / "preflight_ws", ws)
    (ws / ".parseltongue").mkdir()
    return ws


def write_rule(ws: Path, rel: str, text: str) -> Path:
    path = ws / ".parseltongue" / "rules" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def pt_subprocess(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "pt"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def fix_fixture(tmp_path: Path, fixture: str, seed: str = "src/lib.rs") -> tuple[Path, dict]:
    """Copy tests/fixtures/FIXTURE to tmp_path and run `pt run fix --seed SEED --yes --json` there
    (no LLM) -> (workspace, report); the run must exit 0."""
    import os
    import shutil

    ws = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, ws, ignore=shutil.ignore_patterns("target", ".parseltongue", "Cargo.lock"))
    exe = Path(sys.executable).parent / "pt"
    proc = subprocess.run([str(exe), "run", "fix", "--seed", seed, "--yes", "--json"], cwd=ws,
                          env=dict(os.environ, PT_LLM="none"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws, json.loads(proc.stdout)


def cargo_check(ws: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cargo", "check", "--offline", "--quiet"], cwd=ws, capture_output=True, text=True,
                          timeout=300)


def assert_compiles(ws: Path) -> None:
    check = cargo_check(ws)
    assert check.returncode == 0, check.stderr


@pytest.fixture(scope="session")
def packaged_registry(tmp_path_factory) -> Path:
    """One model registry holding the packaged Gemma 3 270M for every test that loads it: assembling
    the ~250 MB file once per session, not once per test module."""
    from parseltongue.adapters import models as M

    d = tmp_path_factory.mktemp("registry")
    mp = pytest.MonkeyPatch()
    mp.setenv("MODEL_REGISTRY", str(d))
    mp.delenv("PT_MEM_AVAILABLE_MB", raising=False)
    try:
        M.ensure(install=False)
    finally:
        mp.undo()
    return d
