"""How `pt query`, `pt context`, `pt ingest`, `pt hydrate`, `pt run fix`, `pt summarize` and
`pt models embed` use a running Dobby.

Each function returns Dobby's answer, or None when no Dobby answers on the socket (or PT_DOBBY=0,
or the graph is the in-memory `mem`, which another process cannot share): the command then works
in-process exactly as without Dobby. Dobby gets the workspace and the graph file resolved here,
so it serves the same graph the command would have opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..output import echo_err
from .client import running_socket, try_dobby


def _target(ctx) -> dict | None:
    from ..api import default_db

    if running_socket() is None:
        return None
    ws = ctx.workspace
    db = ctx.db or default_db(ws)
    if db == "mem":
        return None
    return {"workspace": str(ws), "db": str(Path(db).resolve())}


def _progress(params: dict) -> None:
    done, total = params.get("done"), params.get("total")
    echo_err(str(params.get("message", "")) + (f" {done}/{total}" if total else ""))


def query(ctx, program: str, cli_params: dict, params: dict, vars: dict) -> dict | None:
    target = _target(ctx)
    if target is None:
        return None
    return try_dobby("query", {**target, "program": program, "cli_params": cli_params, "params": params,
                               "vars": vars})


def context(ctx, seeds: list, budget: int, query_text: str) -> dict | None:
    target = _target(ctx)
    if target is None:
        return None
    return try_dobby("context", {**target, "seeds": seeds, "budget": budget, "query": query_text})


def ingest(ctx, paths: list, no_cargo: bool, jobs: int | None, hydrate: bool = False) -> dict | None:
    """`hydrate`: then hydrate as `pt hydrate` (the result's "hydrate" holds its report)."""
    target = _target(ctx)
    if target is None:
        return None
    return try_dobby("ingest", {**target, "paths": paths or None, "no_cargo": no_cargo, "jobs": jobs,
                                "hydrate": hydrate}, on_progress=_progress)


def hydrate(ctx, paths: list, budget_s: float | None) -> dict | None:
    """`pt hydrate`: Dobby's writer writes, its rust-analyzer worker's warm session answers."""
    target = _target(ctx)
    if target is None:
        return None
    return try_dobby("hydrate", {**target, "paths": paths or None, "budget_s": budget_s}, on_progress=_progress)


def fix(ctx, options: dict, yes: bool, llm: Any) -> dict | None:
    """`llm` is the client's LlmConfig (or None): the key and model the user's environment names."""
    from dataclasses import asdict

    target = _target(ctx)
    if target is None:
        return None
    seed = Path(options["seed"])
    if not seed.is_absolute() and seed.exists():  # relative to this cwd, not Dobby's
        options = {**options, "seed": str(seed.resolve())}
    return try_dobby("fix", {**target, "options": options, "yes": yes, "llm": asdict(llm) if llm else None},
                     on_progress=_progress)


def summarize(ctx, paths: list, model: str, budget_s: float | None) -> dict | None:
    """`pt summarize`: Dobby's writer stores, its model workers answer (the report as in-process)."""
    target = _target(ctx)
    if target is None:
        return None
    return try_dobby("summarize", {**target, "paths": paths, "model": model, "budget_s": budget_s},
                     on_progress=_progress)


def embed(ctx, model: str, batch: int) -> dict | None:
    """`pt models embed`: Dobby's writer stores, its model workers encode."""
    target = _target(ctx)
    if target is None:
        return None
    return try_dobby("embed_nodes", {**target, "model": model, "batch": batch}, on_progress=_progress)
