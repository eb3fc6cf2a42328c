"""Flows as declared: each flow's steps - the programs it runs, in order - in one YAML file.

`rules/<flow>/flow.yaml` lists a flow's steps (`step`: the name the Python side uses, `program`:
the rule program it runs, `does`: one line for a reader). runner/fix.py, runner/candidate.py,
runner/preflight.py and runner/apply.py run their programs only through it
(`flow("fix").run(pt, "facts", {...})`): a step that is not declared cannot run. `check()` finds declared programs that do not exist
(tests/test_fix_flow.py runs it).

    from parseltongue.runner.flows import flow
    rows = flow("preflight").query(pt, "stages")
"""
from __future__ import annotations

import importlib.resources as ir
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .api import Pt
from .errors import UsageError

FLOWS = ("fix", "preflight", "codegraph")  # codegraph: apply and undo


@dataclass(frozen=True)
class Step:
    name: str
    program: str  # a program id; '' for a step that runs another flow or the patterns
    does: str
    flow: str = ""  # the flow a step hands over to (fix -> preflight)


@dataclass(frozen=True)
class Flow:
    name: str
    summary: str
    steps: tuple  # (Step, ...) in the order the flow runs them

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise UsageError(f"flow {self.name} declares no step {name!r} (rules/{self.name}/flow.yaml)")

    def run(self, pt: Pt, step: str, params: dict | None = None, vars: dict | None = None):
        return pt.run(self.step(step).program, params, vars)

    def query(self, pt: Pt, step: str, /, **params: Any) -> list[dict]:
        return pt.run(self.step(step).program, params).dicts()


def _path(name: str) -> Path:
    try:
        return Path(str(ir.files("parseltongue.rules"))) / name / "flow.yaml"
    except ModuleNotFoundError:  # running from a checkout without an install
        return Path(__file__).resolve().parent.parent / "rules" / name / "flow.yaml"


@lru_cache(maxsize=None)
def flow(name: str) -> Flow:
    """The declared flow `name` (rules/<name>/flow.yaml), read once."""
    path = _path(name)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the flow declaration: {exc}") from None
    steps = []
    for i, s in enumerate((doc or {}).get("steps") or []):
        if not isinstance(s, dict) or not isinstance(s.get("step"), str) or not (s.get("program") or s.get("flow")):
            raise UsageError(f"{path}: step {i + 1} needs `step` and `program` (or `flow`)")
        steps.append(Step(s["step"], str(s.get("program") or ""), str(s.get("does") or ""), str(s.get("flow") or "")))
    if len({s.name for s in steps}) != len(steps):
        raise UsageError(f"{path}: a step name is declared twice")
    return Flow(name, str(doc.get("summary") or ""), tuple(steps))


def check(registry) -> list[str]:
    """Problems of the declarations: unknown programs, unknown flows."""
    problems = []
    known = registry.all()
    for name in FLOWS:
        f = flow(name)
        for s in f.steps:
            if s.program and s.program not in known:
                problems.append(f"{_path(name)}: step {s.name}: no program {s.program!r}")
            if s.flow and s.flow not in FLOWS:
                problems.append(f"{_path(name)}: step {s.name}: no flow {s.flow!r}")
    return problems
