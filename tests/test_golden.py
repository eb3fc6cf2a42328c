"""Every golden case of every program, on both engines (DESIGN.md §1 "Golden tests")."""
from __future__ import annotations

import pytest

from parseltongue.runner import golden as G
from parseltongue.runner.programs import Registry

_REGISTRY = Registry(None)
_CASES = G.discover(G.GOLDEN_ROOT, _REGISTRY.all())


@pytest.mark.parametrize("engine", ["mem", "sqlite"])
@pytest.mark.parametrize("case", _CASES, ids=[c.label for c in _CASES])
def test_golden_case(case, engine):
    outcome = G.run_case(case, engine, G.default_fixture_loader())
    assert outcome.ok, f"{case.label} on {engine}: {outcome.message}\n--- actual ---\n{outcome.actual}"


def test_every_program_has_a_golden_case():
    covered = {c.program for c in _CASES}
    missing = sorted(set(_REGISTRY.all()) - covered)
    assert not missing, f"programs without golden cases: {missing}"
