"""The Claude Code plugin with the real Claude Code CLI (npm `@anthropic-ai/claude-code`, installed
into .venv/npm by `scripts/setup.sh --dev`): validation, marketplace install in a temporary HOME,
`claude mcp list`, the hooks, and headless `claude -p` runs of the plugin's fix command against a
scripted fake Messages API on loopback (tests/fake_llm_stream.py) whose replies call pt's tools.
Only the model is fake: the CLI, pt's MCP server, cargo and the PreFlight mirror are real.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, cargo_check
from fake_llm_stream import ScriptedLLM, last_tool_result, text, tool_use

ROOT = Path(__file__).resolve().parent.parent
CLAUDE = ROOT / ".venv" / "npm" / "node_modules" / ".bin" / "claude"
VENV_BIN = Path(sys.executable).parent
TOOL = "mcp__plugin_parseltongue_pt__"  # how the CLI names a plugin's MCP tools

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")


@pytest.fixture(scope="module")
def claude() -> str:
    if not CLAUDE.exists():
        pytest.fail(f"the Claude Code CLI is not installed at {CLAUDE}: run ./scripts/setup.sh --dev")
    return str(CLAUDE)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The plugin as a user gets it from a clone: the repository without build and test state
    (a local marketplace is copied whole into the CLI's cache, .venv included)."""
    dest = tmp_path_factory.mktemp("plugin") / "parseltongue"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".venv", ".git", "target", ".parseltongue", "__pycache__", "*.egg-info", ".pytest_cache", "*.actual"))
    return dest


def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE", "PT_LLM"))}
    real_home = Path(os.environ.get("HOME", "/root"))
    env.update(
        HOME=str(home), DISABLE_TELEMETRY="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
        # a temporary HOME must not hide the Rust toolchain
        RUSTUP_HOME=os.environ.get("RUSTUP_HOME", str(real_home / ".rustup")),
        CARGO_HOME=os.environ.get("CARGO_HOME", str(real_home / ".cargo")),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `pt` installed, as for a user
    )
    env.update(extra)
    return env


