"""`pt mcp`: serve pt's tools to an agent over MCP stdio (the server is runner/mcp_server.py), and
`pt mcp hook ...`, the Claude Code plugin's hooks (hooks/hooks.json runs them).

Registered in runner/cli.py with `cli.add_command(mcp)`. Under `pt mcp` stdout carries the
protocol only; pt's logs go to stderr.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from .api import STATE_DIR, default_db, find_workspace, workspace_path
from .errors import PtError, UsageError
from .output import echo_err


@click.group("mcp", invoke_without_command=True)
@click.pass_context
def mcp(ctx: click.Context) -> None:
    """Serve pt's tools (status, ingest, query, two_hop, context, diagnose, fix, propose, apply,
    undo) over MCP on stdin/stdout, for Claude Code and other MCP clients. The workspace is -C DIR
    or the working directory; tools may name directories inside it, never outside."""
    if ctx.invoked_subcommand is None:
        from .mcp_server import serve

        c = ctx.obj
        serve(c.workspace, c.db)


@mcp.group("hook")
def hook() -> None:
    """The Claude Code plugin's hooks: they read the hook's JSON event on stdin."""


def _never_blocking(fn):
    """A hook's failure is one line on stderr and exit 1: Claude Code treats exit 2 as the hook
    blocking the agent, which a stale graph never warrants."""

    @functools.wraps(fn)
    def run(*args, **kw):
        try:
            return fn(*args, **kw)
        except PtError as exc:
            echo_err(f"parseltongue hook: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - no traceback reaches the session
            echo_err(f"parseltongue hook: internal error: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
        sys.exit(1)

    return run


def _event() -> dict:
    """The hook's event; anything unreadable is an empty event (a hook must never block the agent)."""
    try:
        doc = json.loads(sys.stdin.read().strip() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _graph_workspace(c, event: dict) -> Path | None:
    """The workspace of the session, if it already has a graph (hooks never create one)."""
    start = c.workspace_arg or os.environ.get("CLAUDE_PROJECT_DIR") or event.get("cwd") or os.getcwd()
    if not Path(start).is_dir():
        return None
    ws = find_workspace(start, walk=c.workspace_arg is None)
    db = c.db or default_db(ws)
    return ws if db == "mem" or Path(db).is_file() else None


@hook.command("post-edit")
@click.pass_obj
@_never_blocking
def post_edit(c) -> None:
    """After Edit/Write of a .rs file: re-ingest that file (silent on success)."""
    event = _event()
    path = (event.get("tool_input") or {}).get("file_path") or ""
    if not path.endswith(".rs"):
        return
    ws = _graph_workspace(c, event)
    if ws is None:
        return
    try:
        rel = workspace_path(ws, path, cwd=Path(event.get("cwd") or ws))
    except UsageError:
        return  # not this workspace's file
    if rel.split("/", 1)[0] in ("target", STATE_DIR):
        return
    from .api import Pt
    from .ingest import ingest

    with Pt.open(ws, c.db) as pt:
        ingest(pt.workspace, pt.store, paths=[rel])


@hook.command("session-start")
@click.pass_obj
@_never_blocking
def session_start(c) -> None:
    """At session start: one line of `pt status` when the workspace has a graph."""
    ws = _graph_workspace(c, _event())
    if ws is None:
        return
    from .api import Pt
    from .watch import stale_files

    with Pt.open(ws, c.db) as pt:
        rows = {r["relation"]: r["rows"] for r in pt.query("meta.status")}
        stale = sum(len(v) for v in stale_files(pt).values())
    click.echo(f"parseltongue: graph of {ws}: {rows.get('isg_nodes', 0)} nodes, {rows.get('isg_edges', 0)} edges, "
               f"{stale} stale file{'s' * (stale != 1)}" + (" (run /parseltongue:ingest)" if stale else ""))
