"""`pt`: the click front end. Results go to stdout, logs and progress to stderr.

Exit codes: 0 ok, 1 a gate or golden check failed, 2 bad usage or bad input, 3 internal error,
4 the graph was busy (another process writing it) for longer than the wait (PT_LOCK_WAIT).
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from . import programs as P
from ..adapters.store import StoreError
from .api import Pt, compile_program, default_db, find_workspace, store_error, workspace_path
from .errors import GateFailed, InternalError, PtError, UsageError
from .flows import check as check_flows
from .output import echo_err, emit, warn_unknown


class Ctx:
    def __init__(self, workspace: str | None, db: str | None):
        self.workspace_arg = workspace
        self.db = db

    @property
    def workspace(self) -> Path:
        # -C names the root itself; only without it is the root looked for upwards from the cwd
        return find_workspace(self.workspace_arg, walk=self.workspace_arg is None)

    def paths(self, args: tuple[str, ...]) -> list[str]:
        """PATH arguments as workspace-relative paths ("" = the root); one outside is refused."""
        ws = self.workspace
        return [workspace_path(ws, a) for a in args]

    def open(self, init: bool = True, create: bool = True) -> Pt:
        """`create=False` for read-only commands: a missing graph is NoGraph, nothing is made."""
        return Pt.open(self.workspace, self.db, init=init, create=create)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "--workspace", metavar="DIR", help="Workspace root (default: nearest with .parseltongue/, else cwd).")
@click.option("--db", metavar="PATH", help="Graph database: a sqlite file or `mem` (default $PT_DB or .parseltongue/graph.db).")
@click.version_option(package_name="parseltongue", prog_name="pt")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, db: str | None) -> None:
    """Parseltongue: an interface graph of a cargo workspace, and safe minimal fixes."""
    if workspace and not Path(workspace).is_dir():
        raise UsageError(f"workspace {workspace} is not a directory")
    ctx.obj = Ctx(workspace, db)


# ------------------------------------------------------------------ init / status

@cli.command()
@click.option("--rebuild", is_flag=True,
              help="Start a new, empty database; the old file (damaged, say) is kept as FILE.bak.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_ctx
def init(c: Ctx, rebuild: bool, as_json: bool) -> None:
    """Create the graph database, or migrate it to this pt's schema (idempotent)."""
    if rebuild:
        _set_aside(c.db or default_db(c.workspace))
    with c.open(init=False) as pt:
        before = pt.current_rev()
        if before > pt.latest_rev():
            raise UsageError(f"database schema rev {before} is newer than this pt (rev {pt.latest_rev()})")
        applied = pt.migrate()
        doc = {"workspace": str(pt.workspace), "db": pt.store.path or "mem", "schema_rev_before": before,
               "schema_rev": pt.current_rev(), "applied": applied}
    if as_json:
        emit(doc, True)
    elif applied:
        click.echo(f"initialised {doc['db']} (schema rev {before} -> {doc['schema_rev']}: {', '.join(applied)})")
    else:
        click.echo(f"{doc['db']} is up to date (schema rev {doc['schema_rev']})")


def _set_aside(db: str) -> None:
    """`pt init --rebuild`: the database file (and its sqlite side files) renamed to *.bak."""
    if db == "mem" or not Path(db).exists():
        return
    for suffix in ("", "-wal", "-shm"):
        if Path(db + suffix).exists():
            os.replace(db + suffix, db + ".bak" + suffix)
    echo_err(f"pt: the old database is now {db}.bak")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_ctx
