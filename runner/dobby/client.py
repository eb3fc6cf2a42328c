"""Talking to a running Dobby: JSON-RPC 2.0 over its Unix socket, with python-lsp-jsonrpc.

The client is python-lsp-jsonrpc (framing, request/response matching), not pygls: pygls imports
lsprotocol's type tables, ~0.6-1 s that every `pt query` through Dobby would pay. Both speak
the same base protocol (Content-Length framed JSON-RPC 2.0).

    call(path, "ping")                       # -> result; DobbyError / NotRunning
    try_dobby("query", {...})                # the CLI's hook: the result, or None when no Dobby answers
"""
from __future__ import annotations

import os
import socket
import stat
import threading
import time
from typing import Any, Callable

from ..errors import PtError

PROGRESS = "dobby/progress"  # server -> client notification on long tasks


class DobbyError(Exception):
    """A JSON-RPC error from Dobby (or no answer): code and one-line message."""

    def __init__(self, message: str, code: int = -32000, data: Any = None):
        super().__init__(message)
        self.message, self.code, self.data = message, code, data


_EXIT = {-32602: 2, -32600: 2, -32700: 2, -32601: 2, -32010: 1}  # JSON-RPC code -> pt exit code


class DobbyFailed(PtError):
    """Dobby answered with an error; the exit code follows its kind."""

    def __init__(self, err: DobbyError):
        super().__init__(f"dobby: {err.message}")
        self.exit_code = _EXIT.get(err.code, 3 if err.code in (-32603,) else 1)


class NotRunning(DobbyError):
    """Nothing answers on the socket."""


def answers(path: str, timeout: float = 0.5) -> bool:
    """Whether a process accepts connections on `path` (a refused or missing socket: False)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def call(path: str, method: str, params: dict | None = None, timeout: float | None = None,
         on_progress: Callable[[dict], None] | None = None) -> Any:
    """One request on a fresh connection. Never waits on a dead daemon: a closed connection
    fails the call at once; `timeout` bounds a live but slow one."""
    from pylsp_jsonrpc.endpoint import Endpoint
    from pylsp_jsonrpc.exceptions import JsonRpcException
    from pylsp_jsonrpc.streams import JsonRpcStreamReader, JsonRpcStreamWriter

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise NotRunning(f"Dobby is not running on {path} ({exc.strerror or exc})") from None
    rfile, wfile = sock.makefile("rb"), sock.makefile("wb")
    writer = JsonRpcStreamWriter(wfile)
    dispatcher = {PROGRESS: (lambda params: on_progress(params))} if on_progress else {}
    endpoint = Endpoint(dispatcher, writer.write, max_workers=1)
    def listen() -> None:
        try:
            JsonRpcStreamReader(rfile).listen(endpoint.consume)
        except (OSError, ValueError):  # reset or closed under it: the call below sees the reader gone
            pass

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    try:
        fut = endpoint.request(method, params or {})
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return fut.result(timeout=0.1)
            except JsonRpcException as exc:
                raise DobbyError(exc.message or str(exc), exc.code if exc.code is not None else -32000, exc.data) from None
            except TimeoutError:
                pass
            if not reader.is_alive() and not fut.done():
                raise DobbyError(f"{method}: Dobby closed the connection before answering", -32002)
            if deadline is not None and time.monotonic() > deadline:
                raise DobbyError(f"{method}: no answer from Dobby within {timeout:g} s", -32001)
    finally:
        # Shut the socket down first: it ends the reader's blocking read (closing its file
        # object first would wait on the lock that read holds).
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        reader.join(timeout=1)
        endpoint.shutdown()
        for f in (wfile, rfile):
            try:
                f.close()
            except OSError:
                pass
        sock.close()


# ------------------------------------------------------------------ the CLI's hook

def running_socket() -> str | None:
    """The socket of a Dobby the CLI should use, or None (PT_DOBBY=0, or no socket file)."""
    from . import config as C

    if not C.use_dobby():
        return None
    path = C.socket_path()
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    return path


def try_dobby(method: str, params: dict, on_progress: Callable[[dict], None] | None = None) -> Any:
    """The result of `method` on a running Dobby, or None when none answers (the caller then
    works in-process, as without Dobby). Errors Dobby reports are raised as pt errors."""
    path = running_socket()
    if path is None:
        return None
    try:
        return call(path, method, params, on_progress=on_progress)
    except NotRunning:
        return None  # a stale socket file: work in-process
    except DobbyError as exc:
        raise DobbyFailed(exc) from None
