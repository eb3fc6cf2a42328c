"""A scripted fake Anthropic Messages API on loopback that streams (SSE), for driving the real
Claude Code CLI headless (`claude -p`) in tests. A sibling of fake_llm.py (which answers pt's own
non-streaming client).

A script is a list of steps; the N-th reply of the agent's conversation is step N applied to the
request body, so a step can read the tool results so far (e.g. a candidate id) and answer with
text and tool calls:

    def step(body) -> list[dict]:      # content blocks of the reply
        cid = last_tool_result(body)["candidate_id"]
        return [text("Applying."), tool_use("mcp__plugin_parseltongue_pt__pt_apply",
                                            {"candidate_id": cid, "confirm": True})]

    with ScriptedLLM([step0, step1, ...]) as fake:
        env["ANTHROPIC_BASE_URL"] = fake.base_url
        ...
        fake.tool_calls      # [(name, input)] the script made, in order
        fake.tool_results    # [(tool_use_id, is_error, text)] the CLI sent back

Requests without tools (the CLI's side calls: titles, summaries) get a short text reply and do not
advance the script. A turn whose tool calls all came back "No such tool available" (the CLI
connects MCP servers in the background; the first turn can beat it) is asked again, as a model
would retry. The reply after the last step is a plain text "done" (end_turn).
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Callable

from fake_llm import FakeLLM

Step = Callable[[dict], list]

_ids = itertools.count(1)


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def tool_use(name: str, args: dict) -> dict:
    return {"type": "tool_use", "id": f"toolu_fake{next(_ids):04d}", "name": name, "input": args}


def _result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(c.get("text", "") for c in content or [] if isinstance(c, dict))


def tool_results(body: dict) -> list[dict]:
    """Every tool_result block of the conversation, oldest first."""
    out = []
    for msg in body.get("messages", []):
        if msg.get("role") == "user" and isinstance(msg.get("content"), list):
            out += [b for b in msg["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    return out


def last_tool_result(body: dict) -> dict:
    """The newest tool result parsed as JSON (pt's tools answer with one JSON document), or
    {"_text": ..., "_is_error": ...} when it is not JSON."""
    res = tool_results(body)
    if not res:
        return {}
    raw = _result_text(res[-1])
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {"_text": raw}
    if isinstance(doc, dict):
        doc.setdefault("_is_error", bool(res[-1].get("is_error")))
    return doc


_NOT_YET = "No such tool available"
MAX_RETRIES = 60  # ~30 s of a server that does not connect, then the script gives up (and says so)


def _progress_of(body: dict) -> tuple[int, int]:
    """(the script step the conversation is at, how many times in a row the last step was
    retried). A turn all of whose tool calls came back "No such tool available" (the MCP server
    was still connecting) does not count: the step is asked again."""
    failed = {b.get("tool_use_id") for b in tool_results(body) if _NOT_YET in _result_text(b)}
    n, retries = 0, 0
    for m in body.get("messages", []):
        if m.get("role") != "assistant":
            continue
        uses = [b.get("id") for b in m.get("content") or [] if isinstance(b, dict) and b.get("type") == "tool_use"]
        if uses and all(u in failed for u in uses):
            retries += 1
        else:
            n, retries = n + 1, 0
    return n, retries


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class ScriptedLLM(FakeLLM):
    """FakeLLM's loopback server with a streaming, scripted handler."""

    def __init__(self, steps: list[Step], model: str = "claude-sonnet-4-5"):
        self.steps = steps
        self.model = model
        self.tool_calls: list[tuple[str, dict]] = []
        self.errors: list[str] = []  # a step that raised: the reply says so and the test can see it
        self._lock = threading.Lock()
        super().__init__()  # the server, with the handler below

    @property
    def tool_results(self) -> list[tuple[str, bool, str]]:
        """What the CLI sent back for each tool call, from the newest agent request."""
        agent = [r for r in self.requests if r["body"].get("tools")]
        if not agent:
            return []
        return [(b.get("tool_use_id", ""), bool(b.get("is_error")), _result_text(b)) for b in tool_results(agent[-1]["body"])]

    def tool_names(self) -> list[str]:
        """The tools the CLI offered the model on its newest agent request."""
        agent = [r for r in self.requests if r["body"].get("tools")]
        return [t.get("name", "") for t in agent[-1]["body"]["tools"]] if agent else []

    # ------------------------------------------------------------ replies

    def reply_blocks(self, body: dict) -> list[dict]:
        if not body.get("tools"):
            return [text("ok")]
        n, retries = _progress_of(body)
        if retries >= MAX_RETRIES:
            self.errors.append(f"step {n}: the MCP server did not connect ({retries} tries)")
            return [text("The MCP server never connected.")]
        if retries:  # the CLI had not connected the MCP server yet: wait a little, then ask again
            time.sleep(0.5)
        if n >= len(self.steps):
            return [text("done")]
        try:
            blocks = self.steps[n](body)
        except Exception as exc:  # noqa: BLE001 - surfaced to the test through .errors
            self.errors.append(f"step {n}: {type(exc).__name__}: {exc}")
            return [text(f"script error at step {n}: {exc}")]
        with self._lock:
            self.tool_calls += [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
        return blocks

    def _message(self, blocks: list[dict]) -> dict:
        return {"id": f"msg_fake{next(_ids):04d}", "type": "message", "role": "assistant", "model": self.model,
                "content": blocks, "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 20}}

    def _stream(self, blocks: list[dict]) -> bytes:
        msg = self._message(blocks)
        start = dict(msg, content=[], stop_reason=None, usage={"input_tokens": 100, "output_tokens": 1})
        out = [_sse("message_start", {"type": "message_start", "message": start})]
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                out.append(_sse("content_block_start", {"type": "content_block_start", "index": i,
                                                        "content_block": {"type": "text", "text": ""}}))
                out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                        "delta": {"type": "text_delta", "text": b["text"]}}))
            else:
                out.append(_sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}))
                out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                        "delta": {"type": "input_json_delta",
                                                                  "partial_json": json.dumps(b["input"])}}))
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(_sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"],
                                                                             "stop_sequence": None},
                                          "usage": {"output_tokens": 20}}))
        out.append(_sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, ctype: str, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body})
                path = self.path.split("?")[0]
                if path.endswith("/count_tokens"):
                    return self._send(200, "application/json", b'{"input_tokens": 100}')
                if path != "/v1/messages":
                    return self._send(404, "application/json", json.dumps(
                        {"type": "error", "error": {"type": "not_found_error", "message": path}}).encode())
                blocks = fake.reply_blocks(body)
                if body.get("stream"):
                    self._send(200, "text/event-stream", fake._stream(blocks))
                else:
                    self._send(200, "application/json", json.dumps(fake._message(blocks)).encode())

            def do_GET(self) -> None:  # noqa: N802
                self._send(404, "application/json", b'{"type": "error", "error": {"type": "not_found_error"}}')

            def log_message(self, *args) -> None:
                pass

        return Handler

    def __enter__(self) -> "ScriptedLLM":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
