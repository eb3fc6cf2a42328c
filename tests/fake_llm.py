"""A fake Anthropic Messages API on loopback, for tests that drive the real `anthropic` client.

    from fake_llm import fake_llm  # noqa: F401  (the fixture)

    def test_x(fake_llm):
        fake_llm.reply = '{"edits": []}'     # the text the model "says"
        fake_llm.delay = 2.0                 # seconds before answering (timeouts)
        fake_llm.status = 500                # an HTTP error instead of a message
        cfg = fake_llm.config()              # an LlmConfig pointing at this server
        ...
        fake_llm.requests[-1]["body"]        # what the client sent (parsed JSON), also "path", "headers"

The fixture also sets ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY (monkeypatched) so code that builds
its config with config_from_env() reaches this server, never the network.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class FakeLLM:
    def __init__(self) -> None:
        self.reply = '{"edits": []}'
        self.replies: list[str] = []  # when non-empty, answered in order (one per request) before `reply`
        self.delay = 0.0
        self.status = 200
        self.usage = (123, 45)  # (input_tokens, output_tokens)
        self.requests: list[dict] = []
        self._stop = threading.Event()  # ends artificial delays at teardown
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def config(self, **kw):
        from parseltongue.adapters.llm import LlmConfig

        kw.setdefault("provider", "anthropic")
        kw.setdefault("model", "claude-test")
        kw.setdefault("timeout_s", 5.0)
        return LlmConfig(base_url=self.base_url, api_key="test-key", **kw)

    def _answer(self, body: dict) -> tuple[int, dict]:
        if self.status != 200:
            kind = "api_error" if self.status >= 500 else "invalid_request_error"
            return self.status, {"type": "error", "error": {"type": kind, "message": f"fake status {self.status}"}}
        text = self.replies.pop(0) if self.replies else self.reply
        return 200, {
            "id": f"msg_fake_{len(self.requests)}", "type": "message", "role": "assistant",
            "model": body.get("model", "claude-test"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": self.usage[0], "output_tokens": self.usage[1]},
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if fake.delay:
                    fake._stop.wait(fake.delay)
                if self.path.split("?")[0] != "/v1/messages":
                    status, doc = 404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}}
                else:
                    status, doc = fake._answer(body)
                out = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:  # the client gave up (timeout tests)
                    pass

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        return Handler

    def start(self) -> "FakeLLM":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_llm(monkeypatch):
    server = FakeLLM().start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # loopback never goes through a proxy
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("PT_LLM", "PT_LLM_MODEL"):  # the provider is chosen from the API key
        monkeypatch.delenv(name, raising=False)
    try:
        yield server
    finally:
        server.stop()
