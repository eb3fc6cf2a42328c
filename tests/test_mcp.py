"""`pt mcp` driven by the official MCP client (`mcp.ClientSession` over `stdio_client`): the real
server process, real cargo, the real PreFlight mirror, on copies of examples/shapes (a missing
import pt fixes deterministically) and tests/fixtures/fix_none (an error only an agent can fix).
"""
from __future__ import annotations

import json
import shutil
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client

from conftest import FIXTURES, cargo_check
from parseltongue.runner import mcp_server

ROOT = Path(__file__).resolve().parent.parent
PT = str(Path(sys.executable).with_name("pt"))
TOOLS = {"pt_status", "pt_ingest", "pt_query", "pt_two_hop", "pt_context", "pt_diagnose", "pt_fix", "pt_propose",
         "pt_apply", "pt_undo"}

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


def _copy(src: Path, tmp_path: Path) -> Path:
    ws = tmp_path / src.name
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    return ws


@asynccontextmanager
async def _session(ws: Path, *args: str):
    params = StdioServerParameters(command=PT, args=[*args, "mcp"], cwd=str(ws))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            yield s


class Calls:
    """call(name, **args) -> (is_error, structured result or the error text)."""

    def __init__(self, session: ClientSession):
        self.s = session
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, name: str, **args):
        async def on_progress(p, total, message):
            self.progress.append((p, total, message))

        res = await self.s.call_tool(name, args, progress_callback=on_progress)
        if res.is_error:
            return True, res.content[0].text
        assert res.structured_content is not None, name
        # the text content is the same document, for clients that read text only
        assert json.loads(res.content[0].text) == res.structured_content
        return False, res.structured_content


def _run(ws: Path, body, *args: str) -> None:
    async def main():
        async with _session(ws, *args) as s:
            await body(Calls(s))

    anyio.run(main)


def test_lists_every_tool_with_input_and_output_schemas(tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)

    async def main():
        async with _session(ws) as s:
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == TOOLS
            for t in tools.values():
                assert t.description and t.input_schema["type"] == "object", t.name
                assert t.output_schema and t.output_schema["type"] == "object", t.name
            assert tools["pt_propose"].input_schema["required"] == ["edits"]
            assert tools["pt_apply"].annotations.destructive_hint and tools["pt_status"].annotations.read_only_hint

    anyio.run(main)


def test_status_ingest_with_progress_query_two_hop_context(tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)

    async def body(call):
        err, st = await call("pt_status")
        assert not err and st["graph"] is False and st["workspace"] == str(ws)
        err, st = await call("pt_status", checks=True)
        assert not err and st["graph"] is False
        assert "no graph yet" in next(c for c in st["checks"] if c["name"] == "database")["detail"]
        assert not (ws / ".parseltongue" / "graph.db").exists()  # status never creates a graph

        err, rep = await call("pt_ingest")
        assert not err and rep["files_parsed"] == 3 and rep["nodes"] > 10
        assert call.progress and call.progress[-1][0] == call.progress[-1][1] == 3  # files parsed / total
        assert "parsing" in call.progress[-1][2]

        err, st = await call("pt_status")
        assert st["graph"] and st["rows"]["isg_nodes"] == rep["nodes"] and sum(st["stale_files"].values()) == 0
        assert st["checks"] == [] and st["models"] == []  # only when asked: the checks run processes
        err, st = await call("pt_status", checks=True)
        by_name = {c["name"]: c for c in st["checks"]}
        assert by_name["cargo"]["ok"] and by_name["database"]["ok"] and "schema rev" in by_name["database"]["detail"]
        dobby = by_name["dobby"]  # optional; whether one runs on this machine is not this test's business
        assert not dobby["required"] and dobby["detail"].startswith("running on" if dobby["ok"] else "not running")
        assert isinstance(st["models"], list)

        err, q = await call("pt_query", program="ingest.node_at", params={"file": "src/report.rs", "byte": 200})
        assert not err and q["program"] == "ingest.node_at" and q["rows"][0]["id"] == "fn:src/report.rs::count_by_name"

        err, q = await call("pt_query", program="ingest.file_hashes", params={"files": ["src/lib.rs", "src/report.rs"]},
                            limit=1)
        assert not err and q["total_rows"] == 2 and len(q["rows"]) == 1

        err, hop = await call("pt_two_hop", seeds=["src/report.rs:7"])
        assert not err and hop["seeds"] == ["fn:src/report.rs::count_by_name"]
        got = {(n["id"], n["edge_kind"], n["direction"]) for n in hop["nodes"]}
        assert ("fn:src/report.rs::summary", "CALLS", "rev") in got  # summary calls count_by_name
        assert ("trait:src/geometry.rs::Shape", "USES", "fwd") in got

        err, ctx = await call("pt_context", seeds=["fn:src/report.rs::summary"], budget_tokens=400)
        assert not err and ctx["nodes"][0]["id"] == "fn:src/report.rs::summary" and ctx["nodes"][0]["is_seed"]
        assert ctx["tokens"] <= 400 and ctx["text"].startswith("=== CONTEXT START ===")

        (ws / "src" / "report.rs").write_text((ws / "src" / "report.rs").read_text() + "\npub fn extra() {}\n")
        err, rep = await call("pt_ingest", paths=["src/report.rs"])
        assert not err and rep["files_parsed"] == 1
        err, q = await call("pt_query", program="ingest.node_at", params={"file": "src/report.rs",
                                                                           "byte": len((ws / "src/report.rs").read_bytes()) - 5})
        assert q["rows"][0]["id"] == "fn:src/report.rs::extra"

    _run(ws, body)


