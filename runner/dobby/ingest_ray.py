"""Ingest past one machine: parse / extract batches as Ray tasks, the writes here.

    ingest(ws, store, parse_map=parse_map)     # after adapters.ray_runtime.connect(ADDR)

The head reads each batch's files and sends their bytes (so nodes need no copy of the
workspace); a node hashes and extracts them with the same `runner.ingest.parse_bytes` a local
ingest uses and sends the facts back; the head writes them to Cozo in file order, exactly as a
local ingest does (one writer), so the graph is the same row for row.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ...adapters import ray_runtime as R

BATCH_FILES = 48  # files per Ray task: large enough to amortise a task (~ms), small enough to overlap


def _read(root: str, rel: str) -> tuple:
    path = os.path.join(root, rel)
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            return rel, fh.read(), st.st_size, st.st_mtime, ""
    except OSError as exc:
        return rel, None, 0, 0.0, f"unreadable: {exc.strerror}"


def _extract_batch(batch: list) -> list:
    """On a node: parse_bytes for each file read by the head (unreadable ones pass through)."""
    from ..ingest import parse_bytes

    return [parse_bytes(rel, data, size, mtime) if data is not None else (rel, None, "", err, 0, 0.0)
            for rel, data, size, mtime, err in batch]


def parse_map(root: Path, files: list[str]) -> Iterator[tuple]:
    """ingest's parse step on the connected Ray cluster, results in file order."""
    def batches():
        for i in range(0, len(files), BATCH_FILES):
            yield [_read(str(root), rel) for rel in files[i:i + BATCH_FILES]]

    for results in R.map_batches(_extract_batch, batches()):
        yield from results


@contextmanager
def cluster(address: str | None):
    """`parse_map` while connected to the Ray cluster at `address` (None: yields None, no Ray)."""
    if not address:
        yield None
        return
    from .cluster import joined

    with joined(address, "parsing"):
        yield parse_map
