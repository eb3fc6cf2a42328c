"""The context pack for a fix (`pt context`), from positions or node ids.

The ranking and the token cut are rules (`rules/retrieval/context.cozo`; `pt query context` runs it
directly with node ids). This module adds only what a rule cannot do: turn `FILE:LINE` positions into
node ids, embed the query text when an encoder is installed, and print the pack as text with
START/END beacons for a model.

    pt context src/parse.rs:120 fn:src/lib.rs::run --budget 3000 --query "expected `u32`"
    pt context src/parse.rs:120 --json

The command itself is runner/cli_context.py.
"""
from __future__ import annotations

from .api import Pt, workspace_path
from .errors import UsageError


def position(seed: str) -> tuple[str, int] | None:
    """(FILE, LINE) of a `FILE:LINE` seed; None for a node id (ids hold `::`, never end in `:N`)."""
    file, sep, line = seed.rpartition(":")
    return (file, int(line)) if sep and line.isdigit() and ":" not in file else None


def seed_ids(pt: Pt, seeds: list[str]) -> list[str]:
    """Node ids as given; `FILE:LINE` (1-based) as the innermost node at the start of that line."""
    out: list[str] = []
    for s in seeds:
        node = s
        if (pos := position(s)) is not None:
            file, line = workspace_path(pt.workspace, pos[0]), pos[1]
            path = pt.workspace / file
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"seed {s}: cannot read {path}: {exc.strerror}") from None
            lines = data.split(b"\n")
            n = line
            if not 1 <= n <= len(lines):
                raise UsageError(f"seed {s}: {file} has {len(lines)} lines")
            byte = sum(len(x) + 1 for x in lines[: n - 1]) + (len(lines[n - 1]) - len(lines[n - 1].lstrip()))
            rows = pt.query("ingest.node_at", file=file, byte=byte)
            if not rows:
                raise UsageError(f"seed {s}: no node of {file} covers line {n} (run `pt ingest`?)")
            node = rows[0]["id"]
        if node not in out:
            out.append(node)
    return out


def context_pack(pt: Pt, seeds: list[str], budget_tokens: int = 4000, query: str = "",
                 encoder=None, **params) -> list[dict]:
    """Ranked nodes with code cut to the budget (rows of retrieval.context). With an encoder, the
    query text is also embedded for the vector side; without one, vectors are simply not used."""
    qvec: list[float] = []
    if encoder is not None and query.strip():
        qvec = encoder.encode([query])[0]
        params.setdefault("model", encoder.model_id)
    # Vectors are off by default in the program (they did not help localization, README); an
    # encoder passed in means the caller wants them.
    return pt.run("retrieval.context", {"seeds": seeds, "budget_tokens": budget_tokens, "query": query,
                                        "qvec": qvec, **params}, {"use_vectors": bool(qvec)}).dicts()


def findings(pt: Pt, rows: list[dict]) -> list[dict]:
    """A4 anti-patterns (rules/a4/findings.cozo) among the pack's nodes: advice, never a gate."""
    return pt.query("a4.findings", nodes=[r["id"] for r in rows]) if rows else []


def render_text(rows: list[dict], found: list[dict] | None = None) -> str:
    """The pack as a model sees it: one block per node (its code, or only its signature or summary),
    between START/END beacons; then the A4 findings among those nodes, one line each."""
    out = ["=== CONTEXT START ==="]
    for r in rows:
        tag = "seed" if r["is_seed"] else f"rank {r['rank']}"
        cut = ", truncated" if r["truncated"] else ""
        tier = f", {r['tier']} only" if r.get("tier") in ("signature", "summary") else ""
        out.append(f"--- {r['id']} ({tag}; {r['file_path']}:{r['line_start']}-{r['line_end']}{tier}{cut})")
        if r["code"]:
            out.append(r["code"])
    if found:
        out.append("--- A4 findings (risky code near the error; advice, not errors)")
        out += [f"{f['id']}: [{f['rule']}] {f['message']}: {f['evidence']}" for f in found]
    out.append("=== CONTEXT END ===")
    return "\n".join(out)


__all__ = ["context_pack", "findings", "position", "render_text", "seed_ids"]
