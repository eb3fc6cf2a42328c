"""The embedding flow (`pt models embed`): vectors for the nodes whose text changed.

    from parseltongue.adapters.embeddings import load_default_encoder
    from parseltongue.runner.embed import embed_changed
    report = embed_changed(pt, load_default_encoder())   # in batches, one transaction each

The programs decide what to embed and store (`retrieval.embed_plan`, `embed_texts`,
`put_vectors`); the encoder (adapters/embeddings.py) turns texts into vectors.
"""
from __future__ import annotations

import time
from typing import Callable

from ..adapters.embeddings import Encoder, node_text
from .api import Pt


def embed_changed(pt: Pt, encoder: Encoder, batch: int = 32,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Vectors for every node whose text hash changed since it was last embedded with this model,
    written in batches (one transaction each) by `retrieval.put_vectors`; vectors of removed nodes
    are pruned at the end. Returns {"model", "embedded", "batches", "seconds"}."""
    t0 = time.perf_counter()
    plan = pt.query("retrieval.embed_plan", model=encoder.model_id)
    done = batches = 0
    for i in range(0, len(plan), batch):
        ids = [r["id"] for r in plan[i:i + batch]]
        rows = pt.query("retrieval.embed_texts", ids=ids)  # nodes without code are skipped
        vecs = encoder.encode([node_text(r) for r in rows])
        pt.run("retrieval.put_vectors", {"model": encoder.model_id,
                                         "rows": [[r["id"], r["hash"], v] for r, v in zip(rows, vecs)]})
        done += len(rows)
        batches += 1
        if progress:
            progress(len(rows))
    pt.run("retrieval.put_vectors", {"model": encoder.model_id, "rows": [], "prune": True})
    return {"model": encoder.model_id, "embedded": done, "batches": batches,
            "seconds": round(time.perf_counter() - t0, 2)}
