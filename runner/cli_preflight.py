"""`pt preflight`, `pt apply`, `pt undo`: the gate and the single write surface on the command line.

Registered on the main group by one line at the end of runner/cli.py (`register(cli)`), so this
module never imports runner.cli (that would be circular); commands get the `Ctx` as click's obj.
Exit codes as everywhere: 0 passed/applied/undone, 1 the gate failed or approval was refused,
2 bad input (a patch that does not apply, an unknown node, not a workspace), 3 internal error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import UsageError
from .output import echo_err, emit


def _read_input(path: str, what: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _edits_from(node: str | None, code: str | None, delete: bool, edits: str | None, diff: str | None):
    """Exactly one way to say what the candidate is."""
    from .candidate import NodeEdit

    given = sum(x is not None and x is not False for x in (diff, node, edits))
    if given != 1:
        raise UsageError("say what to check: --diff PATCH, or --node ID with --code FILE (or --delete), or --edits JSON")
    if node is not None:
        if delete == (code is not None):
            raise UsageError("--node needs exactly one of --code FILE and --delete")
        if delete:
            return [NodeEdit(node, "Delete")]
        try:
            text = _read_input(code, "code file").decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{code} is not UTF-8") from None
        return [NodeEdit(node, "Edit", text)]
    if edits is not None:
        try:
            items = json.loads(_read_input(edits, "edits file"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"--edits: not valid JSON ({exc})") from None
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
            raise UsageError('--edits must be a JSON list of {"id", "action", "code", "after" or "file"} objects')
        out = []
        for i in items:
            unknown = set(i) - {"id", "action", "code", "after", "file"}
            if unknown:
                raise UsageError(f"--edits: unknown key {sorted(unknown)[0]!r} in the edit of {i['id']}")
            out.append(NodeEdit(i["id"], i.get("action", "Edit"), i.get("code", ""), i.get("after"), i.get("file")))
        return out
    return None


def _print_report(rep) -> None:
    n_files, n_nodes = len(rep.files), len(rep.nodes)
    click.echo(f"candidate {rep.candidate_id[:16]} ({n_files} file{'s' * (n_files != 1)}, "
               f"{n_nodes} node{'s' * (n_nodes != 1)}): {rep.verdict.upper()}")
    def n(count: int, what: str) -> str:
        return f"{count} {what}{'' if count == 1 else 's'}"

    for s in rep.stages:
        errors = sum(1 for d in rep.diagnostics if d["stage"] == s.stage and d["severity"] == "error")
        click.echo(f"  {s.stage:<6} {'passed' if s.passed else 'FAILED':<7} {n(errors, 'error')} ({s.new_errors} new), "
                   f"{n(s.new_warnings, 'new warning')} ({s.elapsed_ms / 1000:.2f}s)" + (f"  {s.note}" if s.note else ""))
    for s in rep.missing_stages:
        click.echo(f"  {s:<6} did not run")
    if rep.verdict != "passed":
        # per node, what broke (new diagnostics first; known ones are listed for context)
        by_node: dict[str, list] = {}
        for d in rep.diagnostics:
            by_node.setdefault(d["node_id"] or "(no node)", []).append(d)
        for node, ds in sorted(by_node.items()):
            click.echo(f"  {node}")
            for d in sorted(ds, key=lambda d: (not d["is_new"], d["stage"], d["seq"])):
                code = f"[{d['code']}]" if d["code"] else ""
                where = f"{d['file_path']}:{d['line']}:{d['col']}" if d["file_path"] else "-"
                click.echo(f"    {d['severity']}{code} {where} {d['message']}" + ("" if d["is_new"] else "  (baseline)"))
    for w in rep.warnings:
        echo_err(f"pt: warning: {w}")


def approver(yes: bool, as_json: bool):
    def approve(diff: str) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        click.echo(diff, nl=False, err=as_json)
        return click.confirm("Apply this change?", default=False, err=as_json)

    return approve


@click.command("preflight")
@click.option("--diff", "diff_path", metavar="PATCH", help="A unified diff relative to the workspace root ('-' reads stdin).")
@click.option("--node", metavar="ID", help="A node id whose code the candidate replaces.")
@click.option("--code", metavar="FILE", help="The node's new code ('-' reads stdin).")
@click.option("--delete", is_flag=True, help="The candidate deletes the node.")
@click.option("--edits", metavar="JSON", help='A file with [{"id", "action": Edit|Delete|Create, "code", "after"|"file"}, ...].')
@click.option("--apply", "then_apply", is_flag=True, help="Apply the candidate if it passes (asks first unless --yes).")
@click.option("--yes", is_flag=True, help="With --apply: do not ask.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def preflight_cmd(c, diff_path, node, code, delete, edits, then_apply, yes, as_json) -> None:
    """Prove a candidate compiles in a mirror of the workspace; the workspace itself is never written.
    Exit 0 when it passes, 1 when it fails (diagnostics per node), 2 for bad input."""
    from .apply import apply_candidate
    from .candidate import build_from_diff, build_from_nodes
    from .preflight import run_preflight

    node_edits = _edits_from(node, code, delete, edits, diff_path)
    with c.open() as pt:
        cand = build_from_diff(pt, _read_input(diff_path, "patch")) if diff_path else build_from_nodes(pt, node_edits)
        rep = run_preflight(pt, cand)
        applied = None
        if then_apply and rep.verdict == "passed":
            applied = apply_candidate(pt, rep.candidate_id, approver(yes, as_json))
    if as_json:
        emit({**rep.as_dict(), **({"applied": applied.as_dict()} if applied else {})}, True)
    else:
        _print_report(rep)
        if rep.verdict == "passed" and not applied:
            click.echo(f"apply with: pt apply {rep.candidate_id[:16]}")
        if applied:
            click.echo(f"applied as change {applied.change_id} ({', '.join(f['path'] for f in applied.files)}); "
                       f"undo with: pt undo {applied.change_id}")
    if rep.verdict != "passed":
        raise SystemExit(1)


def _resolve_candidate(pt, prefix: str | None) -> str | None:
    """A candidate id or a unique prefix of one (the text output shows 16 characters)."""
    if not prefix:
        return None
    from .flows import flow

    ids = [r["candidate_id"] for r in flow("preflight").query(pt, "latest", limit=100000) if r["candidate_id"].startswith(prefix)]
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise UsageError(f"unknown candidate {prefix!r} (see `pt query preflight.latest`)")
    raise UsageError(f"candidate prefix {prefix!r} is ambiguous ({len(ids)} candidates)")


@click.command("apply")
@click.argument("candidate", required=False)
@click.option("--yes", is_flag=True, help="Apply without asking (for scripts).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def apply_cmd(c, candidate: str | None, yes: bool, as_json: bool) -> None:
    """Show the diff of CANDIDATE (default: the newest that passed PreFlight) and, once approved,
    write its files atomically; refused if any file changed since the candidate was built."""
    from .apply import apply_candidate

    with c.open() as pt:
        rep = apply_candidate(pt, _resolve_candidate(pt, candidate), approver(yes, as_json))
    if as_json:
        emit(rep.as_dict(), True)
    else:
        click.echo(f"applied candidate {rep.candidate_id[:16]} as change {rep.change_id}: "
                   f"{', '.join(f['path'] + ' (' + f['action'] + ')' for f in rep.files)}")
        click.echo(f"undo with: pt undo {rep.change_id}")


@click.command("undo")
@click.argument("change", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def undo_cmd(c, change: str | None, as_json: bool) -> None:
    """Restore the exact bytes CHANGE (default: the newest applied change not undone) replaced;
    refused if a file changed since the change was applied."""
    from .apply import undo_change

    with c.open() as pt:
        rep = undo_change(pt, change)
    if as_json:
        emit(rep.as_dict(), True)
    else:
        click.echo(f"undid change {rep.change_id}: "
                   f"{', '.join(f['path'] + ' (' + f['action'] + ')' for f in rep.files)}")


def register(cli: click.Group) -> None:
    for cmd in (preflight_cmd, apply_cmd, undo_cmd):
        cli.add_command(cmd)


