"""The LLM candidate source of `pt run fix` (R1): prompt, ask, and turn the reply into byte edits.

    cfg = config_from_env()                       # provider "anthropic" | "local" | "none"
    prop = propose(workspace, cfg, diagnostics, context_rows)
    prop.edits      # ByteEdits, each confined to a known node of a workspace file
    prop.rejected   # why the rest of the reply was refused, one line each

The model sees only the context pack, each node between START/END beacons naming its id, and must
answer with node-addressed find/replace edits (whole-snippet rewrites do badly). The reply is
untrusted input: parsed strictly, every edit checked against the node's bytes on disk, and still
validated by PreFlight like any other candidate. Transport problems raise LlmError with one line.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Mapping

PROVIDERS = ("anthropic", "local", "none")
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-6"  # not deprecated in the installed SDK (4-5 is)
LOCAL_CONTEXT_TOKENS = 8192  # a budgeted pack (~4k tokens) + diagnostics + the reply
RENDERED_CHARS = 4000  # cap on one diagnostic's rendered text: rustc can print pages for one error


class LlmError(Exception):
    """The model could not be asked (timeout, connection, HTTP status, empty reply, no runtime)."""


@dataclass
class LlmConfig:
    provider: str  # "anthropic" | "local" | "none"
    model: str  # anthropic: a model name; local: the path of a GGUF file
    max_tokens: int = 2048
    timeout_s: float = 60.0
    base_url: str | None = None  # None: the SDK default (which honours ANTHROPIC_BASE_URL)
    api_key: str | None = field(default=None, repr=False)  # None: the SDK reads ANTHROPIC_API_KEY


@dataclass
class LlmEdit:
    node_id: str
    find: str
    replace: str


@dataclass
class ByteEdit:
    file: str  # workspace-relative posix path
    start: int  # byte offsets in the file on disk
    end: int
    replacement: str
    node_id: str


@dataclass
class LlmProposal:
    edits: list[ByteEdit]
    tokens_in: int
    tokens_out: int
    rejected: list[str]
    raw: str


# ------------------------------------------------------------------ configuration

def _local_default_model(env: Mapping[str, str]) -> str:
    """The GGUF of the default model in the registry (adapters/models.py), or ''."""
    from . import models as M

    rec = M.read_registry(env).get(M.DEFAULT_MODEL)
    return rec.path if rec else ""


def config_from_env(env: Mapping[str, str] = os.environ, provider: str | None = None,
                    model: str | None = None) -> LlmConfig:
    """Explicit arguments win, then PT_LLM / PT_LLM_MODEL; without them the provider is anthropic
    when ANTHROPIC_API_KEY (or its alias ANTHROPIC_KEY) is set, else none; PT_LLM_TIMEOUT sets the request limit. A local model defaults to PT_LLM_GGUF, then the
    model `pt models ensure` installed."""
    key = env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_KEY")  # ANTHROPIC_KEY: an accepted alias
    chosen = (provider or env.get("PT_LLM") or ("anthropic" if key else "none"))
    chosen = chosen.strip().lower()
    if chosen not in PROVIDERS:
        raise LlmError(f"unknown LLM provider {chosen!r} (PT_LLM: one of {', '.join(PROVIDERS)})")
    name = model or env.get("PT_LLM_MODEL") or ""
    if chosen == "anthropic":
        name = name or DEFAULT_ANTHROPIC_MODEL
    elif chosen == "local":
        name = name or env.get("PT_LLM_GGUF") or _local_default_model(env)
    try:
        timeout = float(env.get("PT_LLM_TIMEOUT") or 60.0)
    except ValueError:
        raise LlmError(f"PT_LLM_TIMEOUT must be a number of seconds, not {env.get('PT_LLM_TIMEOUT')!r}") from None
    return LlmConfig(provider=chosen, model=name, timeout_s=timeout, base_url=env.get("ANTHROPIC_BASE_URL") or None,
                     api_key=key or None)


# ------------------------------------------------------------------ prompt

SYSTEM = """You fix Rust compile errors by proposing minimal edits to the code you are shown.

The code comes as nodes of a code graph. Each node is between a START and an END line naming its id:
=== START <id> ===
<code>
=== END <id> ===

