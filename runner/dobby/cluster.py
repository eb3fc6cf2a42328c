"""A `pt` command's work on a Ray cluster without Dobby (`--ray-address`): joining it, and the
model batches of `pt summarize` / `pt models embed` over one model worker per node.

    with joined(address, "parsing"):                     # connected; a line on stderr; left after
        ...
    with cluster_model(address, "gemma3-270m-q4_k_m", "summarising") as m:
        summarize_changed(pt, m, ...)                    # m.ask_batch(rows): cut over the nodes
        embed_changed(pt, m, ...)                        # m.encode(texts): likewise

The head plans and writes to Cozo (one writer), exactly as the local command does; a node loads
the same model the local command loads (workers.ModelWorker, from its own registry: nodes need
pt and the model installed, `pt models ensure NAME`), so the rows equal the local run's.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from ...adapters import ray_runtime as R
from ..errors import PtError, UsageError
from ..output import echo_err


def spread(items: list, n: int) -> list[list]:
    """items cut into at most n contiguous chunks of near-equal size (in order; none empty)."""
    size = -(-len(items) // max(1, n)) or 1
    return [items[i:i + size] for i in range(0, len(items), size)]


@contextmanager
def joined(address: str, doing: str) -> Iterator[None]:
    """Connected to the Ray cluster at `address` (bad or unreachable: exit 2) for the block."""
    try:
        R.connect(address)
    except R.RayUnavailable as exc:
        raise UsageError(str(exc)) from None
    echo_err(f"pt: {doing} on the Ray cluster at {address}: {R.alive_nodes()} nodes, {R.cluster_cpus()} CPUs")
    try:
        yield
    finally:
        R.disconnect()


class ClusterModel:
    """A summarizer and encoder (what summarize_changed / embed_changed call) whose batches are cut
    into one chunk per node's model worker. `served` counts the items each node answered."""

    def __init__(self, model_id: str, workers: list[tuple[str, object]]):
        self.model_id = model_id
        self.workers = workers  # (node id, actor)
        self.served: Counter = Counter()

    def ask_batch(self, rows: list) -> list:
        return self._map("ask", rows)

    def encode(self, texts: list) -> list:
        return self._map("encode", texts)

    def _map(self, method: str, items: list) -> list:
        import ray

        parts = spread(items, len(self.workers))
        refs = [getattr(actor, method).remote(part) for (_, actor), part in zip(self.workers, parts)]
        try:
            results = ray.get(refs)
        except ray.exceptions.RayError as exc:
            from ...adapters import models as M

            cause = getattr(exc, "cause", None)
            first = (str(cause or exc).strip().splitlines() or [type(exc).__name__])[0]
            if isinstance(cause, M.ModelUnavailable):
                raise UsageError(first) from None
            raise PtError(f"a model worker on the Ray cluster failed: {first}") from None
        for (node, _), part in zip(self.workers, parts):
            self.served[node] += len(part)
        return [x for part in results for x in part]


@contextmanager
def cluster_model(address: str, model: str, doing: str) -> Iterator[ClusterModel]:
    """One model worker on each live node of the cluster at `address` (pinned to it), for the block."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .workers import ModelWorker

    with joined(address, doing):
        remote = ray.remote(num_cpus=0, max_restarts=0)(ModelWorker)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
        workers = [(node, remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(model)) for node in nodes]
        m = ClusterModel(model, workers)
        try:
            yield m
        finally:
            for _, actor in workers:
                ray.kill(actor)
            if m.served:
                echo_err("pt: items per node: " + ", ".join(f"{node[:12]} {m.served[node]}" for node in nodes))
