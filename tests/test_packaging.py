"""A wheel (not only the editable install) must carry the rule files and find them at run time."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_ships_rules_and_finds_them(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheel_dir), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("parseltongue-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.endswith(".cozo")}
    in_tree = {"parseltongue/rules/" + str(p.relative_to(REPO / "rules")) for p in (REPO / "rules").rglob("*.cozo")}
    in_tree |= {"parseltongue/patterns/" + str(p.relative_to(REPO / "patterns")) for p in (REPO / "patterns").rglob("*.cozo")}
    assert in_tree <= shipped, sorted(in_tree - shipped)
    assert "parseltongue/runner/cli.py" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import parseltongue.runner.programs as P; r = P.Registry(None); "
            "print(P.RULES_DIR.is_relative_to(r'%s')); print(sorted(r.all())); print(r.rules_root)" % target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "True"  # imported from the wheel, not the checkout
    assert "meta.status" in lines[1] and str(target) in lines[2]
