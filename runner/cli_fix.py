"""`pt run fix`: the main job on the command line (the flow itself is runner/fix.py).

Exit codes: 0 fixed (or, with --dry-run, a fix was found; or nothing was broken), 1 no safe fix
was found or the change was not approved (nothing written), 2 bad input, 3 internal error.
"""
from __future__ import annotations

import click

from .cli_preflight import _approver
from .errors import UsageError
from .output import echo_err, emit


@click.group("run")
def run_group() -> None:
    """Run a flow (fix)."""


@run_group.command("fix")
@click.option("--seed", required=True, metavar="FILE", help="The Rust file to make compile (its crate is checked).")
@click.option("--yes", is_flag=True, help="Apply the fix without asking.")
@click.option("--dry-run", is_flag=True, help="Print the diff of the fix found; write nothing.")
@click.option("--max-rounds", default=3, show_default=True, type=click.IntRange(1, 20), help="Fix rounds (one error group per round).")
@click.option("--max-candidates", default=24, show_default=True, type=click.IntRange(1, 500), help="PreFlight checks per round.")
@click.option("--allow-signature-change", is_flag=True, help="Let a fix change the signature of a pub item.")
@click.option("--partial", is_flag=True, help="Apply a change that removes some errors even when others remain.")
@click.option("--llm", type=click.Choice(["auto", "none", "anthropic", "local"]), default="auto", show_default=True,
              help="Ask an LLM when the patterns find nothing (auto: anthropic when ANTHROPIC_API_KEY is set; $PT_LLM overrides).")
@click.option("--model", metavar="NAME", help="LLM model (anthropic model name or GGUF path; default $PT_LLM_MODEL).")
@click.option("--json", "as_json", is_flag=True, help="The whole run as one JSON document on stdout.")
@click.pass_obj
def fix_cmd(c, seed, yes, dry_run, max_rounds, max_candidates, allow_signature_change, partial, llm, model, as_json) -> None:
    """Find the errors of SEED's crate, try rustc's suggestions and the fix patterns (then an LLM,
    when configured), prove each candidate compiles in a mirror, and apply the best one."""
    from ..adapters import llm as llm_adapter
    from .fix import FixOptions, run_fix

    try:
        cfg = llm_adapter.config_from_env(provider=None if llm == "auto" else llm, model=model)
    except llm_adapter.LlmError as exc:
        raise UsageError(str(exc)) from None
    opts = FixOptions(seed=seed, dry_run=dry_run, max_rounds=max_rounds, max_candidates=max_candidates,
                      allow_signature_change=allow_signature_change, partial=partial,
                      llm=None if cfg.provider == "none" else cfg)
    with c.open() as pt:
        rep = run_fix(pt, opts, _approver(yes, as_json), progress=echo_err)
    if as_json:
        emit(rep.as_dict(), True)
    else:
        _print(rep)
    if rep.outcome not in ("fixed", "would-fix", "no-errors"):
        raise SystemExit(1)


def _print(rep) -> None:
    for w in rep.warnings:
        echo_err(f"warning: {w}")
    n = len(rep.errors_before)
    if rep.outcome == "no-errors":
        click.echo(f"{rep.seed}: its crate has no errors; nothing to fix")
        return
    if rep.diff:
        click.echo(rep.diff, nl=False)
    chain = [r["champion"] for r in rep.rounds if r["champion"]]
    for ch in chain:
        click.echo(f"  round fix: {ch['pattern'].removeprefix('patterns.')}: {ch['note']}")
    if rep.outcome == "fixed":
        click.echo(f"fixed {n} error{'s' * (n != 1)} in {len(chain)} round{'s' * (len(chain) != 1)}: change "
                   f"{rep.change_id} ({', '.join(f['path'] for f in rep.written)}); undo with: pt undo {rep.change_id}")
    elif rep.outcome == "would-fix":
        click.echo(f"dry run: this change fixes {n} error{'s' * (n != 1)} and passed PreFlight; nothing written")
    elif rep.outcome == "partial":
        click.echo(f"partial: {len(rep.errors_left)} of {n} errors remain" + ("; nothing written" if not rep.change_id else ""))
    elif rep.outcome == "not-approved":
        click.echo("a fix passed PreFlight but was not approved; nothing written (pass --yes to apply without asking)")
    else:
        tried = sum(len(r["candidates"]) for r in rep.rounds)
        sig = [c for r in rep.rounds for c in r["candidates"] if c["signature_change"] and c["errors_after"] < c["errors_before"]
               and c["new_errors"] == 0]
        if sig:
            click.echo(f"note: {len(sig)} candidate{'s' * (len(sig) != 1)} would fix errors by changing the signature of a "
                       f"pub item ({sig[0]['note'][:60]}); rerun with --allow-signature-change to accept that")
        click.echo(f"no safe fix found ({tried} candidate{'s' * (tried != 1)} tried); nothing written. The errors, per interface:")
        for e in rep.explanation:
            where = e["node_id"] or "(no node)"
            click.echo(f"  {where}  [{e['kind'] or '-'}] {e['signature'][:80]}")
            click.echo(f"    {e['file_path']}:{e['line']}: error[{e['code']}]: {e['message']}")
            for note in e["notes"][:3]:
                click.echo(f"      = {note[:120]}")
