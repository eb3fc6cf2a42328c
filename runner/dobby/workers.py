"""What Dobby's workers do. Plain classes; runner/dobby/pools.py makes them Ray actors.

A CPU worker keeps each workspace's graph open for reading and runs only read-only programs
(Cozo writes stay with Dobby's one writer): the agents A1 (seeder: the errors of the workspace
and the nodes they fall in), A2 (two-hop retriever) and A3 (similarity retriever: full-text
search), `pt query` and `pt context`. The LLM worker holds one llama.cpp model for completions,
vectors and the N-line check.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError

AGENTS = ("A1", "A2", "A3")


class NeedsWriter(UsageError):
    """The program writes the graph: Dobby's one writer runs it, not a worker. (Ray re-raises a
    worker's exception as a subclass of its class, so the daemon can catch this one.)"""


def _db_target(workspace: Path, db: str | None) -> str:
    from ..api import default_db

    return db or default_db(workspace)


MAX_RA_ROOTS = 4  # warm sessions one worker keeps (a workspace and its PreFlight mirror are two)


class _Actor:
    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()


class CpuWorker(_Actor):
    """A light worker: read-only graphs, warm across requests; opened with `ra`, also warm
    rust-analyzer sessions (adapters/ra_warm.py), one per root asked about, for the hydrate flow
    and PreFlight's ra stage that Dobby's writer runs."""

    def __init__(self, ra: bool = False) -> None:
        self._open: dict[tuple[str, str], Any] = {}
        self.ra = ra
        self._ra: dict[str, Any] = {}  # root -> WarmRa, least recently used first

    # -- a warm rust-analyzer

    def ra_begin(self, root: str, ready_timeout: float) -> dict:
        """The root's session, started or told of the edits on disk since its last use."""
        from ...adapters.ra_warm import WarmRa

        if not self.ra:
            raise UsageError("this worker keeps no rust-analyzer (open_worker with ra: true)")
        warm = self._ra.pop(root, None) or WarmRa(root)
        self._ra[root] = warm  # now the most recently used
        while len(self._ra) > MAX_RA_ROOTS:
            self._ra.pop(next(iter(self._ra))).close()
        warm.fresh(ready_timeout)
        return warm.describe()

    def _session(self, root: str):
        from ...adapters import rust_analyzer as ra

        warm = self._ra.get(root)
        if warm is None or warm.session is None:
            raise ra.RaUnavailable(f"no rust-analyzer session over {root} in this worker")
        return warm.session

    def ra_hydrate_chunk(self, root: str, db: str | None, chunk: list, budget_s: float) -> tuple:
        """One write batch's requests of the hydrate flow (runner/hydrate.collect_chunk) on the
        root's session, with the graph open read-only; Dobby's writer writes the rows."""
        from ..hydrate import collect_chunk

        return collect_chunk(self._pt(root, db), self._session(root), chunk, budget_s)

    def ra_overlay(self, root: str, texts: dict, timeout: float) -> dict:
        """RA-native diagnostics of these texts laid over the disk (nothing written)."""
        with self._session(root).overlay(texts) as ov:
            return ov.diagnostics(timeout)

    def ra_status(self) -> dict:
        return {root: w.describe() for root, w in self._ra.items()}

    def close_ra(self) -> None:
        while self._ra:
            self._ra.popitem()[1].close()

    def _pt(self, workspace: str, db: str | None):
        from ..api import Pt

        ws = Path(workspace).resolve()
        target = _db_target(ws, db)
        key = (str(ws), target)
        pt = self._open.get(key)
        if pt is None:
            if target != "mem" and not Path(target).is_file():
                raise UsageError(f"no graph at {target} (run `pt ingest` first)")
            pt = Pt.open(ws, target, init=False)
            if pt.current_rev() != pt.latest_rev():  # migrating is a write: not a worker's job
                rev = pt.current_rev()
                pt.close()
                raise UsageError(f"database schema rev {rev} is not this pt's (rev {pt.latest_rev()}): run `pt init`")
            self._open[key] = pt
        return pt

    def query(self, workspace: str, db: str | None, program: str, cli_params: dict, params: dict,
              vars: dict) -> dict:
        """As `pt query`: `cli_params` are strings coerced by the declared types, `params` JSON values."""
        from .. import programs as P

        pt = self._pt(workspace, db)
        prog = pt.registry.get(program)
        if not prog.read_only:
            raise NeedsWriter(f"{prog.id} writes the graph")
        merged = {**P.coerce_cli_params(prog, cli_params), **params}
        res = pt.run(prog.id, merged, vars)
        seeds = merged.get("seeds")  # node ids by convention, checked as `pt query` checks them
        unknown = pt.unknown_seeds(seeds) if isinstance(seeds, list) else []
        return {"program": prog.id, "headers": res.headers, "rows": res.rows, "unknown_seeds": unknown}

    def context(self, workspace: str, db: str | None, seeds: list, budget: int, query: str) -> dict:
        """As `pt context` (without vectors): the pack and its A4 findings."""
        from ..context import context_pack, findings, seed_ids

        pt = self._pt(workspace, db)
        ids = seed_ids(pt, list(seeds))
        rows = context_pack(pt, ids, budget, query, None)
        return {"seeds": ids, "budget_tokens": budget, "tokens": sum(r["tokens"] for r in rows), "nodes": rows,
                "findings": findings(pt, rows), "unknown_seeds": pt.unknown_seeds(ids)}

    def run_task(self, agent: str, payload: dict) -> dict:
        if agent not in AGENTS:
            raise UsageError(f"unknown agent {agent!r} (one of {', '.join(AGENTS)})")
        workspace = payload.get("workspace")
        if not isinstance(workspace, str):
            raise UsageError("run_task: payload.workspace (a directory) is required")
        pt = self._pt(workspace, payload.get("db"))
        t0 = time.perf_counter()
        if agent == "A2":
            params = {k: payload[k] for k in ("seeds", "max_hops", "cap_per_hop", "cap_per_node", "direction")
                      if k in payload}
            res = pt.run("retrieval.two_hop", params, payload.get("vars") or {})
            out = {"headers": res.headers, "rows": res.rows}
        elif agent == "A3":
            params = {k: payload[k] for k in ("query", "k_text", "limit") if k in payload}
            res = pt.run("retrieval.search", params)
            out = {"headers": res.headers, "rows": res.rows}
        else:
            out = self._seed(pt, payload)
        return {"agent": agent, **out, "elapsed_s": round(time.perf_counter() - t0, 4)}

    def _seed(self, pt, payload: dict) -> dict:
        """A1: `cargo check` of the workspace in a target dir of Dobby's own (never the user's
        tree), each error placed in the graph node at its primary span."""
        from ...adapters import cargo
        from .config import home

        ws = pt.workspace
        target = home() / "dobby-target" / hashlib.sha256(str(ws).encode()).hexdigest()[:16]
        run = cargo.check(ws, target_dir=target, timeout=float(payload.get("timeout_s", 600)))
        errors = []
        for d in run.diagnostics:
            if d.severity != "error":
                continue
            node = None
            if d.file and d.byte_start >= 0:
                rows = pt.query("ingest.node_at", file=d.file, byte=d.byte_start)
                node = rows[0]["id"] if rows else None
            errors.append({"code": d.code, "message": d.message, "file": d.file, "line": d.line, "node_id": node})
        return {"success": run.success, "errors": errors}


