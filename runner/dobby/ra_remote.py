"""A worker's warm rust-analyzer, lent to the hydrate flow and PreFlight's ra stage that Dobby's
writer thread runs (adapters.rust_analyzer.SessionSource).

    source = WarmSource(pools, loop)
    hydrate(ws, store, ra_source=source)       # pt.ra_source = source, for PreFlight

The session lives in a CPU worker opened with `ra` (runner/dobby/workers.py); the requests of
one hydrate write batch, or one PreFlight overlay, are one call on that worker. A worker that dies is an analyzer gone for good (RaUnavailable): the
flows then keep their heuristic facts or skip the stage, as they do without Dobby.
"""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from ...adapters import rust_analyzer as ra
from .pools import Pools, Worker, WorkerDied


class WarmSource:
    """Lends the session of `root` from the pool's rust-analyzer worker (opened on first need)."""

    def __init__(self, pools: Pools, loop: asyncio.AbstractEventLoop):
        self.pools, self.loop = pools, loop

    def _await(self, coro) -> Any:
        """Run a pool coroutine from the writer thread; the worker's failures as the flows expect them."""
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        except WorkerDied as exc:
            raise ra.RaUnavailable(str(exc)) from None
        except Exception as exc:
            cause = getattr(exc, "cause", None)  # Ray wraps the worker's exception; the flows catch RaError
            if isinstance(cause, ra.RaError):
                raise cause from None
            raise

    def __call__(self, root: Path, ready_timeout: float) -> "RemoteSession | None":
        w = self._await(self.pools.ra_worker(str(root)))
        if w is None:
            return None  # no room for one: the flow starts its own
        return RemoteSession(self, w, str(root), self._await(self.pools.ra_begin(w, str(root), ready_timeout)))


class RemoteSession:
    """What hydrate and PreFlight ask of a RaSession, answered next to the worker's session: a
    hydrate write batch's requests in one call (collect_chunk), a PreFlight overlay in one call."""

    def __init__(self, source: WarmSource, worker: Worker, root: str, info: dict):
        self._source, self._worker, self.root = source, worker, root
        self.binary = SimpleNamespace(path=info["binary"], version=info["version"])
        self.pid = info["pid"]
        self._restarts = info["restarts"]

    def _call(self, method: str, *args: Any) -> Any:
        return self._source._await(self._source.pools.call_on(self._worker, method, *args))

    @property
    def restarts(self) -> int:
        """Crash restarts of the worker's session so far (hydrate reports the ones during its run)."""
        return self._call("ra_status").get(self.root, {}).get("restarts", self._restarts)

    def collect_chunk(self, db: str, chunk: list, budget_s: float) -> tuple:
        """The hydrate flow's requests for one write batch, run in the worker next to its session."""
        return self._call("ra_hydrate_chunk", self.root, db or None, chunk, budget_s)

    @contextlib.contextmanager
    def overlay(self, texts: dict) -> Iterator["_Overlay"]:
        yield _Overlay(self, dict(texts))

    def shutdown(self) -> None:
        """Nothing: the worker keeps its session warm."""


class _Overlay:
    def __init__(self, session: RemoteSession, texts: dict):
        self._session, self._texts = session, texts

    def diagnostics(self, timeout: float | None = None) -> dict:
        return self._session._call("ra_overlay", self._session.root, self._texts, timeout or 10.0)
