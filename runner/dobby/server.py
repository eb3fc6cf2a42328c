"""Dobby's side of JSON-RPC 2.0 over a Unix socket, on pygls's generic JSON-RPC protocol (pygls 2.x).

pygls does the protocol: Content-Length framing, request/response matching, error objects,
notifications. This module adds what pygls leaves to a server: a Unix socket listener with one
protocol per connection (pygls's own servers serve one client), owner-only permissions, plain
dicts as params (pygls's default converter turns them into namedtuples), and an error reply for
a body that is not JSON (pygls only logs it). Clients: runner/dobby/client.py.

    server = await serve(path, {"ping": handler, ...}, stop)   # handler(params: dict, conn) -> result
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from lsprotocol import converters
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest, JsonRpcParseError
from pygls.io_ import run_async
from pygls.protocol import JsonRPCNotification, JsonRPCProtocol, JsonRPCRequestMessage, JsonRPCResponseMessage

log = logging.getLogger("parseltongue.dobby")

from .client import PROGRESS

Handler = Callable[[dict, "Connection"], Awaitable[Any]]


def _converter():
    """pygls's converter, but params and results stay plain JSON values."""
    conv = converters.get_converter()
    for cls, keys in ((JsonRPCRequestMessage, ("id", "method", "params", "jsonrpc")),
                      (JsonRPCNotification, ("method", "params", "jsonrpc")),
                      (JsonRPCResponseMessage, ("id", "result", "jsonrpc"))):
        conv.register_structure_hook(cls, lambda obj, c, keys=keys: c(**{k: obj.get(k) for k in keys}))
    return conv


class _Host:
    """What pygls's protocol asks of the object it serves: a thread pool and an error sink."""

    def __init__(self) -> None:
        self.thread_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dobby-rpc")

    def _report_server_error(self, error: Exception, source: Any) -> None:
        log.debug("rpc error: %s", error)


class Connection:
    """One client connection: the pygls protocol bound to it, for notifications."""

    def __init__(self, protocol: JsonRPCProtocol, peer_id: int):
        self.protocol = protocol
        self.id = peer_id

    def progress(self, request: str, message: str, done: int | None = None, total: int | None = None) -> None:
        """A progress notification to this client (safe from any thread)."""
        params = {"request": request, "message": message, "done": done, "total": total}
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.protocol.notify, PROGRESS, params)

    _loop: asyncio.AbstractEventLoop


def _bad_input(protocol: JsonRPCProtocol, exc: Exception, _source: Any) -> None:
    """pygls logs an unparseable body and moves on; a client still deserves an answer."""
    if isinstance(exc, json.JSONDecodeError):
        err = JsonRpcParseError(f"parse error: {exc.msg}")
    elif isinstance(exc, JsonRpcException):
        err = exc
    else:
        err = JsonRpcInvalidRequest(f"invalid request: {exc}")
    protocol._send_data({"jsonrpc": "2.0", "id": None,  # no id can be known for an unreadable message
                         "error": {"code": err.code, "message": err.message}})


def _wrap(name: str, fn: Handler, conn: Connection):
    async def handler(params: Any) -> Any:
        if params is not None and not isinstance(params, dict):
            raise JsonRpcInvalidParams(f"{name}: params must be an object")
        return await fn(params or {}, conn)

    handler.__name__ = f"dobby_{name}"
    return handler


async def serve(path: str, methods: dict[str, Handler], stop: threading.Event) -> asyncio.AbstractServer:
    """Listen on `path` (created owner-only); each connection gets its own protocol."""
    host = _Host()
    counter = iter(range(1, 1 << 62))

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = JsonRPCProtocol(host, _converter())
        conn = Connection(protocol, next(counter))
        conn._loop = asyncio.get_running_loop()
        for name, fn in methods.items():
            protocol.fm.feature(name)(_wrap(name, fn, conn))
        protocol.set_writer(writer)
        try:
            await run_async(stop_event=stop, reader=reader, protocol=protocol, logger=log,
                            error_handler=lambda exc, src: _bad_input(protocol, exc, src))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-message
        finally:
            writer.close()

    old = os.umask(0o177)  # the socket file is born 0600: no window where others may connect
    try:
        server = await asyncio.start_unix_server(on_connect, path=path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server
