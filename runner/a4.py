"""A4 anti-pattern findings for a fix report (`pt run fix --json`: "findings").

The detection is rules (rules/a4/findings.cozo, rules/a4/change.cozo, declared as the fix flow's
steps `findings` and `change_findings` in rules/fix/flow.yaml); this joins their rows for one run:
risky code in the nodes the errors are in, and what the offered change would introduce.
Findings are advice: they never change an outcome or block an apply.
"""
from __future__ import annotations

from .api import Pt
from .errors import PtError
from .flows import flow


def fix_findings(pt: Pt, run_id: str, candidate=None) -> tuple[list[dict], list[str]]:
    """([{id, rule, severity, message, evidence, where: near_error | change}], warnings)."""
    fix = flow("fix")
    near = sorted({r["node_id"] for r in fix.query(pt, "diags", run_id=run_id, round=0) if r["node_id"]})
    out: list[dict] = []
    try:
        if near:
            out += [dict(r, where="near_error") for r in fix.query(pt, "findings", nodes=near)]
        if candidate is not None and candidate.nodes:
            edits = [[n.id, n.current_code, n.future_code] for n in candidate.nodes]
            out += [dict(r, where="change") for r in fix.query(pt, "change_findings", edits=edits)]
    except PtError as exc:  # a broken local rule must not cost the user the fix
        return out, [f"A4 findings skipped: {exc.message}"]
    return out, []
