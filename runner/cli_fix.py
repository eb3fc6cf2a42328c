"""`pt run fix`: the main job on the command line (the flow itself is runner/fix.py).

Exit codes: 0 fixed (or, with --dry-run, a fix was found; or nothing was broken), 1 no safe fix
was found or the change was not approved (nothing written), 2 bad input, 3 internal error.
"""
from __future__ import annotations

import sys

import click

from .cli_preflight import approver
from .errors import UsageError
from .output import echo_err, emit


@click.group("run")
def run_group() -> None:
    """Run a flow (fix)."""


@run_group.command("fix")
@click.option("--seed", required=True, metavar="FILE", help="The Rust file to make compile (its crate is checked).")
@click.option("--yes", is_flag=True, help="Apply the fix without asking.")
@click.option("--dry-run", is_flag=True, help="Print the diff of the fix found; write nothing.")
@click.option("--max-rounds", type=click.IntRange(1, 20), help="Fix rounds (default: the fix policy's, rules/fix/_policy.cozo).")
@click.option("--max-candidates", type=click.IntRange(1, 500), help="PreFlight checks per round (default: the fix policy's).")
@click.option("--allow-signature-change", is_flag=True, help="Let a fix change the signature of a pub item.")
@click.option("--partial", is_flag=True, help="Apply a change that removes some errors even when others remain.")
@click.option("--llm", type=click.Choice(["auto", "none", "anthropic", "local"]), default="auto", show_default=True,
              help="Ask an LLM when the patterns find nothing (auto: anthropic when ANTHROPIC_API_KEY is set; $PT_LLM overrides).")
@click.option("--model", metavar="NAME", help="LLM model (anthropic model name or GGUF path; default $PT_LLM_MODEL).")
@click.option("--features", "features", multiple=True, metavar="A,B",
              help="Cargo features to check with (every cargo check and rust-analyzer); repeatable or comma-separated.")
@click.option("--all-features", is_flag=True, help="Check with every feature of the crates.")
@click.option("--no-default-features", is_flag=True, help="Check without the default features.")
@click.option("--json", "as_json", is_flag=True, help="The whole run as one JSON document on stdout.")
@click.pass_obj
def fix_cmd(c, seed, yes, dry_run, max_rounds, max_candidates, allow_signature_change, partial, llm, model,
            features, all_features, no_default_features, as_json) -> None:
    """Find the errors of SEED's crate, try rustc's suggestions and the fix patterns (then an LLM,
    when configured), prove each candidate compiles in a mirror, and apply the best one."""
    from ..adapters import llm as llm_adapter
    from .fix import FixOptions, run_fix

    try:
        cfg = llm_adapter.config_from_env(provider=None if llm == "auto" else llm, model=model)
    except llm_adapter.LlmError as exc:
        raise UsageError(str(exc)) from None
    opts = FixOptions(seed=seed, dry_run=dry_run, max_rounds=max_rounds or -1, max_candidates=max_candidates or -1,
                      allow_signature_change=allow_signature_change, partial=partial,
                      llm=None if cfg.provider == "none" else cfg,
                      features=sorted({f for arg in features for f in arg.replace(",", " ").split()}),
                      all_features=all_features, no_default_features=no_default_features)
    from .dobby import hooks
    from .fix import FixReport

    # A running Dobby runs it (warm graph and mirror) unless approval must be asked here.
    asks = not (yes or dry_run) and sys.stdin.isatty()
    remote = None if asks else hooks.fix(c, {k: v for k, v in vars(opts).items() if k != "llm"}, yes, opts.llm)
    if remote is not None:
        rep = FixReport(**remote)
    else:
        with c.open() as pt:
            rep = run_fix(pt, opts, approver(yes, as_json), progress=echo_err)
    if as_json:
        emit(rep.as_dict(), True)
    else:
        _print(rep)
    if rep.outcome not in ("fixed", "would-fix", "no-errors"):  # not-compiled too: nothing was checked
        raise SystemExit(1)


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _print(rep) -> None:
    for w in rep.warnings:
        echo_err(f"warning: {w}")
    n = len(rep.errors_before)
    if rep.outcome == "no-errors":
        click.echo(f"{rep.seed}: no errors in the crate and targets it belongs to; nothing to fix")
        return
    if rep.outcome == "not-compiled":
        click.echo(f"{rep.seed}: no errors, but the check did not compile all of it:")
        for g in rep.needs_features:
            click.echo(f"  {', '.join(g['items'])}: only with feature `{g['feature']}`")
        need = ",".join(g["feature"] for g in rep.needs_features)
        click.echo(f"run again with --features {need} (or --all-features) to check it")
        return
    chain = [r for r in rep.rounds if r["champion"]]
    if rep.diff:  # a change was offered: its diff, then what each round contributed to it
        click.echo(rep.diff, nl=False)
        for r in chain:
            ch = r["champion"]
            click.echo(f"  round {r['round']}: {ch['pattern'].removeprefix('patterns.')}: {ch['note']}"
                       f"{_signature(ch)}")
    if rep.outcome == "fixed":
        click.echo(f"fixed {_n(n, 'error')} in {_n(len(chain), 'round')}: change "
                   f"{rep.change_id} ({', '.join(f['path'] for f in rep.written)}); undo with: pt undo {rep.change_id}")
    elif rep.outcome == "would-fix":
        click.echo(f"dry run: this change fixes {_n(n, 'error')} and passed PreFlight; nothing written")
    elif rep.outcome == "partial":
        click.echo(f"partial: {len(rep.errors_left)} of {_n(n, 'error')} remain" + ("; nothing written" if not rep.change_id else ""))
    elif rep.outcome == "not-approved":
        click.echo("a fix passed PreFlight but was not approved; nothing written (pass --yes to apply without asking)")
    else:
        _print_no_safe_fix(rep, chain)