Answer with ONE JSON object and nothing else:
{"edits": [{"node": "<id>", "find": "<exact text>", "replace": "<new text>"}]}

Rules:
- "node" is the id of a node shown to you; edit no other code.
- "find" is text copied exactly (whitespace included) from that node's code, occurring exactly once
  in it; make it just long enough to be unique. "replace" is what it becomes.
- Make the smallest change that fixes the errors; do not delete code to silence an error, do not
  reformat, do not change public signatures unless the error requires it.
- A node marked truncated shows only its beginning: edit only text you can see. A node marked
  "signature only" or "summary only" shows no code body: do not edit it.
- If you cannot fix the errors, answer {"edits": []}."""


def _diagnostic_text(d: dict) -> str:
    head = f"[node {d['node_id']}]" if d.get("node_id") else "[node unknown]"
    rendered = (d.get("rendered") or "").rstrip()
    if not rendered:
        code = f"[{d['code']}]" if d.get("code") else ""
        rendered = f"error{code}: {d.get('message', '')}\n --> {d.get('file', '')}:{d.get('line', '')}:{d.get('col', '')}"
    if len(rendered) > RENDERED_CHARS:
        rendered = rendered[:RENDERED_CHARS] + "\n... (cut)"
    return f"{head}\n{rendered}"


def build_prompt(diagnostics: list[dict], context: list[dict],
                 feedback: list[dict] | None = None) -> tuple[str, str]:
    """(system, user): the diagnostics, the context pack in beacons, and a refine round's feedback."""
    parts = ["The compiler reports:", *(_diagnostic_text(d) for d in diagnostics), "", "The code:"]
    for row in context:
        where = f"{row.get('kind', '')}, {row.get('file_path', '')}"
        if row.get("line_start"):
            where += f":{row['line_start']}-{row.get('line_end', row['line_start'])}"
        if row.get("tier") in ("signature", "summary"):
            where += f", {row['tier']} only"  # the context pyramid: no body shown
        if row.get("truncated"):
            where += ", truncated"
        parts += [f"=== START {row['id']} === ({where})", row.get("code") or "", f"=== END {row['id']} ==="]
    if feedback:
        parts += ["", "A previous attempt was checked and the code then still gave:",
                  *(_diagnostic_text(d) for d in feedback)]
    parts += ["", 'Reply with one JSON object {"edits": [...]} as described.']
    return SYSTEM, "\n".join(parts)


# ------------------------------------------------------------------ asking

def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def ask(config: LlmConfig, system: str, user: str) -> tuple[str, int, int]:
    """(reply text, input tokens, output tokens). Every failure is an LlmError with one line."""
    if config.provider == "anthropic":
        text, tin, tout = _ask_anthropic(config, system, user)
    elif config.provider == "local":
        text, tin, tout = _ask_local(config, system, user)
    else:
        raise LlmError("no LLM configured (set ANTHROPIC_API_KEY, or PT_LLM=local)")
    if not text.strip():
        raise LlmError(f"the LLM ({config.provider} {config.model}) returned an empty reply")
    return text, tin, tout


def _ask_anthropic(config: LlmConfig, system: str, user: str) -> tuple[str, int, int]:
    import anthropic

    key = config.api_key or os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_KEY")
    if not key:
        raise LlmError("ANTHROPIC_API_KEY is not set")
    client = None
    try:
        client = anthropic.Anthropic(api_key=key, base_url=config.base_url, timeout=config.timeout_s, max_retries=0)
        resp = client.messages.create(model=config.model, max_tokens=config.max_tokens, system=system,
                                      messages=[{"role": "user", "content": user}])
    except anthropic.APITimeoutError:
        raise LlmError(f"LLM request timed out after {config.timeout_s:g} s") from None
    except anthropic.APIConnectionError as exc:
        raise LlmError(f"cannot reach the LLM at {client.base_url if client else config.base_url}: "
                       f"{_one_line(exc)}") from None
    except anthropic.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
        raise LlmError(f"LLM request failed: HTTP {exc.status_code}: {_one_line(detail or exc.message)}") from None
    except anthropic.AnthropicError as exc:  # unparseable body, bad configuration
        raise LlmError(f"LLM request failed: {_one_line(exc)}") from None
    finally:
        if client is not None:
            client.close()
    text = "".join(getattr(b, "text", "") for b in (resp.content or []) if getattr(b, "type", "") == "text")
    usage = resp.usage
    return text, int(getattr(usage, "input_tokens", 0) or 0), int(getattr(usage, "output_tokens", 0) or 0)


