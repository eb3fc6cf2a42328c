"""`pt_propose`: an agent's node-addressed edits -> a PreFlight candidate -> the verdict.

The edits are in the strict format of pt's LLM path (`{"node", "find", "replace"}`, `find`
occurring exactly once in the node's code), parsed and resolved by the same functions
(`adapters.llm.parse_reply`, `resolve_edits`). A malformed or unresolvable edit refuses the
whole proposal with the reasons (bad input, nothing checked); a resolvable one becomes a
candidate relative to the files on disk and goes through PreFlight in the mirror. The user's
tree is never written here; `pt_apply` writes a candidate that passed.
"""
from __future__ import annotations

import json

from ..adapters import llm
from .api import Pt
from .errors import UsageError
from .candidate import build_from_texts, ensure_fresh
from .preflight import run_preflight


def _splice(data: bytes, edits: list) -> bytes:
    for e in sorted(edits, key=lambda e: e.start, reverse=True):  # resolve_edits refused overlaps
        data = data[:e.start] + e.replacement.encode("utf-8") + data[e.end:]
    return data


def prove_edits(pt: Pt, edits: list[dict]) -> dict:
    """-> {verdict, candidate_id, diff, errors_after, new_errors, diagnostics, nodes, signature_changes}."""
    parsed, refused = llm.parse_reply(json.dumps({"edits": edits}))
    ids = sorted({e.node_id for e in parsed})
    spans = {r["id"]: r for r in pt.query("codegraph.node_spans", ids=ids)}
    ensure_fresh(pt, sorted({r["file_path"] for r in spans.values()}))  # spans are as good as the graph
    spans = {r["id"]: r for r in pt.query("codegraph.node_spans", ids=ids)}
    accepted, unresolved = llm.resolve_edits(pt.workspace, spans, parsed)
    refused += [r.replace("(not in the context)", "(not in the graph; see pt_diagnose / pt_context)") for r in unresolved]
    if refused:
        raise UsageError("proposal refused, nothing checked: " + "; ".join(refused))

    by_file: dict[str, list] = {}
    for e in accepted:
        by_file.setdefault(e.file, []).append(e)
    cand = build_from_texts(pt, {rel: _splice((pt.workspace / rel).read_bytes(), es) for rel, es in by_file.items()})
    if cand is None:
        raise UsageError("proposal refused, nothing checked: the edits change nothing")
    # 'new': errors the tree already has do not fail the candidate, so one error can be fixed at
    # a time; errors_after tells the agent whether it is done.
    rep = run_preflight(pt, cand, error_gate="new")
    run = rep.cargo_run
    errors_after = sum(1 for d in run.diagnostics if d.severity == "error") if run else -1
    new_errors = sum(1 for d in rep.diagnostics if d["is_new"] and d["severity"] == "error")
    return {"verdict": "passed" if rep.verdict == "passed" else "failed", "candidate_id": rep.candidate_id,
            "diff": rep.diff, "errors_after": errors_after, "new_errors": new_errors,
            "diagnostics": rep.diagnostics, "nodes": sorted({e.node_id for e in accepted}),
            "signature_changes": signature_changes(pt, rep.candidate_id)}


def signature_changes(pt: Pt, candidate_id: str) -> list[dict]:
    """The public signatures the candidate changes (fix.signature_changes): [{node_id, before, after}]."""
    return pt.query("fix.signature_changes", candidate_id=candidate_id)