def status(c: Ctx, as_json: bool) -> None:
    """Schema revision and row counts of the graph."""
    from .watch import stale_files

    with c.open(create=False) as pt:
        if pt.missing:
            if as_json:
                emit({"workspace": str(pt.workspace), "db": None, "schema_rev": 0, "rows": {}, "note": pt.missing}, True)
            else:
                click.echo(f"workspace  {pt.workspace}\n{pt.missing}")
            return
        counts = {r["relation"]: r["rows"] for r in pt.query("meta.status")}
        stale = stale_files(pt)
        doc = {"workspace": str(pt.workspace), "db": pt.store.path or "mem", "engine": pt.store.engine,
               "schema_rev": pt.current_rev(), "rows": dict(sorted(counts.items())),
               "stale_files": {k: len(v) for k, v in stale.items()}}
    if as_json:
        emit(doc, True)
        return
    click.echo(f"workspace  {doc['workspace']}\ndatabase   {doc['db']} ({doc['engine']}, schema rev {doc['schema_rev']})")
    for rel, n in doc["rows"].items():
        click.echo(f"  {rel:<20} {n:>9}")
    st = doc["stale_files"]
    click.echo(f"stale files: {sum(st.values())} ({st['new']} new, {st['changed']} changed, {st['deleted']} deleted)"
               + ("; run `pt ingest`" if sum(st.values()) else ""))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_ctx
def doctor(c: Ctx, as_json: bool) -> None:
    """Check cargo, rustc, rust-analyzer and the database; say what to do about what is missing."""
    from .doctor import run_checks

    checks = run_checks(c)
    if as_json:
        emit({"checks": checks, "ok": all(ch["ok"] or not ch["required"] for ch in checks)}, True)
    else:
        for ch in checks:
            mark = "ok " if ch["ok"] else ("ERR" if ch["required"] else "-- ")
            click.echo(f"[{mark}] {ch['name']:<14} {ch['detail']}")
            if not ch["ok"] and ch.get("fix"):
                click.echo(f"      {'':<14} fix: {ch['fix']}")
    if not all(ch["ok"] or not ch["required"] for ch in checks):
        raise SystemExit(1)


# ------------------------------------------------------------------ ingest / watch

