"""Dobby, the daemon: JSON-RPC methods on a Unix socket, pools on Ray, one Cozo writer.

    serve(socket_path, ray_address=None, max_workers=None)   # blocks until shutdown

Methods (params are one JSON object; errors are JSON-RPC errors with the codes below):
  ping, get_status, ensure_model {name}, open_worker {kind: cpu|llm, model},
  close_worker {id}, completion {prompt, system, max_tokens, model}, embed {texts, model},
  run_task {agent: A1|A2|A3, payload}, verify_default {name, lines},
  query / context / ingest / hydrate / fix / summarize / embed_nodes (what `pt query`, `pt context`,
  `pt ingest`, `pt hydrate`, `pt run fix`, `pt summarize`, `pt models embed` send),
  shutdown {graceful_timeout}.
Reads run on CPU workers; anything that writes the graph (ingest, fix, a writing program) runs
on Dobby's single writer thread. Logs are JSON lines on stderr.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pygls.exceptions import JsonRpcException

from ...adapters import models as M
from ...adapters.llm import LlmError
from ...adapters import ray_runtime as R
from ..errors import GateFailed, PtError, UsageError
from . import server as rpc
from .client import answers
from .pools import MemoryRefused, PoolLimit, Pools, WorkerDied, free_mb
from .ra_remote import WarmSource
from .workers import NeedsWriter

log = logging.getLogger("parseltongue.dobby")

# JSON-RPC error codes (the -32000..-32099 range is the server's own)
BAD_INPUT = -32602  # JSON-RPC's "invalid params": bad usage or input, as pt's exit 2
GATE_FAILED = -32010  # a gate refused (pt's exit 1)
MEMORY_REFUSED = -32020
POOL_LIMIT = -32021
WORKER_DIED = -32030
UNAVAILABLE = -32040  # Ray, llama.cpp or a model is missing
SHUTTING_DOWN = -32050
INTERNAL = -32603
READY_TIMEOUT_S = 120.0  # a rust-analyzer started ahead of need (open_worker with a workspace)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname.lower(), "msg": record.getMessage()}
        if record.name != log.name:  # a library's warning (Ray's, through the root logger)
            doc["logger"] = record.name
        doc.update(getattr(record, "fields", {}) or {})
        return json.dumps(doc, default=str)


def _setup_logging():
    """Every line on Dobby's stderr is JSON. Its log lines go to the real stderr; file descriptor
    2 becomes a pipe whose lines (Ray's C++ core writes there, and Ray's warnings, which have no
    handler under configure_logging=False) are logged as {"logger": "stderr", ...}. Returns what
    puts the real stderr back (for pt's own one-line error when serving fails)."""
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(real)
    handler.setFormatter(_JsonFormatter())
    foreign = logging.getLogger("stderr")
    for logger in (log, foreign):
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    root = logging.getLogger()  # libraries' warnings that reach the root logger
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pygls").setLevel(logging.CRITICAL)  # its own logs are not JSON; errors reach clients
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    foreign.warning(line.rstrip("\n"))

    pumping = threading.Thread(target=pump, name="dobby-stderr", daemon=True)
    pumping.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real.fileno(), 2)  # closes the pipe's write end: the pump drains it and stops
        pumping.join(2)

    return restore


def _event(msg: str, **fields: Any) -> None:
    log.info(msg, extra={"fields": fields})


def _rpc_error(exc: BaseException) -> JsonRpcException:
    """Any failure as a JSON-RPC error with a one-line message."""
    try:
        import ray

        if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(exc, PtError) and exc.cause is not None:
            exc = exc.cause
    except ImportError:
        pass
    if isinstance(exc, JsonRpcException):
        return exc
    first = lambda e: ((getattr(e, "message", None) or str(e)).strip().splitlines() or [type(e).__name__])[0]  # noqa: E731
    if isinstance(exc, MemoryRefused):
        return JsonRpcException(first(exc), MEMORY_REFUSED)
    if isinstance(exc, PoolLimit):
        return JsonRpcException(first(exc), POOL_LIMIT)
    if isinstance(exc, WorkerDied):
        return JsonRpcException(first(exc), WORKER_DIED)
    if isinstance(exc, GateFailed):
        return JsonRpcException(first(exc), GATE_FAILED)
    if isinstance(exc, (UsageError, KeyError, ValueError, TypeError)):
        return JsonRpcException(first(exc), BAD_INPUT)
    if isinstance(exc, (M.ModelUnavailable, R.RayUnavailable, LlmError)):
        return JsonRpcException(first(exc), UNAVAILABLE)
    if isinstance(exc, PtError):
        return JsonRpcException(first(exc), INTERNAL)
    return JsonRpcException(f"internal error: {type(exc).__name__}: {first(exc)}", INTERNAL)


