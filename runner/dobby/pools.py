"""Dobby's worker pools, as Ray actors, under a memory guard.

- CPU pool: up to min(--max-workers (5 at most), the cluster's CPUs, what free memory allows at
  CPU_WORKER_MB each) light workers (workers.CpuWorker). A request goes to the least busy worker;
  a new one is opened while all are busy and the limit allows. Each actor runs one request at a
  time; Ray queues the rest on it.
- LLM pool: one llama.cpp worker (workers.LlmWorker) for single requests, which queue on it;
  batches (summaries, node vectors: `llm_map`) are spread over it and one more worker per further
  live node of the cluster that the memory guard allows.
- The memory guard refuses to open a worker when free memory (capped by an injectable limit)
  is below its need plus a margin, with the figures in the message.

A worker that dies mid-request (killed, out of memory) is dropped and the request retried once on
a fresh worker; a second death is an error to the client. Nothing waits forever on a dead actor:
Ray fails its pending calls.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ...adapters import models as M
from . import config as C
from .cluster import spread
from .workers import CpuWorker, LlmWorker


class WorkerDied(Exception):
    """A worker died twice running the same request."""


class PoolLimit(Exception):
    """The pool is at its limit (count)."""


class MemoryRefused(Exception):
    """The memory guard refused to open a worker; the message gives the figures."""


LLM_CONTEXT = 4096  # tokens of context an LLM worker's model is loaded with


def free_mb() -> int:
    """What the memory guard sees: MemAvailable, or $PT_MEM_AVAILABLE_MB (`serve --mem-limit-mb`)."""
    return M.available_bytes() // 2**20


def guard(need_mb: int, what: str) -> None:
    free, margin = free_mb(), M.MARGIN_BYTES // 2**20
    if need_mb + margin > free:
        raise MemoryRefused(f"not opening {what}: it needs ~{need_mb} MB and {margin} MB to spare, "
                            f"but only {free} MB are free")


@dataclass
class Worker:
    id: str
    kind: str  # cpu | llm
    actor: Any
    pid: int
    model: str | None = None
    node: str = ""  # the Ray node it runs on
    ra: bool = False  # keeps warm rust-analyzer sessions
    ra_sessions: dict = field(default_factory=dict)  # root -> what its session last reported
    inflight: int = 0
    served: int = 0
    opened_at: float = field(default_factory=time.time)

    def describe(self) -> dict:
        doc = {"id": self.id, "kind": self.kind, "pid": self.pid, "node": self.node, "model": self.model,
               "inflight": self.inflight, "served": self.served, "up_s": round(time.time() - self.opened_at, 1)}
        if self.kind == "cpu":
            doc.update(ra=self.ra, ra_sessions=list(self.ra_sessions.values()))
        return doc


class Pools:
    def __init__(self, max_cpu: int | None = None):
        import ray

        self._ray = ray
        self.max_cpu = min(C.MAX_CPU_WORKERS, max_cpu or C.MAX_CPU_WORKERS)
        self.cpu: dict[str, Worker] = {}
        self.llm: Worker | None = None
        self.llm_more: list[Worker] = []  # batch workers on the cluster's other nodes (llm_map)
        self.llm_waiting = 0
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        # num_cpus=0: a worker holds no CPU reservation, so Ray tasks (ingest batches) still run;
        # Dobby itself bounds the count.
        self._cpu_actor = ray.remote(num_cpus=0, max_restarts=0)(CpuWorker)
        # CPU workers open graphs and workspaces by path: on Dobby's own node, even on a cluster
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self._llm_actor = ray.remote(num_cpus=0, max_restarts=0)(LlmWorker)

    # ------------------------------------------------------------ limits

    def cpu_limit(self) -> int:
        cores = int(self._ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        by_memory = max(0, (free_mb() - M.MARGIN_BYTES // 2**20) // C.CPU_WORKER_MB) + len(self.cpu)
        return max(0, min(self.max_cpu, cores, by_memory))

    # ------------------------------------------------------------ open / close

    async def open_cpu(self, ra: bool = False) -> Worker:
        async with self._lock:
            return await self._open_cpu(ra)

    async def _open_cpu(self, ra: bool = False) -> Worker:
        what = "a CPU worker with rust-analyzer" if ra else "a CPU worker"
        guard(C.CPU_WORKER_MB + (C.RA_SESSION_MB if ra else 0), what)  # memory first: its refusal names the figures
        limit = self.cpu_limit()
        if len(self.cpu) >= limit:
            raise PoolLimit(f"the CPU pool is full ({len(self.cpu)} of {limit} workers: min({self.max_cpu} allowed, "
                            f"the cluster's CPUs, {free_mb()} MB free / {C.CPU_WORKER_MB} MB a worker))")
        actor = self._cpu_actor.options(scheduling_strategy=self._here).remote(ra)
        w = Worker(f"cpu-{next(self._ids)}", "cpu", actor, await actor.pid.remote(), node=await actor.node.remote(),
                   ra=ra)
        self.cpu[w.id] = w
        return w

    async def ra_worker(self, root: str) -> Worker | None:
        """A worker with warm rust-analyzer sessions, the one holding `root`'s if any; one is
        opened if none is (None when the limits or the memory guard do not allow it: the
        caller then starts its own session, as without Dobby)."""
        async with self._lock:
            held = [w for w in self.cpu.values() if w.ra]
            for w in held:
                if root in w.ra_sessions:
                    return w
            if held:
                return held[0]
            try:
                return await self._open_cpu(ra=True)
            except (PoolLimit, MemoryRefused):
                return None

    async def ra_begin(self, w: Worker, root: str, ready_timeout: float) -> dict:
        """`root`'s warm session on worker w, ready and told of the edits on disk."""
        info = await self._run_on(w, "ra_begin", (root, ready_timeout))
        w.ra_sessions[root] = info
        return info

    async def open_llm(self, name: str = M.DEFAULT_MODEL) -> Worker:
        async with self._lock:
            if self.llm is not None:
                if self.llm.model != name:
                    raise PoolLimit(f"the LLM worker {self.llm.id} holds {self.llm.model}; close it before opening {name}")
                return self.llm
            rec = M.get(name)  # ModelUnavailable: not ensured
            size = os.path.getsize(rec.path) if os.path.isfile(rec.path) else rec.size
            guard(M.needed_bytes(size, LLM_CONTEXT) // 2**20, f"an LLM worker with {name}")
            actor = self._llm_actor.remote(name, rec.path, LLM_CONTEXT)
            try:
                pid = await actor.pid.remote()
            except self._ray.exceptions.RayActorError as exc:
                raise M.ModelUnavailable(f"the LLM worker could not load {name}: {_cause(exc)}") from None
            self.llm = Worker(f"llm-{next(self._ids)}", "llm", actor, pid, model=name, node=await actor.node.remote())
            return self.llm

    async def close(self, worker_id: str) -> dict:
        async with self._lock:
            w = self.cpu.pop(worker_id, None)
            if w is None and self.llm is not None and self.llm.id == worker_id:
                w, self.llm = self.llm, None
            if w is None and worker_id in (more := {x.id: x for x in self.llm_more}):
                w = more[worker_id]
                self.llm_more.remove(w)
            if w is None:
                raise KeyError(worker_id)
            if w.ra:  # its analyzers stop with a shutdown request, not orphaned by a kill
                try:
                    await asyncio.wait_for(w.actor.close_ra.remote(), 30)
                except Exception:  # noqa: BLE001 - dead or stuck: the kill below still ends it
                    pass
            self._ray.kill(w.actor)
            return w.describe()

    async def close_all(self) -> None:
        for wid in list(self.cpu) + [w.id for w in self._llms()]:
            try:
                await self.close(wid)
            except KeyError:
                pass

    # ------------------------------------------------------------ calls

    async def _pick_cpu(self) -> Worker:
        async with self._lock:
            idle = sorted(self.cpu.values(), key=lambda w: w.inflight)
            if idle and (idle[0].inflight == 0 or len(self.cpu) >= self.cpu_limit()):
                return idle[0]
            try:
                return await self._open_cpu()
            except (PoolLimit, MemoryRefused):
                if idle:
                    return idle[0]
                raise

    async def _run_on(self, w: Worker, method: str, args: tuple) -> Any:
        """One call on a worker; a dead worker is dropped from its pool and WorkerDied raised."""
        w.inflight += 1
        try:
            result = await getattr(w.actor, method).remote(*args)
            w.served += 1
            return result
        except self._ray.exceptions.RayActorError as exc:
            self.cpu.pop(w.id, None)
            if self.llm is w:
                self.llm = None
            if w in self.llm_more:
                self.llm_more.remove(w)
            raise WorkerDied(f"{w.kind} worker {w.id} (pid {w.pid}) died running {method}: {_cause(exc)}") from None
        finally:
            w.inflight -= 1

    async def call_on(self, w: Worker, method: str, *args: Any) -> Any:
        """One call on this worker (not retried elsewhere: the caller needs this one's state)."""
        return await self._run_on(w, method, args)

    async def cpu_call(self, method: str, *args: Any) -> Any:
        """Run a CPU worker's method; a worker that dies mid-call is replaced and the call retried once."""
        try:
            return await self._run_on(await self._pick_cpu(), method, args)
        except WorkerDied:
            return await self._run_on(await self._pick_cpu(), method, args)

    async def llm_call(self, method: str, *args: Any, model: str = M.DEFAULT_MODEL) -> Any:
        """Queue a call on the LLM worker, opening it (memory guard) if none is open. Not retried:
        a model that killed its worker (out of memory) would kill the next one too."""
        self.llm_waiting += 1
        try:
            w = await self.open_llm(model) if self.llm is None or self.llm.model != model else self.llm
        finally:
            self.llm_waiting -= 1
        return await self._run_on(w, method, args)

    async def llm_map(self, method: str, items: list, model: str = M.DEFAULT_MODEL) -> list:
        """method(chunk) over the LLM workers, results in item order: the items are cut into one
        contiguous chunk per worker. Workers: the pool's one, plus one per further live node of
        the cluster the memory guard allows (each pinned to a node that has none)."""
        self.llm_waiting += 1
        try:
            first = await self.open_llm(model) if self.llm is None or self.llm.model != model else self.llm
            async with self._lock:
                self.llm_more = [w for w in self.llm_more if w.model == model]
                nodes = self.llm_limit()
                while 1 + len(self.llm_more) < min(nodes, len(items)):
                    try:
                        self.llm_more.append(await self._open_more(model))
                    except MemoryRefused:
                        break
        finally:
            self.llm_waiting -= 1
        chunks = spread(items, 1 + len(self.llm_more))
        parts = await asyncio.gather(*(self._run_on(w, method, (chunk,))
                                       for w, chunk in zip([first, *self.llm_more], chunks)))
        return [x for part in parts for x in part]

    async def _open_more(self, model: str) -> Worker:
        """An LLM worker on a live node that has none yet."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        rec = M.get(model)
        guard(M.needed_bytes(rec.size, LLM_CONTEXT) // 2**20, f"another LLM worker with {model}")
        taken = {w.node for w in self._llms()}
        free = sorted(n["NodeID"] for n in self._ray.nodes() if n.get("Alive") and n["NodeID"] not in taken)
        if not free:
            raise MemoryRefused("no live node without an LLM worker")  # (the caller stops adding)
        place = NodeAffinitySchedulingStrategy(free[0], soft=False)
        actor = self._llm_actor.options(scheduling_strategy=place).remote(model, rec.path, LLM_CONTEXT)
        return Worker(f"llm-{next(self._ids)}", "llm", actor, await actor.pid.remote(), model=model,
                      node=await actor.node.remote())

    def llm_limit(self) -> int:
        """LLM workers: one per live node of the cluster (the memory guard may allow fewer)."""
        return max(1, sum(1 for n in self._ray.nodes() if n.get("Alive")))

    def _llms(self) -> list[Worker]:
        return ([self.llm] if self.llm else []) + self.llm_more

    def busy(self) -> int:
        return sum(w.inflight for w in [*self.cpu.values(), *self._llms()]) + self.llm_waiting

    def describe(self) -> dict:
        workers = [w.describe() for w in [*self.cpu.values(), *self._llms()]]
        return {"workers": workers,
                "limits": {"cpu_workers": self.cpu_limit(), "llm_workers": self.llm_limit(),
                           "max_workers": self.max_cpu},
                "queues": {"cpu": sum(w.inflight for w in self.cpu.values()),
                           "llm": sum(w.inflight for w in self._llms()) + self.llm_waiting}}


def _cause(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])
    return text[0][:200]
