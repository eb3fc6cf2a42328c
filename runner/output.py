"""Rendering results: tables for people, one JSON document for scripts. Logs and progress go to
stderr. (Plain writes, no click: flows print through here too, and click stays in cli*.)"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

_CELL_MAX = 80


def echo_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_counter(enabled: bool | Callable[[str, int, int], None], total: int,
                     label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """(step, close) for a `label done/total files` line on stderr, redrawn at most every 0.2 s;
    when `enabled` is a callable (the MCP server's progress notifications), it is called with
    (label, done, total) instead."""
    if not enabled or total == 0:
        return lambda n: None, lambda: None
    if callable(enabled):
        done = [0]

        def report(n: int) -> None:
            done[0] += n
            enabled(label, done[0], total)

        return report, lambda: None
    state = {"done": 0, "last": 0.0}

    def step(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        if now - state["last"] > 0.2 or state["done"] == total:
            state["last"] = now
            sys.stderr.write(f"\r{label} {state['done']}/{total} files")
            sys.stderr.flush()

    def close() -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()

    return step, close


def warn_unknown(ids: list[str]) -> None:
    """Seeds the graph does not have, named on stderr (the answer is about the others)."""
    if ids:
        echo_err(f"pt: warning: no node has the id{'s' * (len(ids) > 1)} {', '.join(ids)}; ignored")


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
    print(table(doc.headers, doc.rows))
    echo_err(f"({len(doc.rows)} row{'s' if len(doc.rows) != 1 else ''})")
