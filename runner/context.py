"""`pt context`: the context pack for a fix, from positions or node ids.

The ranking and the token cut are rules (`rules/retrieval/context.cozo`; `pt query context` runs it
directly with node ids). This module adds only what a rule cannot do: turn `FILE:LINE` positions into
node ids, embed the query text when an encoder is installed, and print the pack as text with
START/END beacons for a model.

    pt context src/parse.rs:120 fn:src/lib.rs::run --budget 3000 --query "expected `u32`"
    pt context src/parse.rs:120 --json

Registered in runner/cli.py with `cli.add_command(context)`.
"""
from __future__ import annotations


import click

from .api import Pt
from .errors import UsageError
from .output import echo_err, emit


def seed_ids(pt: Pt, seeds: list[str]) -> list[str]:
    """Node ids as given; `FILE:LINE` (1-based) as the innermost node at the start of that line."""
    out: list[str] = []
    for s in seeds:
        node = s
        file, sep, line = s.rpartition(":")
        if sep and line.isdigit() and ":" not in file:
            path = pt.workspace / file
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"seed {s}: cannot read {path}: {exc.strerror}") from None
            lines = data.split(b"\n")
            n = int(line)
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


@click.command("context")
@click.argument("seeds", nargs=-1, required=True)
@click.option("--budget", "budget", type=int, default=4000, show_default=True,
              help="Tokens of code (characters / 4).")
@click.option("--query", default="", help="Text for the full-text (and, with an encoder, vector) side.")
@click.option("--vectors/--no-vectors", default=False, show_default=True,
              help="Also rank by vector similarity to --query (needs `pt models ensure`; off: it did not help localization).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def context(ctx: click.Context, seeds: tuple, budget: int, query: str, vectors: bool, as_json: bool) -> None:
    """The context pack for SEEDS (node ids or FILE:LINE): seeds' code first, then ranked neighbours
    as a pyramid under --budget tokens (signatures, summaries, code while it fits), in a stable
    order; then the A4 findings among them."""
    from .cli import Ctx

    encoder = None
    if vectors and query.strip():
        try:
            from ..adapters.embeddings import EncoderUnavailable, load_encoder

            encoder = load_encoder()
        except EncoderUnavailable as exc:
            echo_err(f"pt: vectors not used: {exc}")
    from .dobby import hooks

    remote = None if encoder is not None else hooks.context(ctx.find_object(Ctx), list(seeds), budget, query)
    if remote is not None:  # a running Dobby's warm worker
        ids, rows, found = remote["seeds"], remote["nodes"], remote["findings"]
    else:
        try:
            with ctx.find_object(Ctx).open() as pt:
                ids = seed_ids(pt, list(seeds))
                rows = context_pack(pt, ids, budget, query, encoder)
                found = findings(pt, rows)
        finally:
            if encoder is not None:
                encoder.close()
    if as_json:
        emit({"seeds": ids, "budget_tokens": budget, "tokens": sum(r["tokens"] for r in rows), "nodes": rows,
              "findings": found}, True)
    else:
        click.echo(render_text(rows, found))
        echo_err(f"({len(rows)} nodes, {sum(r['tokens'] for r in rows)} of {budget} tokens)")


__all__ = ["context", "context_pack", "findings", "render_text", "seed_ids"]