_LOCAL_MODELS: dict[str, object] = {}  # path -> llama_cpp.Llama: refine rounds reuse the loaded model


def _ask_local(config: LlmConfig, system: str, user: str) -> tuple[str, int, int]:
    try:
        import llama_cpp
    except ImportError:
        raise LlmError("the local LLM needs llama-cpp-python (pip install 'parseltongue[local]')") from None
    if not config.model or not Path(config.model).is_file():
        raise LlmError(f"no local model file {config.model!r} (set PT_LLM_GGUF, or run `pt models ensure`)")
    from .models import ModelUnavailable, load_llama, quiet_stderr

    llm = _LOCAL_MODELS.get(config.model)
    if llm is None:
        try:
            llm = load_llama(config.model, n_ctx=LOCAL_CONTEXT_TOKENS)
        except ModelUnavailable as exc:
            raise LlmError(f"cannot load {config.model}: {_one_line(exc)}") from None
        _LOCAL_MODELS[config.model] = llm
    deadline, late = time.monotonic() + config.timeout_s, []
    eos = llm.token_eos()

    # llama.cpp generates synchronously and a logits processor is the one hook called per token;
    # it runs inside a C callback that swallows exceptions, so past the deadline it forces the
    # end-of-sequence token instead of raising.
    def stop_at_deadline(_ids, logits):
        if time.monotonic() > deadline:
            late.append(True)
            logits[:] = float("-inf")
            logits[eos] = 0.0
        return logits

    try:
        with quiet_stderr():
            # Some chat templates (Gemma's) have no system role: send one user turn.
            out = llm.create_chat_completion(messages=[{"role": "user", "content": f"{system}\n\n{user}"}],
                                             max_tokens=config.max_tokens, temperature=0.0,
                                             logits_processor=llama_cpp.LogitsProcessorList([stop_at_deadline]))
    except (ValueError, RuntimeError) as exc:  # prompt longer than the context, template errors
        raise LlmError(f"local LLM failed: {_one_line(exc)}") from None
    if late:
        raise LlmError(f"LLM request timed out after {config.timeout_s:g} s")
    text = out["choices"][0]["message"].get("content") or ""
    usage = out.get("usage") or {}
    return text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))


# ------------------------------------------------------------------ the reply