def _print_no_safe_fix(rep, chain: list) -> None:
    tried = sum(len(r["candidates"]) for r in rep.rounds)
    if chain:  # rounds kept changes, but errors remain: say so, and that none of it was written
        left = len(rep.errors_left)
        click.echo(f"candidates removed {len(rep.errors_before) - left} of {_n(len(rep.errors_before), 'error')} "
                   f"but {left} remain; nothing written (--partial applies such a change):")
        for r in chain:
            ch = r["champion"]
            click.echo(f"  not applied: round {r['round']}: {ch['pattern'].removeprefix('patterns.')}: {ch['note']}")
    sig = [c for r in rep.rounds for c in r["candidates"] if c["signature_change"] and c["errors_after"] < c["errors_before"]
           and c["new_errors"] == 0]
    if sig:
        click.echo(f"note: {_n(len(sig), 'candidate')} would fix errors by changing the signature of a "
                   f"pub item ({sig[0]['note'][:60]}); rerun with --allow-signature-change to accept that")
    click.echo(f"no safe fix found ({_n(tried, 'candidate')} tried); nothing written. The errors, per interface:")
    shown: set = set()
    for e in rep.explanation:
        if e["node_id"]:  # (none in a file an earlier round edited: the graph knows the file on disk)
            click.echo(f"  {e['node_id']}  [{e['kind'] or '-'}] {e['signature'][:80]}")
        click.echo(f"    {e['file_path']}:{e['line']}: error[{e['code']}]: {e['message']}")
        # rustc repeats the same help under every error it applies to: each note once, whole
        new = [note for note in dict.fromkeys(e["notes"]) if note not in shown]
        for note in new[:3]:
            click.echo(f"      = {_one_line(note)}")
        shown.update(e["notes"])


_SIGNATURE = {"free": "not a public API", "restored": "restores the signature at git HEAD",
              "broken": "the signature itself carried the error",
              "needs-flag": "a public signature change, allowed by --allow-signature-change"}


def _signature(row: dict) -> str:
    """Why a champion that changes a signature may (rules/fix/_signature_policy.cozo)."""
    verdicts = row.get("signature") or []
    return f" [signature changed: {'; '.join(_SIGNATURE.get(v, v) for v in verdicts)}]" if verdicts else ""


def _one_line(text: str, width: int = 160) -> str:
    """A note on one line, cut at a word boundary when it is long."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[:width].rsplit(" ", 1)[0] + " ..."
