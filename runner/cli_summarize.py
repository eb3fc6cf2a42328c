"""`pt summarize [PATHS] [--model NAME] [--budget-s N] [--ray-address ADDR]`: one-line node summaries
(runner/summarize.py).

Registered in runner/cli.py with `cli.add_command(summarize_cmd)`.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click

from ..adapters import models as M
from .api import workspace_path
from .errors import UsageError
from .output import echo_err, emit
from .summarize import Summarizer, eta_line, summarize_changed


@click.command("summarize")
@click.argument("paths", nargs=-1)
@click.option("--model", "model", default=M.DEFAULT_MODEL, show_default=True, metavar="NAME",
              help="A model of the registry (`pt models ls`).")
@click.option("--budget-s", type=click.FloatRange(min=0), default=None, metavar="N",
              help="Stop after N seconds; the rest is summarised on the next run.")
@click.option("--ray-address", metavar="ADDR",
              help="Spread the batches over this Ray cluster (one model worker per node); the graph is written here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def summarize_cmd(c, paths: tuple, model: str, budget_s: float | None, ray_address: str | None,
                  as_json: bool) -> None:
    """One-line summaries of the leaf items under PATHS (all files by default) whose code changed
    since they were last summarised by --model; progress and an ETA on stderr."""
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(done: int, total: int, elapsed: float) -> None:
        if tty:
            sys.stderr.write("\r" + eta_line(done, total, elapsed) + "\033[K")
            sys.stderr.flush()
        elif done == total or time.monotonic() - last[0] >= 10:  # a log line now and then, not a flood
            last[0] = time.monotonic()
            echo_err(eta_line(done, total, elapsed))

    from .dobby import hooks

    rels = [_relative(c.workspace, p) for p in paths]
    # A running Dobby (not asked for a cluster): its model workers, its writer
    report = None if ray_address else hooks.summarize(c, rels, model, budget_s)
    if report is None:
        with c.open() as pt, _summarizer(model, ray_address) as s:
            try:
                report = summarize_changed(pt, s, rels, budget_s, progress=progress)
            finally:
                if tty:
                    sys.stderr.write("\n")
    if as_json:
        emit(report, True)
        return
    st = report["by_status"]
    click.echo(f"{report['summarized']} nodes summarised by {report['model']} in {report['seconds']}s "
               f"({report['nodes_per_s']} nodes/s): {st['ok']} ok, {st['empty']} empty, {st['garbage']} garbage"
               + (f"; {report['left']} left (--budget-s)" if report["left"] else ""))


@contextmanager
def _summarizer(model: str, ray_address: str | None):
    """The model here, or one model worker on each node of the Ray cluster at `ray_address`."""
    if ray_address:
        from .dobby.cluster import cluster_model

        with cluster_model(ray_address, model, "summarising") as m:
            yield m
        return
    try:
        s = Summarizer.load(model)
    except M.ModelUnavailable as exc:
        raise UsageError(str(exc)) from None
    try:
        yield s
    finally:
        s.close()


def _relative(workspace: Path, path: str) -> str:
    """A path argument (read as every command reads one, runner/api.py workspace_path) as the
    prefix the graph stores: posix, a directory with a trailing slash."""
    rel = workspace_path(workspace, path)
    full = workspace / rel
    if not full.exists():
        raise UsageError(f"{path} does not exist in the workspace {workspace}")
    return rel + ("/" if full.is_dir() and rel else "")