def _need(params: dict, key: str, kind: type | tuple, default: Any = ...) -> Any:
    if key not in params or params[key] is None:
        if default is ...:
            raise UsageError(f"missing param {key!r}")
        return default
    value = params[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UsageError(f"param {key!r} must be a {name}")
    return value


class Dobby:
    def __init__(self, socket_path: str, ray_address: str | None, max_workers: int | None):
        self.socket_path = socket_path
        self.ray_address = ray_address
        self.max_workers = max_workers
        self.started = time.time()
        self.stop = threading.Event()
        self.stopping = False
        self.inflight = 0
        self.ray: dict = {}
        self.pools: Pools | None = None
        self.ra_source: WarmSource | None = None  # lends the hydrate flow and PreFlight a warm rust-analyzer
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dobby-writer")  # Cozo's one writer
        self.writer_queue = 0
        self._writer_pts: dict[tuple[str, str], Any] = {}
        self._done: asyncio.Event | None = None

    # ------------------------------------------------------------ plumbing

    def methods(self) -> dict:
        names = ("ping", "get_status", "ensure_model", "open_worker", "close_worker", "completion", "embed",
                 "run_task", "verify_default", "query", "context", "ingest", "hydrate", "fix", "summarize",
                 "embed_nodes", "shutdown")
        return {n: self._guarded(n, getattr(self, "m_" + n)) for n in names}

    def _guarded(self, name: str, fn):
        async def handler(params: dict, conn: rpc.Connection) -> Any:
            if self.stopping and name not in ("ping", "get_status", "shutdown"):
                raise JsonRpcException("Dobby is shutting down", SHUTTING_DOWN)
            t0 = time.perf_counter()
            self.inflight += 1
            ok = True
            try:
                return await fn(params, conn)
            except BaseException as exc:  # noqa: BLE001 - the daemon never dies of a request
                ok = False
                if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                    raise
                err = _rpc_error(exc)
                _event("error", method=name, code=err.code, error=err.message)
                raise err from None
            finally:
                self.inflight -= 1
                _event("request", method=name, client=conn.id, ok=ok, ms=round((time.perf_counter() - t0) * 1000, 1))

        return handler

    async def _in_writer(self, fn, *args: Any) -> Any:
        self.writer_queue += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)
        finally:
            self.writer_queue -= 1

    def _writer_pt(self, workspace: str, db: str | None):
        """The writer's open graph of a workspace (created or migrated as `pt` would)."""
        from ..api import Pt, default_db

        ws = Path(workspace).resolve()
        target = db or default_db(ws)
        key = (str(ws), target)
        if key not in self._writer_pts:
            pt = Pt.open(ws, target, init=True)
            pt.ra_source = self.ra_source  # PreFlight's ra stage: the warm rust-analyzer worker's session
            self._writer_pts[key] = pt
        return self._writer_pts[key]

    # ------------------------------------------------------------ methods

    async def m_ping(self, params: dict, conn) -> dict:
        return {"pong": True, "pid": os.getpid(), "uptime_s": round(time.time() - self.started, 3)}

    async def m_get_status(self, params: dict, conn) -> dict:
        pools = self.pools.describe() if self.pools else {"workers": [], "limits": {}, "queues": {}}
        loaded = {w["model"] for w in pools["workers"] if w["model"]}
        models = [{**m, "loaded": m["model"] in loaded} for m in M.ls()]
        return {"pid": os.getpid(), "socket": self.socket_path, "uptime_s": round(time.time() - self.started, 1),
                "stopping": self.stopping, "ray": self.ray, "mem_free_mb": free_mb(),
                "mem_limit_mb": _mem_limit(), "rss_mb": _rss_mb(), "models": models,
                "workers": pools["workers"], "limits": pools["limits"],
                "queues": {**pools["queues"], "writer": self.writer_queue, "requests": self.inflight - 1}}

    async def m_ensure_model(self, params: dict, conn) -> dict:
        name = _need(params, "name", str, M.DEFAULT_MODEL)
        conn.progress("ensure_model", f"obtaining {name}")
        # install=False: a daemon does not pip-install; the error says what to install
        rec = await asyncio.get_running_loop().run_in_executor(None, lambda: M.ensure(name, install=False))
        return {"model": rec.model_id, "path": rec.path, "sha256": rec.sha256, "source": rec.source,
                "size_mb": round(rec.size / 2**20, 1)}

    async def m_open_worker(self, params: dict, conn) -> dict:
        kind = _need(params, "kind", str)
        if kind == "cpu":
            ra, workspace = _need(params, "ra", bool, False), _need(params, "workspace", str, None)
            if workspace and not ra:
                raise UsageError("param 'workspace' goes with ra: true (the workspace to start rust-analyzer for)")
            w = await self.pools.open_cpu(ra=ra)
            if workspace:  # started now, so the first hydrate or PreFlight pays no start-up
                root = Path(workspace).resolve()
                if not root.is_dir():
                    raise UsageError(f"workspace {workspace} is not a directory")
                conn.progress("open_worker", f"starting rust-analyzer for {root}")
                await self.pools.ra_begin(w, str(root), READY_TIMEOUT_S)
            return w.describe()
        if kind == "llm":
            return (await self.pools.open_llm(_need(params, "model", str, M.DEFAULT_MODEL))).describe()
        raise UsageError(f"kind must be 'cpu' or 'llm', not {kind!r}")

    async def m_close_worker(self, params: dict, conn) -> dict:
        wid = _need(params, "id", str)
        try:
            return {"closed": await self.pools.close(wid)}
        except KeyError:
            raise UsageError(f"no worker {wid!r}") from None

    async def m_completion(self, params: dict, conn) -> dict:
        prompt = _need(params, "prompt", str)
        stop = _need(params, "stop", list, [])
        return await self.pools.llm_call("completion", prompt, _need(params, "max_tokens", int, 128),
                                         [str(x) for x in stop], model=_need(params, "model", str, M.DEFAULT_MODEL))

    async def m_embed(self, params: dict, conn) -> dict:
        texts = _need(params, "texts", list)
        if not all(isinstance(t, str) for t in texts):
            raise UsageError("param 'texts' must be a list of strings")
        return await self.pools.llm_call("embed", texts, model=_need(params, "model", str, M.DEFAULT_MODEL))

    async def m_run_task(self, params: dict, conn) -> dict:
        agent = _need(params, "agent", str)
        payload = _need(params, "payload", dict, {})
        conn.progress("run_task", f"{agent} started")
        return await self.pools.cpu_call("run_task", agent, payload)

    async def m_verify_default(self, params: dict, conn) -> dict:
        lines = _need(params, "lines", int, 20)
        if not 1 <= lines <= 200:
            raise UsageError("param 'lines' must be between 1 and 200")
        return await self.pools.llm_call("verify", lines, model=_need(params, "name", str, M.DEFAULT_MODEL))

    async def m_query(self, params: dict, conn) -> dict:
        ws, db = _need(params, "workspace", str), _need(params, "db", str, None)
        program = _need(params, "program", str)
        args = (ws, db, program, _need(params, "cli_params", dict, {}), _need(params, "params", dict, {}),
                _need(params, "vars", dict, {}))
        try:
            return await self.pools.cpu_call("query", *args)
        except NeedsWriter:  # a program that writes: the one writer runs it
            return await self._in_writer(self._write_query, *args)

    def _write_query(self, ws: str, db: str | None, program: str, cli_params: dict, params: dict, vars: dict) -> dict:
        from .. import programs as P

        pt = self._writer_pt(ws, db)
        prog = pt.registry.get(program)
        res = pt.run(prog.id, {**P.coerce_cli_params(prog, cli_params), **params}, vars)
        return {"program": prog.id, "headers": res.headers, "rows": res.rows}

    async def m_context(self, params: dict, conn) -> dict:
        return await self.pools.cpu_call("context", _need(params, "workspace", str), _need(params, "db", str, None),
                                         _need(params, "seeds", list), _need(params, "budget", int, 4000),
                                         _need(params, "query", str, ""))

    async def m_ingest(self, params: dict, conn) -> dict:
        ws, db = _need(params, "workspace", str), _need(params, "db", str, None)
        paths = _need(params, "paths", list, None)
        use_cargo = not _need(params, "no_cargo", bool, False)
        jobs = _need(params, "jobs", int, None)

        last = [0.0]

        def step(label: str, done: int, total: int) -> None:  # at most ~2 notifications a second
            now = time.monotonic()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                conn.progress("ingest", label, done, total)

        then_hydrate = _need(params, "hydrate", bool, False)

        def run() -> dict:
            from ..ingest import ingest

            pt = self._writer_pt(ws, db)
            rep = ingest(pt.workspace, pt.store, paths=paths or None, use_cargo=use_cargo, jobs=jobs,
                         progress=step, **_ray_parse(self.ray))
            if not then_hydrate:
                return rep.as_dict()
            return {**rep.as_dict(), "hydrate": self._hydrate(pt, paths, None, conn)}

        return await self._in_writer(run)

    async def m_hydrate(self, params: dict, conn) -> dict:
        """`pt hydrate`: the writer writes, the rust-analyzer worker's warm session answers."""
        ws, db = _need(params, "workspace", str), _need(params, "db", str, None)
        paths = _need(params, "paths", list, None)
        budget = _need(params, "budget_s", (int, float), None)
        return await self._in_writer(lambda: self._hydrate(self._writer_pt(ws, db), paths, budget, conn))

    def _hydrate(self, pt, paths: list | None, budget_s: float | None, conn) -> dict:
        from ..hydrate import DEFAULT_BUDGET_S, hydrate

        last = [0.0]

        def on_file(path: str, done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] > 0.5 or done == total:
                last[0] = now
                conn.progress("hydrate", "pt hydrate:", done, total)

        rep = hydrate(pt.workspace, pt.store, paths=paths or None,
                      budget_s=DEFAULT_BUDGET_S if budget_s is None else budget_s, on_file=on_file,
                      ra_source=self.ra_source)
        return rep.as_dict()

    async def m_fix(self, params: dict, conn) -> dict:
        ws, db = _need(params, "workspace", str), _need(params, "db", str, None)
        opts = _need(params, "options", dict)
        yes = _need(params, "yes", bool, False)
        llm = _need(params, "llm", dict, None)

        def run() -> dict:
            from ...adapters import llm as L
            from ..fix import FixOptions, run_fix

            pt = self._writer_pt(ws, db)
            cfg = L.LlmConfig(**llm) if llm else None
            fo = FixOptions(**opts, llm=cfg)
            rep = run_fix(pt, fo, lambda diff: yes, progress=lambda msg: conn.progress("fix", msg))
            return rep.as_dict()

        return await self._in_writer(run)

    async def m_summarize(self, params: dict, conn) -> dict:
        """`pt summarize`: the writer plans and stores; each batch's texts go to the LLM pool."""
        from ..summarize import eta_line, summarize_changed

        ws, db = _need(params, "workspace", str), _need(params, "db", str, None)
        paths, budget = _need(params, "paths", list, []), _need(params, "budget_s", (int, float), None)
        on_pool = _OnPool(self.pools, asyncio.get_running_loop(), _need(params, "model", str, M.DEFAULT_MODEL))

        def step(done: int, total: int, elapsed: float) -> None:
            conn.progress("summarize", eta_line(done, total, elapsed))

        return await self._in_writer(lambda: summarize_changed(self._writer_pt(ws, db), on_pool, paths, budget,
                                                               progress=step))

    async def m_embed_nodes(self, params: dict, conn) -> dict:
        """`pt models embed`: the writer plans and stores; each batch's texts go to the LLM pool."""
        from ..embed import embed_changed

        ws, db = _need(params, "workspace", str), _need(params, "db", str, None)
        batch = _need(params, "batch", int, 32)
        if batch < 1:
            raise UsageError("param 'batch' must be at least 1")
        on_pool = _OnPool(self.pools, asyncio.get_running_loop(), _need(params, "model", str, M.DEFAULT_MODEL))
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            conn.progress("embed_nodes", f"pt models embed: {done[0]} nodes")

        return await self._in_writer(lambda: embed_changed(self._writer_pt(ws, db), on_pool, batch, progress=step))

    async def m_shutdown(self, params: dict, conn) -> dict:
        timeout = float(_need(params, "graceful_timeout", (int, float), 30))
        if not self.stopping:
            self.stopping = True
            asyncio.get_running_loop().create_task(self._drain_and_stop(timeout))
        return {"stopping": True, "inflight": self.inflight - 1, "graceful_timeout": timeout}

    async def _drain_and_stop(self, timeout: float) -> None:
        _event("shutdown requested", inflight=self.inflight, graceful_timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.inflight > 0 and time.monotonic() < deadline:  # (the shutdown request has been answered)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # let the last answers leave
        if self._done is not None:
            self._done.set()

    # ------------------------------------------------------------ run

    async def run(self) -> None:
        self._done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(self.m_shutdown({"graceful_timeout": 30}, None)))
        claim_socket(self.socket_path)
        self.ray = await loop.run_in_executor(None, R.connect, self.ray_address)
        self.ray["cpus"] = R.cluster_cpus()
        self.pools = Pools(self.max_workers)
        self.ra_source = WarmSource(self.pools, loop)
        try:
            await self.pools.open_cpu()  # one warm worker from the start
        except (MemoryRefused, PoolLimit) as exc:
            _event("no warm worker", reason=str(exc))
        server = await rpc.serve(self.socket_path, self.methods(), self.stop)
        _event("serving", socket=self.socket_path, pid=os.getpid(), ray=self.ray, mem_limit_mb=_mem_limit())
        try:
            await self._done.wait()
        finally:
            server.close()  # no new connections; the socket file goes last, when all is stopped
            self.stop.set()
            await self.pools.close_all()
            self.writer.shutdown(wait=True)
            for pt in self._writer_pts.values():
                pt.close()
            R.disconnect()
            _unlink(self.socket_path)
            _event("stopped")


