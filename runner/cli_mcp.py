"""`pt mcp`: serve pt's tools to an agent over MCP stdio (the server is runner/mcp_server.py).

Registered in runner/cli.py with `cli.add_command(mcp)`. stdout carries the protocol only; pt's
logs go to stderr.
"""
from __future__ import annotations

import click


@click.command("mcp")
@click.pass_obj
def mcp(c) -> None:
    """Serve pt's tools (status, ingest, query, two_hop, context, diagnose, fix, propose, apply,
    undo) over MCP on stdin/stdout, for Claude Code and other MCP clients. The workspace is -C DIR
    or the working directory; tools may name directories inside it, never outside."""
    from .mcp_server import serve

    serve(c.workspace, c.db)
