"""`pt mcp`: pt's tools for an agent, served over MCP stdio (the official `mcp` SDK, 2.x).

Inside Claude Code the agent is the reasoner; pt supplies seeds (`pt_diagnose`), context
(`pt_two_hop`, `pt_context`), its deterministic fix (`pt_fix`) and proves whatever the agent
proposes (`pt_propose`) before anything touches the tree; only a candidate that passed is written
(`pt_apply`, with an explicit `confirm`), and every write can be undone (`pt_undo`).

Every tool opens the workspace's graph for the call and closes it after, so the CLI, the hooks
and a watcher can share the sqlite store with a long-lived server. The workspace is the server's
(its working directory or `pt -C DIR mcp`); a `workspace` argument may name a directory inside
it, never outside. A failure is an MCP tool error whose text is pt's one-line message.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from .api import Pt, default_db, workspace_path
from .errors import GateFailed, PtError, UsageError

INSTRUCTIONS = """\
Parseltongue (pt) keeps an interface graph of this cargo workspace and proves Rust edits compile
before they touch the tree. To fix a compile error: pt_diagnose (the errors per interface), then
pt_fix (pt's deterministic fix, dry run). If it finds no safe fix, gather context with
pt_two_hop / pt_context, propose node-addressed edits with pt_propose (never edit .rs files
directly while fixing), iterate on its diagnostics, show the user the proven diff and call
pt_apply with confirm: true only after they agree. pt_undo reverts an applied change."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITES_GRAPH = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITES_TREE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

Workspace = Annotated[str | None, Field(
    description="A directory inside the server's workspace (default: the server's workspace itself).")]


# ------------------------------------------------------------------ results (their JSON schemas are the tools' output schemas)

class StatusResult(BaseModel):
    workspace: str
    db: str
    graph: bool = Field(description="Whether a graph database exists (false: run pt_ingest).")
    schema_rev: int = 0
    rows: dict[str, int] = Field(default_factory=dict, description="Rows per relation.")
    stale_files: dict[str, int] = Field(default_factory=dict, description="new / changed / deleted files since the last ingest.")
    checks: list[dict[str, Any]] = Field(default_factory=list, description="With checks: what `pt doctor` checks, and whether the orchestrator (Dobby) runs (name, ok, detail, fix, required).")
    models: list[dict[str, Any]] = Field(default_factory=list, description="With checks: the local models pt knows (`pt models ls`); all optional.")


class IngestResult(BaseModel):
    files_total: int
    files_parsed: int
    files_unchanged: int
    files_removed: int
    files_skipped: list[list[str]] = Field(description="[path, reason] of files that could not be read.")
    nodes: int
    edges: int
    elapsed_s: float


class QueryResult(BaseModel):
    program: str
    headers: list[str]
    rows: list[dict[str, Any]]
    total_rows: int = Field(description="Rows the program returned; rows holds at most `limit` of them.")


class TwoHopResult(BaseModel):
    seeds: list[str] = Field(description="The seed node ids (FILE:LINE seeds resolved).")
    nodes: list[dict[str, Any]] = Field(description="Rows of retrieval.two_hop: id, hop, via, edge_kind, direction, kind, name, file_path, line_start, ...")


class ContextResult(BaseModel):
    seeds: list[str]
    budget_tokens: int
    tokens: int
    nodes: list[dict[str, Any]] = Field(description="Ranked nodes with their code, cut to the budget.")
    text: str = Field(description="The pack as a model reads it, between START/END beacons.")


class DiagnosedError(BaseModel):
    node_id: str = Field(description="The innermost interface the error falls in ('' when none).")
    kind: str
    signature: str
    file_path: str
    line: int
    col: int
    code: str
    severity: str
    message: str
    notes: list[str] = Field(description="rustc's notes and help, in order.")
    suggestions: list[dict[str, Any]] = Field(description="rustc's suggested replacements (text -> replacement, applicability).")


class DiagnoseResult(BaseModel):
    file: str = Field(description="The file whose crate was checked.")
    errors: list[DiagnosedError]
    crate_errors: int = Field(description="Errors in the whole checked crate (errors lists only the file's unless all_files).")


class FixResult(BaseModel):
    outcome: str = Field(description="would-fix | partial | fixed | no-errors | no-safe-fix | not-approved")
    diff: str = Field(description="The proven change as a unified diff ('' when none).")
    candidate_id: str = Field(description="Pass to pt_apply (with confirm: true) to write the change.")
    change_id: str = Field(description="Set when the fix was applied (dry_run: false); pt_undo takes it.")
    errors_before: list[dict[str, Any]]
    errors_left: list[dict[str, Any]]
    explanation: list[dict[str, Any]] = Field(description="When nothing is safe: the errors per interface.")
    warnings: list[str]


class ProposeResult(BaseModel):
    verdict: Literal["passed", "failed"] = Field(description="passed: compiles with no new errors (PreFlight); the tree is never written.")
    candidate_id: str = Field(description="Pass to pt_apply (with confirm: true) when the verdict is passed.")
    diff: str
    errors_after: int = Field(description="Errors left in the checked crates with the edits in place (0: fixed).")
    new_errors: int = Field(description="Errors the edits introduced.")
    diagnostics: list[dict[str, Any]] = Field(description="The candidate's diagnostics per node; is_new marks those it introduced.")
    nodes: list[str] = Field(description="The nodes the edits touch.")
    signature_changes: list[dict[str, str]] = Field(description="Public signatures the edits change (node_id, before, after): pt_apply needs allow_signature_change, i.e. the user's word.")


class ApplyResult(BaseModel):
    change_id: str = Field(description="pt_undo takes it.")
    candidate_id: str
    files: list[dict[str, str]]


class UndoResult(BaseModel):
    change_id: str
    files: list[dict[str, str]]


class Edit(BaseModel):
    """One node-addressed edit: in the code of NODE, replace the text FIND (which must occur
    exactly once in that node) with REPLACE. The same strict format pt's LLM path uses."""

    node: str = Field(description="A node id (from pt_diagnose, pt_two_hop or pt_context).")
    find: str = Field(description="Exact text inside the node's code; must occur exactly once there.")
    replace: str = Field(description="The text to put in its place.")


# ------------------------------------------------------------------ the server

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _bad_arguments(name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return f"pt: error: {name}: bad arguments: {'; '.join(parts)}"


class PtMCPServer(MCPServer):
    """MCPServer whose tool failures carry pt's one-line message, never a traceback."""

    async def call_tool(self, name, arguments, context=None):
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_bad_arguments(name, cause)) from None
            if isinstance(cause, PtError):
                raise ToolError(f"pt: {'error' if cause.exit_code != 1 else 'failed'}: {_one_line(cause.message)}") from None
            if cause is not None:  # a crash: one line, as the CLI says it (PT_DEBUG=1: the traceback on stderr)
                if os.environ.get("PT_DEBUG"):
                    traceback.print_exception(cause)
                first = (str(cause).strip().splitlines() or [""])[0]
                raise ToolError(f"pt: internal error: {type(cause).__name__}: {first}") from None
            msg = _one_line(str(exc))  # the SDK's own, e.g. "Unknown tool: x"
            raise ToolError(msg if msg.startswith("pt: ") else f"pt: error: {msg[:1].lower()}{msg[1:]}") from None


class _Progress:
    """Progress notifications from a worker thread (tools run on one), at most ~5 a second."""

    def __init__(self, ctx: Context | None):
        self.ctx, self.last = ctx, 0.0

    def __call__(self, progress: float, total: float | None, message: str, force: bool = False) -> None:
        if self.ctx is None:  # (the SDK drops it when the client asked for no progress)
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2 and (total is None or progress < total):
            return
        self.last = now
        try:
            anyio.from_thread.run(self.ctx.report_progress, progress, total, message)
        except Exception:  # noqa: BLE001 - a lost notification must not fail the work
            pass


def _dobby_check() -> dict:
    """Whether the orchestrator answers (optional: pt works the same without it)."""
    from .dobby.client import answers, running_socket

    path = running_socket()
    ok = bool(path) and answers(path)
    return {"name": "dobby", "ok": ok, "required": False,
            "detail": f"running on {path}" if ok else "not running (pt works the same without it)",
            "fix": "" if ok else "pt dobby serve (keeps graphs, workers and models warm)"}


class Tools:
    """The tools' bodies, bound to the server's workspace."""

    def __init__(self, root: Path, db: str | None = None):
        self.root = root.resolve()
        self.db = db

    # ------------------------------------------------------------ helpers

    def workspace(self, arg: str | None) -> Path:
        if not arg:
            return self.root
        try:
            p = self.root / workspace_path(self.root, arg, cwd=self.root)
        except UsageError:
            raise UsageError(f"workspace {arg} is outside the server's workspace {self.root}") from None
        if not p.is_dir():
            raise UsageError(f"workspace {arg} is not a directory")
        return p

    def open(self, arg: str | None, init: bool = True) -> Pt:
        ws = self.workspace(arg)
        return Pt.open(ws, self.db if ws == self.root else None, init=init)

    def file(self, ws: Path, path: str, what: str = "path") -> str:
        """A workspace-relative path to an existing file, confined to the workspace."""
        rel = workspace_path(ws, path, cwd=ws)  # refuses one outside
        if not (ws / rel).is_file():
            raise UsageError(f"{what} {path}: no such file")
        return rel

    # ------------------------------------------------------------ graph

    def status(self, checks: Annotated[bool, Field(description="Also check the machine (cargo, rustc, rust-analyzer, the database: `pt doctor`) and list the local models.")] = False,
               workspace: Workspace = None) -> StatusResult:
        """The graph of the workspace: whether it exists, its schema revision, rows per relation,
        and how many files changed since the last ingest; with checks, the toolchain and models."""
        from types import SimpleNamespace

        from .watch import stale_files

        ws = self.workspace(workspace)
        db = (self.db if ws == self.root else None) or default_db(ws)
        exists = db == "mem" or Path(db).is_file()
        extra = {}
        if checks:
            from ..adapters import models
            from .doctor import run_checks

            # the doctor opens the database; one that does not exist yet is not created here
            found = run_checks(SimpleNamespace(workspace=ws, db=db if exists else "mem"))
            for c in found:
                if c["name"] == "database" and not exists:
                    c.update(detail=f"{db}: no graph yet (pt_ingest creates it)")
            extra = {"checks": found + [_dobby_check()], "models": models.ls()}
        if not exists:
            return StatusResult(workspace=str(ws), db=db, graph=False, **extra)
        with self.open(workspace) as pt:
            rows = {r["relation"]: r["rows"] for r in pt.query("meta.status")}
            stale = stale_files(pt)
            return StatusResult(workspace=str(pt.workspace), db=pt.store.path or "mem", graph=True,
                                schema_rev=pt.current_rev(), rows=dict(sorted(rows.items())),
                                stale_files={k: len(v) for k, v in stale.items()}, **extra)

    def ingest(self, paths: Annotated[list[str] | None, Field(description="Files to re-ingest (default: the whole workspace; unchanged files are skipped).")] = None,
               workspace: Workspace = None, ctx: Context | None = None) -> IngestResult:
        """Bring the graph up to date with the workspace (or just PATHS). Reports progress on long runs."""
        from .ingest import ingest

        report_progress = _Progress(ctx)
        with self.open(workspace) as pt:
            rel = [workspace_path(pt.workspace, p, cwd=pt.workspace) for p in paths] if paths else None
            rep = ingest(pt.workspace, pt.store, paths=rel,
                         progress=lambda label, done, total: report_progress(done, total, f"{label} {done}/{total} files"))
        d = rep.as_dict()
        return IngestResult(**{k: d[k] for k in IngestResult.model_fields})

    def query(self, program: Annotated[str, Field(description="A program id like retrieval.search, or a unique suffix; `pt rules ls` lists them.")],
              params: Annotated[dict[str, Any] | None, Field(description="The program's $params as JSON values.")] = None,
              vars: Annotated[dict[str, Any] | None, Field(description="Jinja vars that shape the program (e.g. edge_kinds).")] = None,
              limit: Annotated[int, Field(ge=1, le=10_000, description="At most this many rows (an agent's context is finite).")] = 200,
              workspace: Workspace = None) -> QueryResult:
        """Run any read-only rule program by id with params; rows as objects."""
        with self.open(workspace) as pt:
            prog = pt.registry.get(program)
            if not prog.read_only:
                raise UsageError(f"{prog.id} writes {', '.join(prog.writes)}; pt_query runs read-only programs only")
            rows = pt.run(prog.id, params or {}, vars or {})
            return QueryResult(program=prog.id, headers=rows.headers, rows=rows.dicts()[:limit], total_rows=len(rows.rows))

    def two_hop(self, seeds: Annotated[list[str], Field(min_length=1, description="Node ids, or FILE:LINE positions (the innermost node at that line).")],
                max_hops: Annotated[int, Field(ge=1, le=2)] = 2,
                cap_per_hop: Annotated[int, Field(ge=1, le=500)] = 30,
                direction: Literal["fwd", "rev", "both"] = "both",
                edge_kinds: Annotated[list[Literal["CALLS", "USES", "IMPLEMENTS", "REQUIRES_BOUND", "DEPENDS", "CONTAINS", "FEATURE_GATED_BY"]] | None,
                                      Field(description="Default: CALLS, USES, IMPLEMENTS, REQUIRES_BOUND.")] = None,
                workspace: Workspace = None) -> TwoHopResult:
        """The interfaces within two hops of the seeds over the graph's edges (callers, callees,
        types used, traits implemented), capped per hop so hubs cannot explode the answer."""
        from .context import seed_ids

        with self.open(workspace) as pt:
            ids = seed_ids(pt, seeds)
            res = pt.run("retrieval.two_hop", {"seeds": ids, "max_hops": max_hops, "cap_per_hop": cap_per_hop,
                                               "direction": direction}, {"edge_kinds": edge_kinds} if edge_kinds else {})
            return TwoHopResult(seeds=ids, nodes=res.dicts())

    def context(self, seeds: Annotated[list[str], Field(min_length=1, description="Node ids, or FILE:LINE positions.")],
                budget_tokens: Annotated[int, Field(ge=100, le=100_000)] = 4000,
                query: Annotated[str, Field(description="Text for the full-text side (e.g. the error message).")] = "",
                workspace: Workspace = None) -> ContextResult:
        """The budgeted context pack for the seeds: their code first, then ranked neighbours'
        code, cut to budget_tokens (characters / 4) in a stable order."""
        from .context import context_pack, render_text, seed_ids

        with self.open(workspace) as pt:
            ids = seed_ids(pt, seeds)
            rows = context_pack(pt, ids, budget_tokens, query)
            return ContextResult(seeds=ids, budget_tokens=budget_tokens, tokens=sum(r["tokens"] for r in rows),
                                 nodes=rows, text=render_text(rows))

    # ------------------------------------------------------------ fixing

    def diagnose(self, path: Annotated[str, Field(description="A .rs file; its crate is checked with cargo (in pt's mirror, never in the tree).")],
                 all_files: Annotated[bool, Field(description="List the errors of the whole crate, not only this file's.")] = False,
                 workspace: Workspace = None) -> DiagnoseResult:
        """The compile errors of a file (or its whole crate) per interface: the node each falls
        in, its signature, rustc's message, notes and suggested replacements - the seeds of a fix."""
        from .fix import seed_facts

        with self.open(workspace) as pt:
            rel = self.file(pt.workspace, path)
            run_id = "mcp-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}-{time.time_ns() % 10**9}"
            total = seed_facts(pt, rel, run_id)
            rows = pt.query("fix.diagnose", run_id=run_id, round=0, file="" if all_files else rel)
        errors = [DiagnosedError(**{**{k: r[k] for k in DiagnosedError.model_fields if k not in ("notes",)},
                                    "notes": [n[1] for n in r["notes"]]}) for r in rows if r["severity"] == "error"]
        return DiagnoseResult(file=rel, errors=errors, crate_errors=total)

    def fix(self, path: Annotated[str, Field(description="A .rs file whose crate should compile.")],
            dry_run: Annotated[bool, Field(description="true (default): only find and prove the fix. false: also write it (needs confirm).")] = True,
            confirm: Annotated[bool, Field(description="With dry_run false: the user has approved writing the change.")] = False,
            max_rounds: Annotated[int, Field(ge=1, le=10)] = 3,
            allow_signature_change: bool = False,
            workspace: Workspace = None, ctx: Context | None = None) -> FixResult:
        """pt's deterministic fix: rustc's suggestions and pt's patterns, each proven by PreFlight
        (cargo check in a mirror). Dry run by default: returns the proven diff and a candidate id
        for pt_apply, or 'no-safe-fix' with the errors per interface."""
        from .fix import FixOptions, run_fix

        if not dry_run and not confirm:
            raise UsageError("pt_fix with dry_run false writes files: pass confirm: true once the user has approved")
        say = _Progress(ctx)
        steps = [0]

        def progress(msg: str) -> None:
            steps[0] += 1
            say(steps[0], None, msg.strip(), force=True)

        with self.open(workspace) as pt:
            rel = self.file(pt.workspace, path)
            opts = FixOptions(seed=str(pt.workspace / rel), dry_run=dry_run, max_rounds=max_rounds,
                              allow_signature_change=allow_signature_change, llm=None)
            rep = run_fix(pt, opts, approve=lambda diff: confirm, progress=progress)
        return FixResult(outcome=rep.outcome, diff=rep.diff, candidate_id=rep.candidate_id, change_id=rep.change_id,
                         errors_before=rep.errors_before, errors_left=rep.errors_left, explanation=rep.explanation,
                         warnings=rep.warnings)

    def propose(self, edits: Annotated[list[Edit], Field(min_length=1, description="Node-addressed edits: {node, find, replace}.")],
                workspace: Workspace = None) -> ProposeResult:
        """Prove the agent's node-addressed edits: they are spliced into copies of the files and
        checked by PreFlight (cargo check in a mirror). Never writes the tree. Returns the
        verdict, the diagnostics (new ones marked), the diff, the public signatures it changes and
        a candidate id for pt_apply (a later proposal touching the same node supersedes it)."""
        from .mcp_propose import prove_edits

        with self.open(workspace) as pt:
            rep = prove_edits(pt, [e.model_dump() for e in edits])
        return ProposeResult(**rep)

    def apply(self, candidate_id: Annotated[str, Field(min_length=8, description="A candidate that passed PreFlight (from pt_fix or pt_propose).")],
              confirm: Annotated[bool, Field(description="Must be true: the user has seen the diff and approved it.")] = False,
              allow_signature_change: Annotated[bool, Field(description="The user agreed to the public signature changes pt_propose listed.")] = False,
              workspace: Workspace = None) -> ApplyResult:
        """Write a candidate that passed PreFlight into the tree, atomically; refuses one that did
        not pass, whose files changed since, or that changes a public signature without
        allow_signature_change. Needs confirm: true (ask the user first)."""
        from .apply import apply_candidate
        from .mcp_propose import signature_changes

        if confirm is not True:
            raise UsageError("pt_apply writes files: show the user the diff, and pass confirm: true once they approve")
        with self.open(workspace) as pt:
            changes = signature_changes(pt, candidate_id)
            if changes and not allow_signature_change:
                raise GateFailed(f"candidate {candidate_id[:12]} changes the public signature of {changes[0]['node_id']}"
                                 f"{f' and {len(changes) - 1} more' if len(changes) > 1 else ''}; nothing written "
                                 f"(pass allow_signature_change: true once the user agrees)")
            rep = apply_candidate(pt, candidate_id, approve=lambda diff: True)
        return ApplyResult(change_id=rep.change_id, candidate_id=rep.candidate_id, files=rep.files)

    def undo(self, change_id: Annotated[str | None, Field(description="The change to revert (default: the newest not yet undone).")] = None,
             workspace: Workspace = None) -> UndoResult:
        """Revert a change pt applied, restoring the files' previous bytes; refuses if they changed since."""
        from .apply import undo_change

        with self.open(workspace) as pt:
            rep = undo_change(pt, change_id)
        return UndoResult(change_id=rep.change_id, files=rep.files)


TOOLS: list[tuple[str, str, ToolAnnotations]] = [
    ("status", "Graph status", READ_ONLY),
    ("ingest", "Ingest the workspace", WRITES_GRAPH),
    ("query", "Run a read-only rule program", READ_ONLY),
    ("two_hop", "Two-hop neighbourhood", READ_ONLY),
    ("context", "Context pack", READ_ONLY),
    ("diagnose", "Errors per interface", READ_ONLY),
    ("fix", "Deterministic fix (dry run)", WRITES_GRAPH),
    ("propose", "Prove node-addressed edits", WRITES_GRAPH),
    ("apply", "Apply a proven candidate", WRITES_TREE),
    ("undo", "Undo an applied change", WRITES_TREE),
]


def build_server(root: Path, db: str | None = None) -> PtMCPServer:
    from importlib.metadata import version

    tools = Tools(root, db)
    server = PtMCPServer("parseltongue", title="Parseltongue", version=version("parseltongue"),
                         instructions=INSTRUCTIONS, log_level="WARNING")
    for name, title, annotations in TOOLS:
        server.add_tool(getattr(tools, name), name=f"pt_{name}", title=title, annotations=annotations,
                        structured_output=True)
    return server


def serve(root: Path, db: str | None = None) -> None:
    build_server(root, db).run("stdio")
