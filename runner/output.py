"""Rendering results: tables for people, one JSON document for scripts. Logs go to stderr."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

_CELL_MAX = 80


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", "\\n")
    return text if len(text) <= _CELL_MAX else text[: _CELL_MAX - 1] + "…"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    lines = [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells]
    return "\n".join(lines)


def emit(doc: Any, as_json: bool) -> None:
    """A result on stdout: `doc` is a dict (JSON) or a store Result (table)."""
    if as_json:
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
        return
    click.echo(table(doc.headers, doc.rows))
    echo_err(f"({len(doc.rows)} row{'s' if len(doc.rows) != 1 else ''})")