class _OnPool:
    """The summarizer / encoder Dobby's writer hands to summarize_changed / embed_changed: each
    batch is spread over the LLM pool (Pools.llm_map), called from the writer thread."""

    def __init__(self, pools: Pools, loop: asyncio.AbstractEventLoop, model: str):
        self.pools, self.loop, self.model_id = pools, loop, model

    def _map(self, method: str, items: list) -> list:
        return asyncio.run_coroutine_threadsafe(self.pools.llm_map(method, items, model=self.model_id),
                                                self.loop).result()

    def ask_batch(self, rows: list) -> list:
        return self._map("ask", rows)

    def encode(self, texts: list) -> list:
        return self._map("encode", texts)


def _ray_parse(ray_info: dict) -> dict:
    """Ingest's parse batches go to Ray when Dobby joined a cluster (`serve --ray-address`); on
    its private one-node runtime the local process pool is as fast and needs no copies."""
    if ray_info.get("owned", True):
        return {}
    from .ingest_ray import parse_map

    return {"parse_map": parse_map}


def _mem_limit() -> int | None:
    raw = os.environ.get("PT_MEM_AVAILABLE_MB")
    return int(float(raw)) if raw else None


def _rss_mb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def claim_socket(path: str) -> None:
    """Make `path` ours: refuse if a live Dobby answers there or it is not a socket; remove a
    stale socket file left by a daemon that died."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        st = p.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{path} exists and is not a socket; not touching it")
    if answers(path):
        raise UsageError(f"Dobby is already running on {path} (`pt dobby status`)")
    _event("replacing a stale socket", socket=path)
    _unlink(path)


def serve(socket_path: str, ray_address: str | None = None, max_workers: int | None = None) -> None:
    restore = _setup_logging()
    try:
        asyncio.run(Dobby(socket_path, ray_address, max_workers).run())
    finally:
        restore()