def test_diagnose_fix_dry_run_apply_undo(tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    before = (ws / "src" / "report.rs").read_bytes()

    async def body(call):
        err, diag = await call("pt_diagnose", path="src/report.rs")
        assert not err and diag["crate_errors"] == 2
        e = diag["errors"][0]
        assert e["node_id"] == "fn:src/report.rs::count_by_name" and e["code"] in ("E0412", "E0425", "E0433")
        assert "HashMap" in e["signature"] and e["suggestions"][0]["replacement"] == "use std::collections::HashMap;\n"

        err, fix = await call("pt_fix", path="src/report.rs")
        assert not err and fix["outcome"] == "would-fix" and fix["change_id"] == ""
        assert "+use std::collections::HashMap;" in fix["diff"]
        assert (ws / "src" / "report.rs").read_bytes() == before  # a dry run writes nothing
        assert any("round 0" in (m or "") for _, _, m in call.progress)

        err, msg = await call("pt_apply", candidate_id=fix["candidate_id"])
        assert err and "confirm: true" in msg
        assert (ws / "src" / "report.rs").read_bytes() == before

        err, app = await call("pt_apply", candidate_id=fix["candidate_id"], confirm=True)
        assert not err and app["files"] == [{"path": "src/report.rs", "action": "modified"}]
        assert b"use std::collections::HashMap;\n" in (ws / "src" / "report.rs").read_bytes()
        assert cargo_check(ws).returncode == 0

        err, undo = await call("pt_undo")
        assert not err and undo["change_id"] == app["change_id"] and undo["files"][0]["action"] == "restored"
        assert (ws / "src" / "report.rs").read_bytes() == before

    _run(ws, body)


def test_propose_refuses_a_wrong_edit_and_proves_a_good_one(tmp_path):
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    lib = ws / "src" / "lib.rs"
    before = lib.read_bytes()
    node = "fn:src/lib.rs::answer"

    async def body(call):
        err, fix = await call("pt_fix", path="src/lib.rs")
        assert not err and fix["outcome"] == "no-safe-fix" and fix["candidate_id"] == ""
        assert fix["explanation"][0]["node_id"] == node

        # a wrong edit: it compiles no further, and breaks the signature's promise
        err, bad = await call("pt_propose", edits=[{"node": node, "find": "compute_the_answer_somehow()",
                                                    "replace": "\"forty-two\""}])
        assert not err and bad["verdict"] == "failed" and bad["new_errors"] >= 1
        assert any(d["is_new"] and d["code"] == "E0308" and d["node_id"] == node for d in bad["diagnostics"])
        assert lib.read_bytes() == before
        err, msg = await call("pt_apply", candidate_id=bad["candidate_id"], confirm=True)
        assert err and "has not passed PreFlight" in msg and lib.read_bytes() == before

        # malformed: `find` is not in the node -> refused with the reason, nothing checked
        err, msg = await call("pt_propose", edits=[{"node": node, "find": "no such text", "replace": "x"}])
        assert err and msg.startswith("pt: error: proposal refused") and "occurs 0 times" in msg and "\n" not in msg
        err, msg = await call("pt_propose", edits=[{"node": "fn:src/lib.rs::nope", "find": "a", "replace": "b"}])
        assert err and "unknown node" in msg

        err, good = await call("pt_propose", edits=[{"node": node, "find": "compute_the_answer_somehow()",
                                                     "replace": "42"}])
        assert not err and good["verdict"] == "passed" and good["errors_after"] == 0 and good["new_errors"] == 0
        assert good["nodes"] == [node] and "+    42" in good["diff"]
        assert lib.read_bytes() == before  # proving never writes the tree

        assert good["signature_changes"] == []

        err, app = await call("pt_apply", candidate_id=good["candidate_id"], confirm=True)
        assert not err and "42" in lib.read_text(), app
        assert cargo_check(ws).returncode == 0
        err, undo = await call("pt_undo")
        assert not err and lib.read_bytes() == before

        # compiles too, but changes what a pub fn promises: pt_apply wants the user's word for it
        err, sig = await call("pt_propose", edits=[{"node": node, "find": "-> u32 {\n    compute_the_answer_somehow()",
                                                    "replace": "-> u64 {\n    42"}])
        assert not err and sig["verdict"] == "passed", sig
        assert sig["signature_changes"] == [{"node_id": node, "before": "pub fn answer() -> u32",
                                             "after": "pub fn answer() -> u64"}]
        err, msg = await call("pt_apply", candidate_id=sig["candidate_id"], confirm=True)
        assert err and msg.startswith("pt: failed: ") and "changes the public signature of fn:src/lib.rs::answer" in msg
        assert lib.read_bytes() == before
        err, app = await call("pt_apply", candidate_id=sig["candidate_id"], confirm=True, allow_signature_change=True)
        assert not err and "pub fn answer() -> u64" in lib.read_text()
        assert cargo_check(ws).returncode == 0

    _run(ws, body)


def test_bad_arguments_and_failures_are_one_line_mcp_errors(tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    async def body(call):
        cases = [
            (("pt_query",), {}, "pt_query: bad arguments: program: Field required"),
            (("pt_two_hop",), {"seeds": "src/report.rs:7", "max_hops": 9}, "bad arguments"),
            (("pt_two_hop",), {"seeds": []}, "seeds"),
            (("pt_query",), {"program": "no_such_program"}, "no program named 'no_such_program'"),
            (("pt_query",), {"program": "ingest.replace_files"}, "pt_query runs read-only programs only"),
            (("pt_status",), {"workspace": str(outside)}, "is outside the server's workspace"),
            (("pt_diagnose",), {"path": "../elsewhere/x.rs"}, "is outside the workspace"),
            (("pt_diagnose",), {"path": "src/nope.rs"}, "no such file"),
            (("pt_undo",), {}, "nothing to undo"),
            (("pt_apply",), {"candidate_id": "deadbeefdeadbeef", "confirm": True}, "unknown candidate"),
            (("pt_fix",), {"path": "src/report.rs", "dry_run": False}, "confirm: true"),
            (("pt_nope",), {}, "unknown tool"),
        ]
        for (name,), args, want in cases:
            err, msg = await call(name, **args)
            assert err, (name, args, msg)
            assert msg.startswith("pt: ") and want in msg, (name, args, msg)
            assert "\n" not in msg and "Traceback" not in msg, msg

    _run(ws, body)


def test_workspace_argument_inside_the_server_root(tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path / "root")

    async def body(call):
        err, st = await call("pt_status", workspace="shapes")
        assert not err and st["workspace"] == str(ws) and st["graph"] is False
        err, rep = await call("pt_ingest", workspace="shapes")
        assert not err and rep["files_parsed"] == 3
        assert (ws / ".parseltongue" / "graph.db").is_file()

    _run(tmp_path / "root", body)


def test_a_crash_is_one_line_too(tmp_path, monkeypatch):
    """In process (the SDK's in-memory client): a tool body that raises something unexpected is an
    MCP error naming it in one line, with no traceback in the result."""
    def boom(self, checks: bool = False, workspace: str | None = None) -> mcp_server.StatusResult:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(mcp_server.Tools, "status", boom)
    server = mcp_server.build_server(tmp_path)

    async def main():
        async with Client(server) as client:
            return await client.call_tool("pt_status", {})

    res = anyio.run(main)
    assert res.is_error and res.content[0].text == "pt: internal error: RuntimeError: boom"