@cli.command("ingest")
@click.argument("paths", nargs=-1)
@click.option("--no-cargo", is_flag=True, help="Not a cargo workspace: ingest .rs files by path alone.")
@click.option("-j", "--jobs", type=int, default=None, help="Parser processes (default: all cores).")
@click.option("--hydrate", "with_hydrate", is_flag=True, help="Then add rust-analyzer facts to the changed files (as `pt hydrate`).")
@click.option("--ray-address", metavar="ADDR", help="Parse on this Ray cluster (`ray start --head ...`); the graph is written here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_ctx
def ingest_cmd(c: Ctx, paths: tuple, no_cargo: bool, jobs: int | None, with_hydrate: bool, ray_address: str | None,
               as_json: bool) -> None:
    """Bring the graph up to date with the workspace (or just PATHS); unchanged files are skipped."""
    from .dobby import hooks
    from .dobby.ingest_ray import cluster
    from . import text_index
    from .ingest import IngestReport, ingest

    rels = c.paths(paths)
    remote = None if ray_address else hooks.ingest(c, rels, no_cargo, jobs, with_hydrate)
    if remote is not None:  # a running Dobby did it (its writer, its warm graph and rust-analyzer)
        hydrated = None
        if with_hydrate:  # (imported only then: the LSP types take ~0.5 s to import)
            from .hydrate import HydrateReport

            hydrated = HydrateReport.from_dict(remote.pop("hydrate"))
        report = IngestReport(**remote)
        if hydrated:
            _hydrate_notes(hydrated)
    else:
        with c.open() as pt, cluster(ray_address) as parse_map:
            report = ingest(pt.workspace, pt.store, paths=rels or None, use_cargo=not no_cargo,
                            progress=sys.stderr.isatty() and not as_json, jobs=jobs, parse_map=parse_map)
            hydrated = _hydrate(pt, rels, None, as_json) if with_hydrate else None
            ws, db = pt.workspace, pt.store.path
        # (started once the graph is closed here: alone with the file, the build can use the
        # rollback journal, a third faster than WAL for it)
        if report.text_index == "deferred" and db and text_index.start(ws, db):
            report.text_index = "background"  # a child process builds it; a search waits for it
    for rel, why in report.files_skipped:
        echo_err(f"pt: skipped {rel}: {why}")
    if as_json:
        emit({**report.as_dict(), **({"hydrate": hydrated.as_dict()} if hydrated else {})}, True)
        return
    click.echo(f"{report.files_total} files: {report.files_parsed} parsed, {report.files_unchanged} unchanged, "
               f"{report.files_removed} removed, {len(report.files_skipped)} skipped; "
               f"{report.nodes} nodes, {report.edges} edges in {report.elapsed_s:.2f}s")
    if hydrated:
        click.echo(hydrated.summary())


@cli.command("text-index")
@click.option("--lock-fd", type=int, default=None, hidden=True)  # `pt ingest` hands its child the lock
@pass_ctx
def text_index_cmd(c: Ctx, lock_fd: int | None) -> None:
    """Build the full-text index a large ingest deferred (`pt ingest` starts this in the
    background; `pt query` answers meanwhile from what is built, other readers wait for it);
    nothing to do when it is built."""
    from . import text_index

    if lock_fd is not None:  # the background build: the user's own commands come first
        os.nice(10)
    with c.open() as pt:
        text_index.build(pt, notice=lambda msg: echo_err(f"pt: {msg}..."), held=lock_fd)


def _hydrate(pt: Pt, paths: list[str], budget_s: float | None, as_json: bool):
    """Run the hydrate flow; its warnings (analyzer missing or dead, budget) go to stderr as one line."""
    from .hydrate import DEFAULT_BUDGET_S, hydrate

    report = hydrate(pt.workspace, pt.store, paths=paths or None,
                     budget_s=DEFAULT_BUDGET_S if budget_s is None else budget_s,
                     progress=sys.stderr.isatty() and not as_json)
    _hydrate_notes(report)
    return report


def _hydrate_notes(report) -> None:
    for rel, why in report.files_skipped:
        echo_err(f"pt: hydrate skipped {rel}: {why}")
    if report.warning:
        echo_err(f"pt: warning: {report.warning}")


@cli.command("hydrate")
@click.argument("paths", nargs=-1)
@click.option("--budget-s", type=float, default=None, metavar="N",
              help="Stop after N seconds (default 300; 0 = no limit); files not reached keep heuristic facts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_ctx
def hydrate_cmd(c: Ctx, paths: tuple, budget_s: float | None, as_json: bool) -> None:
    """Add rust-analyzer facts (signatures, resolved calls, diagnostics, macro items) to the files
    changed since they were last hydrated (or just those among PATHS)."""
    from .dobby import hooks
    from .hydrate import HydrateReport

    rels = c.paths(paths)
    remote = hooks.hydrate(c, rels, budget_s)  # a running Dobby: its writer, its warm rust-analyzer
    if remote is not None:
        report = HydrateReport.from_dict(remote)
        _hydrate_notes(report)
    else:
        with c.open() as pt:
            report = _hydrate(pt, rels, budget_s, as_json)
    if as_json:
        emit(report.as_dict(), True)
    else:
        click.echo(report.summary())


@cli.command()
@click.option("--no-cargo", is_flag=True, help="Not a cargo workspace: watch .rs files by path alone.")
@click.option("--debounce", type=float, default=0.3, show_default=True, help="Seconds of quiet before re-ingesting.")
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between scans.")
@pass_ctx
def watch(c: Ctx, no_cargo: bool, debounce: float, interval: float) -> None:
    """Keep the graph current until interrupted (Ctrl-C)."""
    from .watch import watch_workspace

    with c.open() as pt:
        watch_workspace(pt, use_cargo=not no_cargo, debounce=debounce, interval=interval)


# ------------------------------------------------------------------ programs

@cli.group()
def rules() -> None:
    """Inspect rule programs."""


@rules.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_ctx
def rules_ls(c: Ctx, as_json: bool) -> None:
    """List every program with its summary and params."""
    registry = P.Registry(c.workspace)
    registry.check()  # a program that breaks its contract: file:line, exit 2
    progs = [p.describe() for _, p in sorted(registry.all().items())]
    if as_json:
        emit({"programs": progs}, True)
        return
    for p in progs:
        params = " ".join(
            f"{n}{'' if spec['required'] else '?'}:{spec['type']}"
            + ("{" + "|".join(map(str, spec["enum"])) + "}" if "enum" in spec else "") for n, spec in p["params"].items())
        ro = "ro" if not p["writes"] else "rw"
        click.echo(f"{p['id']:<34} {ro}  {p['summary']}")
        if params:
            click.echo(f"{'':<38}params: {params}")
        if p.get("codes"):
            click.echo(f"{'':<38}codes: {' '.join(p['codes'])}")


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{what} {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


@cli.command()
@click.argument("name")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A $param (repeatable).")
@click.option("--params-json", metavar="JSON", help="All params as one JSON object.")
@click.option("-v", "--var", "vars_", multiple=True, metavar="KEY=VALUE", help="A Jinja var (identifiers, numbers, booleans, lists).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--wait-index", is_flag=True,
              help="While the full-text index is being built in the background, wait for it instead of "
                   "answering from the files indexed so far.")
@pass_ctx
def query(c: Ctx, name: str, params: tuple, params_json: str | None, vars_: tuple, as_json: bool,
          wait_index: bool) -> None:
    """Run the program NAME (an id like retrieval.two_hop, or a unique suffix like two_hop)."""
    given: dict[str, Any] = _pairs(params, "param")
    from_json: dict[str, Any] = {}
    if params_json:
        try:
            from_json = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--params-json is not valid JSON: {exc.msg}") from None
        if not isinstance(from_json, dict):
            raise UsageError("--params-json must be a JSON object")
    vars_d = {k: P.parse_cli_var(v) for k, v in _pairs(vars_, "var").items()}
    from ..adapters.store import Result
    from .dobby import hooks

    prog = P.Registry(c.workspace).get(name)
    remote = hooks.query(c, name, given, from_json, vars_d)  # a running Dobby's warm worker, if any
    partial = None
    if remote is not None:
        prog_id, res = remote["program"], Result(remote["headers"], remote["rows"])
        warn_unknown(remote.get("unknown_seeds") or [])
    else:
        with c.open(create=not prog.read_only) as pt:  # a read-only program creates nothing
            # CLI strings are coerced by declared type; JSON values must already have the right type.
            merged = {**P.coerce_cli_params(prog, given), **from_json}
            pt.wait_for_text = wait_index
            prog_id, res = prog.id, pt.run(prog.id, merged, vars_d)
            partial = pt.text_partial
            if isinstance(merged.get("seeds"), list):  # node ids by convention (two_hop, context, ...)
                warn_unknown(pt.unknown_seeds(merged["seeds"]))
            if pt.missing:
                echo_err(f"pt: note: {pt.missing}; answered from an empty graph")
    if partial is not None:  # answered from the part of the full-text index built so far
        done, total = partial["files_done"], partial["files_total"]
        echo_err(f"pt: note: the full-text index is being built in the background ({done} of {total or '?'} "
                 f"files so far): text hits cover those files only; --wait-index waits for all of it")
    if as_json:
        doc = {"program": prog_id, "headers": res.headers, "rows": res.dicts()}
        if partial is not None:
            doc["text_index"] = {"complete": False, **partial}
        emit(doc, True)
    else:
        emit(res, False)


@cli.command("compile")
@click.argument("name")
@click.option("-v", "--var", "vars_", multiple=True, metavar="KEY=VALUE")
@pass_ctx
def compile_cmd(c: Ctx, name: str, vars_: tuple) -> None:
    """Render NAME and write it to .parseltongue/target/compiled/ID.cozo (path on stdout)."""
    vars_d = {k: P.parse_cli_var(v) for k, v in _pairs(vars_, "var").items()}
    _, _, out = compile_program(c.workspace, P.Registry(c.workspace), name, vars_d)
    click.echo(str(out))


@cli.command("test")
@click.argument("path", required=False)
@click.option("--update", is_flag=True, help="Rewrite .expected files from the actual output.")
@click.option("--engine", type=click.Choice(["mem", "sqlite"]), default="mem", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def test_cmd(c: Ctx, path: str | None, update: bool, engine: str, as_json: bool) -> None:
    """Run golden cases (all, or those under PATH / of a program id)."""
    from . import golden as G  # (here: the other commands do without its imports)

    registry = P.Registry(c.workspace)
    registry.check()  # every program's contract (file:line, exit 2)
    bad_steps = check_flows(registry)  # every declared flow step names such a program
    if bad_steps:
        raise UsageError("\n".join(bad_steps))
    roots = [r for r in (G.GOLDEN_ROOT, c.workspace / ".parseltongue" / "golden") if r.is_dir()]
    only = path
    if path and Path(path).is_dir():
        roots, only = [Path(path).resolve()], None
        # a directory below a golden root: its program id prefix is the relative path
        for r in (G.GOLDEN_ROOT, c.workspace / ".parseltongue" / "golden"):
            if r.is_dir() and Path(path).resolve().is_relative_to(r.resolve()):
                rel = Path(path).resolve().relative_to(r.resolve())
                roots, only = [r], ".".join(rel.parts) or None
    cases = [case for r in roots for case in G.discover(r, registry.all(), only)]
    if not cases:
        raise UsageError(f"no golden cases found{' for ' + path if path else ''}")
    registry.check(deep=sorted({case.program for case in cases}))  # and the rendered text of those tested
    outcomes = G.run_all(cases, engine, update, G.default_fixture_loader(), registry)
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        emit({"engine": engine, "cases": len(outcomes), "failed": [
            {"case": o.case.label, "message": o.message, "actual": str(o.case.actual_path)} for o in failed]}, True)
    else:
        for o in outcomes:
            echo_err(f"{'ok  ' if o.ok else 'FAIL'} {o.case.label}" + (f"  ({o.message})" if o.message else ""))
        click.echo(f"{len(outcomes) - len(failed)}/{len(outcomes)} golden cases passed on {engine}"
                   + (" (expected files updated)" if update else ""))
    if failed:
        raise GateFailed(f"{len(failed)} golden case(s) failed; see the .actual files beside them")


# ------------------------------------------------------------------ commands defined elsewhere

from .cli_preflight import register as _register_preflight  # noqa: E402 - needs `cli` defined

_register_preflight(cli)  # pt preflight / apply / undo

from .cli_context import context as _context_cmd  # noqa: E402
from .cli_models import models as _models_group  # noqa: E402

from .cli_fix import run_group as _run_group  # noqa: E402
from .cli_summarize import summarize_cmd as _summarize_cmd  # noqa: E402

cli.add_command(_context_cmd)  # pt context
cli.add_command(_run_group)  # pt run fix
cli.add_command(_models_group)  # pt models ensure / verify / ls / embed
cli.add_command(_summarize_cmd)  # pt summarize

from .cli_mcp import mcp as _mcp_cmd  # noqa: E402

cli.add_command(_mcp_cmd)  # pt mcp

from .dobby.cli import dobby as _dobby_group  # noqa: E402

cli.add_command(_dobby_group)  # pt dobby serve / status / call / ensure-model / verify / shutdown


# ------------------------------------------------------------------ entry point

def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="pt", standalone_mode=False)
    except click.exceptions.Abort:
        echo_err("pt: aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except (PtError, StoreError) as exc:
        exc = store_error(exc, InternalError) if isinstance(exc, StoreError) else exc
        echo_err(f"pt: {'error' if exc.exit_code != 1 else 'failed'}: {exc.message}")
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        echo_err("pt: interrupted")
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001 - the promise is no tracebacks, ever
        if os.environ.get("PT_DEBUG"):
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        echo_err(f"pt: internal error: {type(exc).__name__}: {first} (set PT_DEBUG=1 for a traceback)")
        sys.exit(3)


if __name__ == "__main__":  # (`python -m parseltongue.runner.cli`: pt ingest starts `pt text-index` so)
    main()