class ModelWorker(_Actor):
    """A registry model's batch work: summaries (the Summarizer `pt summarize` loads, its own
    context size) and vectors (the encoder `pt models embed` loads), each loaded on first use,
    so the answers equal the in-process commands'. `pt summarize --ray-address` and `pt models
    embed --ray-address` run one per node (runner/dobby/cluster.py)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._encoder = self._summarizer = None

    def encode(self, texts: list) -> list:
        """Vectors of texts: the encoder `pt models embed` loads, so the same vectors."""
        from ...adapters.embeddings import load_encoder

        if self._encoder is None:
            self._encoder = load_encoder(self.name)
        return self._encoder.encode([str(t) for t in texts])

    def ask(self, rows: list) -> list:
        """The model's raw answers for `summaries.texts` rows."""
        from ..summarize import Summarizer

        if self._summarizer is None:
            self._summarizer = Summarizer.load(self.name)
        return [self._summarizer.ask(r) for r in rows]


class LlmWorker(ModelWorker):
    """Dobby's LLM worker: one llama.cpp model of the registry, loaded when the worker opens
    (adapters/models.py), for completions and the N-line check; and the batch work above."""

    def __init__(self, name: str, path: str, n_ctx: int) -> None:
        from ...adapters import models as M

        super().__init__(name)
        self.path = path
        self._llm = M.load_llama(path, n_ctx=n_ctx)  # the registry's RAM guard runs here too

    def completion(self, prompt: str, max_tokens: int, stop: list) -> dict:
        """A plain continuation (the packaged Gemma 3 270M is a base model), greedy from a
        fresh state: the same prompt gives the same text."""
        from ...adapters import models as M

        text = M.complete(self._llm, prompt, max_tokens, stop or None)
        tin = len(self._llm.tokenize(prompt.encode("utf-8")))
        tout = len(self._llm.tokenize(text.encode("utf-8"), add_bos=False)) if text else 0
        return {"model": self.name, "text": text,
                "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}}

    def embed(self, texts: list) -> dict:
        vecs = self.encode(texts)
        return {"model": self.name, "dim": self._encoder.dim, "vectors": vecs}

    def verify(self, lines: int) -> dict:
        from ...adapters import models as M

        return M.verify(self.name, lines)
