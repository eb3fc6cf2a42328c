"""`pt context`: the context pack for SEEDS (node ids or FILE:LINE) as text for a model, or JSON.

    pt context src/parse.rs:120 fn:src/lib.rs::run --budget 3000 --query "expected `u32`"
    pt context src/parse.rs:120 --json

The pack itself is runner/context.py (and the rule retrieval.context). Registered in runner/cli.py
with `cli.add_command(context)`; the command gets the CLI's `Ctx` as click's obj.
"""
from __future__ import annotations

import click

from .api import workspace_path
from .context import context_pack, findings, position, render_text, seed_ids
from .output import echo_err, emit, warn_unknown


@click.command("context")
@click.argument("seeds", nargs=-1, required=True)
@click.option("--budget", "budget", type=int, default=4000, show_default=True,
              help="Tokens of code (characters / 4).")
@click.option("--query", default="", help="Text for the full-text (and, with an encoder, vector) side.")
@click.option("--vectors/--no-vectors", default=False, show_default=True,
              help="Also rank by vector similarity to --query (needs `pt models ensure`; off: it did not help localization).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def context(c, seeds: tuple, budget: int, query: str, vectors: bool, as_json: bool) -> None:
    """The context pack for SEEDS (node ids or FILE:LINE): seeds' code first, then ranked neighbours
    as a pyramid under --budget tokens (signatures, summaries, code while it fits), in a stable
    order; then the A4 findings among them."""
    encoder = None
    if vectors and query.strip():
        try:
            from ..adapters.embeddings import EncoderUnavailable, load_encoder

            encoder = load_encoder()
        except EncoderUnavailable as exc:
            echo_err(f"pt: vectors not used: {exc}")
    from .dobby import hooks

    # Positions as the shell completed them (from this directory), made absolute: a running Dobby
    # reads them from elsewhere. One outside the workspace is refused here.
    ws = c.workspace
    seeds = tuple(f"{ws / workspace_path(ws, p[0])}:{p[1]}" if (p := position(s)) else s for s in seeds)
    remote = None if encoder is not None else hooks.context(c, list(seeds), budget, query)
    if remote is not None:  # a running Dobby's warm worker
        ids, rows, found = remote["seeds"], remote["nodes"], remote["findings"]
        warn_unknown(remote.get("unknown_seeds") or [])
    else:
        try:
            with c.open(create=False) as pt:  # read-only: creates nothing
                ids = seed_ids(pt, list(seeds))
                rows = context_pack(pt, ids, budget, query, encoder)
                warn_unknown(pt.unknown_seeds(ids))
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