def _claude(claude: str, *args: str, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([claude, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _copy(src: Path, tmp_path: Path) -> Path:
    ws = tmp_path / src.name
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("target", ".parseltongue"))
    return ws


# ------------------------------------------------------------------ packaging

def test_plugin_and_marketplace_validate(claude, plugin, tmp_path):
    env = _env(tmp_path)
    for target in (plugin, plugin / ".claude-plugin" / "plugin.json"):
        r = _claude(claude, "plugin", "validate", "--strict", str(target), cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "✔ Validation passed" in r.stdout and "error" not in (r.stdout + r.stderr).lower()
    # the validator does read the manifests: a broken one fails
    bad = tmp_path / "bad"
    shutil.copytree(plugin / ".claude-plugin", bad / ".claude-plugin")
    (bad / ".claude-plugin" / "marketplace.json").write_text('{"name": "x", "plugins": "nope"}')
    r = _claude(claude, "plugin", "validate", str(bad), cwd=tmp_path, env=env)
    assert r.returncode != 0


def test_marketplace_add_install_and_mcp_list_connected(claude, plugin, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    env = _env(home)
    r = _claude(claude, "plugin", "marketplace", "add", str(plugin), cwd=ws, env=env)
    assert r.returncode == 0 and "Successfully added marketplace: parseltongue" in r.stdout, r.stdout + r.stderr
    r = _claude(claude, "plugin", "install", "parseltongue@parseltongue", cwd=ws, env=env)
    assert r.returncode == 0 and "Successfully installed plugin: parseltongue@parseltongue" in r.stdout, r.stdout + r.stderr
    r = _claude(claude, "mcp", "list", cwd=ws, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("plugin:parseltongue:pt:"))
    assert "hooks/run-pt mcp" in line and "✔ Connected" in line, r.stdout

    # without pt the server cannot start, and the launcher says why in one line
    env_no_pt = _env(home, PATH="/usr/bin:/bin")
    r = _claude(claude, "mcp", "list", cwd=ws, env=env_no_pt)
    line = next(x for x in r.stdout.splitlines() if x.startswith("plugin:parseltongue:pt:"))
    assert "Connected" not in line.replace("✘ Failed to connect", ""), r.stdout
    r = subprocess.run([str(plugin / "hooks" / "run-pt"), "mcp"], env=env_no_pt, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=30)
    assert r.returncode == 127 and r.stderr.startswith("parseltongue: the pt command is not installed")
    assert r.stderr.count("\n") == 1


# ------------------------------------------------------------------ hooks (as Claude Code runs them: JSON on stdin)

def _hook(plugin: Path, name: str, event: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(plugin / "hooks" / "run-pt"), "mcp", "hook", name], input=json.dumps(event),
                          cwd=cwd, env=_env(Path(os.environ.get("HOME", "/root"))), capture_output=True,
                          text=True, timeout=120)


def test_hooks_ingest_an_edited_file_and_report_status(plugin, tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    r = _hook(plugin, "session-start", {"cwd": str(ws), "hook_event_name": "SessionStart"}, ws)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""  # no graph: silent, and none created
    assert not (ws / ".parseltongue").exists()

    subprocess.run([str(VENV_BIN / "pt"), "ingest"], cwd=ws, check=True, capture_output=True, timeout=120)
    r = _hook(plugin, "session-start", {"cwd": str(ws)}, ws)
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    assert r.stdout.startswith(f"parseltongue: graph of {ws}: ") and "0 stale files" in r.stdout

    geo = ws / "src" / "geometry.rs"
    geo.write_text(geo.read_text() + "\npub fn perimeter_hint() -> f64 {\n    0.0\n}\n")
    event = {"hook_event_name": "PostToolUse", "tool_name": "Edit", "cwd": str(ws),
             "tool_input": {"file_path": str(geo), "old_string": "x", "new_string": "y"}}
    r = _hook(plugin, "post-edit", event, ws)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""  # silent on success
    q = subprocess.run([str(VENV_BIN / "pt"), "query", "ingest.node_at", "-p", "file=src/geometry.rs",
                        "-p", f"byte={len(geo.read_bytes()) - 8}", "--json"], cwd=ws, capture_output=True, text=True)
    assert json.loads(q.stdout)["rows"][0]["id"] == "fn:src/geometry.rs::perimeter_hint"
    r = _hook(plugin, "session-start", {"cwd": str(ws)}, ws)
    assert "0 stale files" in r.stdout

    # not a .rs file, or not this workspace's: nothing to do
    for path in (str(ws / "Cargo.toml"), "/etc/x.rs"):
        r = _hook(plugin, "post-edit", dict(event, tool_input={"file_path": path}), ws)
        assert r.returncode == 0 and r.stdout == r.stderr == ""

    # a failure says so in one line and exits 1, never 2 (which would block the agent)
    (ws / ".parseltongue" / "graph.db").write_bytes(b"not a database" * 100)
    for name, ev in (("post-edit", event), ("session-start", {"cwd": str(ws)})):
        r = _hook(plugin, name, ev, ws)
        assert r.returncode == 1 and r.stdout == "", r
        last = r.stderr.splitlines()[-1]
        assert last.startswith("parseltongue hook: sqlite database") and "pt init --rebuild" in last, r.stderr


# ------------------------------------------------------------------ headless runs against a scripted model

def _run_fix(claude: str, plugin: Path, ws: Path, home: Path, steps: list, prompt: str) -> tuple[ScriptedLLM, list]:
    with ScriptedLLM(steps) as fake:
        env = _env(home, ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY="test-key")
        r = _claude(claude, "-p", prompt, "--plugin-dir", str(plugin), "--output-format", "stream-json", "--verbose",
                    cwd=ws, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not fake.errors, fake.errors
    events = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert events[-1]["type"] == "result" and not events[-1].get("permission_denials"), events[-1]
    return fake, events


def test_fix_command_end_to_end_applies_the_proven_fix(claude, plugin, tmp_path):
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    seen: dict = {}

    def diagnose(body):
        return [text("Checking the errors."), tool_use(TOOL + "pt_diagnose", {"path": "src/report.rs"})]

    def fix(body):
        seen["diagnose"] = last_tool_result(body)
        return [tool_use(TOOL + "pt_fix", {"path": "src/report.rs"})]

    def apply(body):
        seen["fix"] = res = last_tool_result(body)
        return [text("pt proved this change:\n" + res.get("diff", "")),
                tool_use(TOOL + "pt_apply", {"candidate_id": res.get("candidate_id", ""), "confirm": True})]

    def done(body):
        seen["apply"] = last_tool_result(body)
        return [text("Applied; `pt_undo` reverts it.")]

    fake, events = _run_fix(claude, plugin, ws, home, [diagnose, fix, apply, done],
                            "/parseltongue:fix src/report.rs (I approve applying a proven fix)")
    assert [n for n, _ in fake.tool_calls][-3:] == [TOOL + "pt_diagnose", TOOL + "pt_fix", TOOL + "pt_apply"]
    assert TOOL + "pt_propose" in fake.tool_names()
    # the command's text reached the model
    first = next(r["body"] for r in fake.requests if r["body"].get("tools"))
    assert "pt_diagnose" in json.dumps(first["messages"][0]) and "src/report.rs" in json.dumps(first["messages"][0])
    assert seen["diagnose"]["crate_errors"] == 2 and not seen["diagnose"]["_is_error"]
    assert seen["fix"]["outcome"] == "would-fix" and "+use std::collections::HashMap;" in seen["fix"]["diff"]
    assert seen["apply"]["files"] == [{"path": "src/report.rs", "action": "modified"}]
    assert b"use std::collections::HashMap;\n" in (ws / "src" / "report.rs").read_bytes()
    assert cargo_check(ws).returncode == 0
    print("\n".join(f"{n.removeprefix(TOOL)} {json.dumps(a)}" for n, a in fake.tool_calls))  # (-s: the run's excerpt)
    print(seen["fix"]["diff"] + events[-1]["result"])


def test_fix_command_wrong_proposal_is_refused_and_the_tree_unchanged(claude, plugin, tmp_path):
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    seen: dict = {}
    node = "fn:src/lib.rs::answer"

    def fix(body):
        return [tool_use(TOOL + "pt_fix", {"path": "src/lib.rs"})]

    def propose(body):
        seen["fix"] = last_tool_result(body)
        # a wrong edit: a string where the signature promises u32
        return [tool_use(TOOL + "pt_propose", {"edits": [{"node": node, "find": "compute_the_answer_somehow()",
                                                           "replace": '"forty-two"'}]})]

    def apply_anyway(body):
        seen["propose"] = res = last_tool_result(body)
        return [tool_use(TOOL + "pt_apply", {"candidate_id": res.get("candidate_id", ""), "confirm": True})]

    def give_up(body):
        seen["apply"] = last_tool_result(body)
        return [text("PreFlight refused the edit; nothing was written.")]

    fake, _ = _run_fix(claude, plugin, ws, home, [fix, propose, apply_anyway, give_up],
                       "/parseltongue:fix src/lib.rs (I approve applying a proven fix)")
    assert seen["fix"]["outcome"] == "no-safe-fix"
    assert seen["propose"]["verdict"] == "failed" and seen["propose"]["new_errors"] >= 1
    assert any(d["is_new"] and d["code"] == "E0308" for d in seen["propose"]["diagnostics"])
    assert seen["apply"]["_is_error"] and "has not passed PreFlight" in seen["apply"]["_text"]
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file() and ".parseltongue" not in p.parts
            and "target" not in p.parts} == before


def test_fix_command_agent_edit_proven_then_applied(claude, plugin, tmp_path):
    """No deterministic fix: the agent reads the context, proposes, is refused, proposes again on
    the diagnostics, and applies what passed."""
    ws = _copy(FIXTURES / "fix_none", tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    seen: dict = {}
    node = "fn:src/lib.rs::answer"

    def fix(body):
        return [tool_use(TOOL + "pt_fix", {"path": "src/lib.rs"})]

    def context(body):
        seen["fix"] = last_tool_result(body)
        return [tool_use(TOOL + "pt_context", {"seeds": [node], "budget_tokens": 500})]

    def first_try(body):
        seen["context"] = last_tool_result(body)
        return [tool_use(TOOL + "pt_propose", {"edits": [{"node": node, "find": "compute_the_answer_somehow()",
                                                           "replace": "42i64"}]})]

    def second_try(body):
        seen["first"] = res = last_tool_result(body)  # refused: the diagnostics say why
        assert any(d["is_new"] and d["code"] == "E0308" for d in res.get("diagnostics", [])), res
        return [tool_use(TOOL + "pt_propose", {"edits": [{"node": node, "find": "compute_the_answer_somehow()",
                                                           "replace": "42"}]})]

    def apply(body):
        seen["propose"] = res = last_tool_result(body)
        return [text(res.get("diff", "")), tool_use(TOOL + "pt_apply", {"candidate_id": res.get("candidate_id", ""),
                                                                        "confirm": True})]

    def done(body):
        seen["apply"] = last_tool_result(body)
        return [text("Fixed.")]

    _run_fix(claude, plugin, ws, home, [fix, context, first_try, second_try, apply, done],
             "/parseltongue:fix src/lib.rs (I approve applying a proven fix)")
    assert seen["fix"]["outcome"] == "no-safe-fix"
    assert seen["context"]["nodes"][0]["id"] == node
    assert seen["first"]["verdict"] == "failed"
    assert seen["propose"]["verdict"] == "passed" and seen["propose"]["errors_after"] == 0
    assert not seen["apply"]["_is_error"]
    assert "    42\n" in (ws / "src" / "lib.rs").read_text()
    assert cargo_check(ws).returncode == 0


def test_bootstrap_and_ingest_commands(claude, plugin, tmp_path):
    """The commands' allowed tools are enough for what they ask: bootstrap checks, ingests a
    workspace without a graph, reports; ingest re-ingests the files it is given."""
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    seen: dict = {}

    def check(body):
        return [tool_use(TOOL + "pt_status", {"checks": True})]

    def ingest(body):
        seen["status"] = last_tool_result(body)
        return [tool_use(TOOL + "pt_ingest", {})]

    def again(body):
        seen["ingest"] = last_tool_result(body)
        return [tool_use(TOOL + "pt_status", {})]

    def report(body):
        seen["after"] = last_tool_result(body)
        return [text("| toolchain | ok |")]

    _run_fix(claude, plugin, ws, home, [check, ingest, again, report], "/parseltongue:bootstrap")
    assert seen["status"]["graph"] is False and {c["name"] for c in seen["status"]["checks"]} >= {"cargo", "rustc", "database"}
    assert seen["ingest"]["files_parsed"] == 3
    assert seen["after"]["graph"] and seen["after"]["rows"]["isg_nodes"] == seen["ingest"]["nodes"]

    (ws / "src" / "lib.rs").write_text((ws / "src" / "lib.rs").read_text() + "\npub fn more() {}\n")

    def ingest_file(body):
        # the command's text carries the arguments
        assert "src/lib.rs" in json.dumps(body["messages"][0])
        return [tool_use(TOOL + "pt_ingest", {"paths": ["src/lib.rs"]})]

    def said(body):
        seen["file"] = last_tool_result(body)
        return [text("1 file parsed")]

    _run_fix(claude, plugin, ws, home, [ingest_file, said], "/parseltongue:ingest src/lib.rs")
    assert seen["file"]["files_total"] == seen["file"]["files_parsed"] == 1
    q = subprocess.run([str(VENV_BIN / "pt"), "query", "ingest.node_at", "-p", "file=src/lib.rs",
                        "-p", f"byte={len((ws / 'src' / 'lib.rs').read_bytes()) - 4}", "--json"], cwd=ws,
                       capture_output=True, text=True)
    assert json.loads(q.stdout)["rows"][0]["id"] == "fn:src/lib.rs::more"


def test_hooks_run_inside_claude(claude, plugin, tmp_path):
    """SessionStart puts the one-line status in the model's context; an Edit of a .rs file by the
    agent is ingested by the PostToolUse hook."""
    ws = _copy(ROOT / "examples" / "shapes", tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run([str(VENV_BIN / "pt"), "ingest"], cwd=ws, check=True, capture_output=True, timeout=120)
    geo = ws / "src" / "geometry.rs"

    def read(body):
        return [tool_use("Read", {"file_path": str(geo)})]

    def edit(body):
        return [tool_use("Edit", {"file_path": str(geo), "old_string": "/// Sum of the areas of all shapes.",
                                  "new_string": "pub fn unit() -> f64 {\n    1.0\n}\n\n/// Sum of the areas of all shapes."})]

    def query(body):
        return [tool_use(TOOL + "pt_query", {"program": "ingest.node_at",
                                             "params": {"file": "src/geometry.rs", "byte": geo.read_text().index("pub fn unit")}})]

    seen = {}

    def done(body):
        seen["query"] = last_tool_result(body)
        return [text("done")]

    with ScriptedLLM([read, edit, query, done]) as fake:
        env = _env(home, ANTHROPIC_BASE_URL=fake.base_url, ANTHROPIC_API_KEY="test-key")
        r = _claude(claude, "-p", "add a unit function", "--plugin-dir", str(plugin), "--output-format", "json",
                    "--allowedTools", f"Read,Edit,{TOOL}pt_query", cwd=ws, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert not fake.errors, fake.errors
    context = json.dumps(next(q["body"]["messages"] for q in fake.requests if q["body"].get("tools")))
    assert f"parseltongue: graph of {ws}: " in context
    assert "pub fn unit()" in geo.read_text()
    assert seen["query"]["rows"][0]["id"] == "fn:src/geometry.rs::unit"  # ingested by the hook, not by pt_query