_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)```", re.S)


def parse_reply(text: str) -> tuple[list[LlmEdit], list[str]]:
    """Edits from a reply that holds one JSON object {"edits": [...]} (bare, amid prose, or in
    one ``` fence). Anything else is refused with a reason; bad edits are refused one by one."""
    fences = [f for f in _FENCE.findall(text) if f.lstrip().startswith("{")]
    if len(fences) > 1:
        return [], [f"reply has {len(fences)} fenced JSON blocks, expected one"]
    body = fences[0] if fences else text
    lo = body.find("{")
    if lo < 0:
        return [], ["reply holds no JSON object"]
    try:
        doc, end = json.JSONDecoder().raw_decode(body, lo)
    except ValueError as exc:
        return [], [f"reply is not one JSON object: {_one_line(exc)}"]
    if "{" in body[end:]:
        return [], ["reply holds more than one JSON object"]
    if not isinstance(doc, dict) or not isinstance(doc.get("edits"), list):
        return [], ['reply is not of the shape {"edits": [...]}']
    edits, rejected = [], []
    for i, e in enumerate(doc["edits"], 1):
        if not isinstance(e, dict):
            rejected.append(f"edit {i}: not an object")
        elif not isinstance(e.get("node"), str) or not e["node"]:
            rejected.append(f"edit {i}: 'node' must be a node id")
        elif not isinstance(e.get("find"), str) or not e["find"]:
            rejected.append(f"edit {i} ({e['node']}): 'find' must be non-empty text")
        elif not isinstance(e.get("replace"), str):
            rejected.append(f"edit {i} ({e['node']}): 'replace' must be text")
        elif e["find"] == e["replace"]:
            rejected.append(f"edit {i} ({e['node']}): 'find' and 'replace' are the same")
        else:
            edits.append(LlmEdit(e["node"], e["find"], e["replace"]))
    return edits, rejected


def _inside(workspace: Path, file_path: str) -> Path | None:
    """The file a graph path names, if it is a relative path that stays inside the workspace
    (symlinks resolved); None otherwise."""
    if not file_path or PurePosixPath(file_path).is_absolute() or PureWindowsPath(file_path).drive \
            or file_path.startswith("\\") or ".." in PurePosixPath(file_path.replace("\\", "/")).parts:
        return None
    root = workspace.resolve()
    target = (root / file_path).resolve()
    return target if target.is_relative_to(root) else None


def _span(node: dict, data: bytes) -> tuple[int, int] | None:
    """The node's byte span in `data`: span_start/span_end when given, else its 1-based lines
    (the context pack's rows carry lines, not bytes). None when it does not fit the file."""
    if "span_start" in node and "span_end" in node:
        start, end = int(node["span_start"]), int(node["span_end"])
    elif node.get("line_start"):
        first, last = int(node["line_start"]), int(node.get("line_end") or node["line_start"])
        starts = [0] + [m.end() for m in re.finditer(b"\n", data)]
        if first > len(starts) or last < first:
            return None
        start = starts[first - 1]
        end = starts[last] - 1 if last < len(starts) else len(data)
    else:
        return None
    return (start, end) if 0 <= start <= end <= len(data) else None


def resolve_edits(workspace: Path, nodes: dict[str, dict], edits: list[LlmEdit]) -> tuple[list[ByteEdit], list[str]]:
    """Byte edits for the edits that name a known node of a workspace file and whose `find`
    occurs exactly once in that node's current bytes; the first of overlapping edits wins."""
    accepted: list[ByteEdit] = []
    rejected: list[str] = []
    files: dict[str, bytes | None] = {}
    for i, e in enumerate(edits, 1):
        tag = f"edit {i} ({e.node_id})"
        node = nodes.get(e.node_id)
        if node is None:
            rejected.append(f"{tag}: unknown node (not in the context)")
            continue
        rel = str(node.get("file_path") or "")
        path = _inside(workspace, rel)
        if path is None:
            rejected.append(f"{tag}: file {rel!r} is outside the workspace")
            continue
        if rel not in files:
            try:
                files[rel] = path.read_bytes() if path.is_file() else None
            except OSError:
                files[rel] = None
        data = files[rel]
        if data is None:
            rejected.append(f"{tag}: file {rel} does not exist")
            continue
        span = _span(node, data)
        if span is None:
            rejected.append(f"{tag}: the node's span does not fit {rel} (changed since ingest?)")
            continue
        needle, body = e.find.encode("utf-8"), data[span[0]:span[1]]
        count = body.count(needle)
        if count != 1:
            rejected.append(f"{tag}: 'find' occurs {count} times in the node's code, expected once")
            continue
        start = span[0] + body.find(needle)
        edit = ByteEdit(PurePosixPath(rel).as_posix(), start, start + len(needle), e.replace, e.node_id)
        clash = next((a for a in accepted if a.file == edit.file and a.start < edit.end and edit.start < a.end), None)
        if clash is not None:
            rejected.append(f"{tag}: overlaps an earlier edit of {clash.node_id}")
            continue
        accepted.append(edit)
    return accepted, rejected


def propose(workspace: Path, config: LlmConfig, diagnostics: list[dict], context: list[dict],
            feedback: list[dict] | None = None) -> LlmProposal:
    """Ask the model once; a bad reply gives a proposal without edits and the reasons. Raises
    LlmError only when the model could not be asked."""
    system, user = build_prompt(diagnostics, context, feedback)
    raw, tin, tout = ask(config, system, user)
    edits, rejected = parse_reply(raw)
    nodes = {row["id"]: row for row in context}
    accepted, refused = resolve_edits(Path(workspace), nodes, edits)
    return LlmProposal(accepted, tin, tout, rejected + refused, raw)
