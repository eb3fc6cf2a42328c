"""Staleness and `pt watch`: poll the workspace's files by (size, mtime) and re-ingest what moved.

Polling, not inotify: editors that save by writing a temp file and renaming it over the original
show up as a changed (size, mtime) on the same path, which is all we compare.
"""
from __future__ import annotations

import os
import time

from ..adapters import fs
from .api import Pt
from .ingest import ingest
from .output import echo_err


def _snapshot(pt: Pt) -> dict[str, tuple[int, float]]:
    out = {}
    for rel in fs.rust_files(pt.workspace):
        try:
            st = os.stat(pt.workspace / rel)
        except OSError:
            continue
        out[rel] = (st.st_size, st.st_mtime)
    return out


def stale_files(pt: Pt) -> dict[str, list[str]]:
    """new / changed (by size or mtime) / deleted files, decided by `ingest.stale_files`."""
    current = [[rel, size, mtime] for rel, (size, mtime) in _snapshot(pt).items()]
    out: dict[str, list[str]] = {"new": [], "changed": [], "deleted": []}
    for row in pt.query("ingest.stale_files", current=current):
        out[row["state"]].append(row["file_path"])
    return out


def _manifest_stamp(pt: Pt) -> tuple:
    stamps = []
    for path in sorted(pt.workspace.rglob("Cargo.toml")):
        if "target" in path.parts or ".parseltongue" in path.parts:
            continue
        st = path.stat()
        stamps.append((str(path), st.st_size, st.st_mtime))
    return tuple(stamps)


def watch_workspace(pt: Pt, use_cargo: bool = True, debounce: float = 0.3, interval: float = 0.5,
                    max_cycles: int | None = None) -> None:
    report = ingest(pt.workspace, pt.store, use_cargo=use_cargo)
    echo_err(f"pt watch: graph current ({report.nodes} nodes); watching {pt.workspace} (Ctrl-C to stop)")
    before, manifests = _snapshot(pt), _manifest_stamp(pt)
    cycles = 0
    try:
        while max_cycles is None or cycles < max_cycles:
            cycles += 1
            time.sleep(interval)
            now = _snapshot(pt)
            if now == before and _manifest_stamp(pt) == manifests:
                continue
            # Debounce: wait until the tree has been quiet for `debounce` seconds.
            while True:
                time.sleep(debounce)
                again = _snapshot(pt)
                if again == now:
                    break
                now = again
            if _manifest_stamp(pt) != manifests:
                manifests = _manifest_stamp(pt)
                report = ingest(pt.workspace, pt.store, use_cargo=use_cargo)
            else:
                moved = sorted({p for p in now if now[p] != before.get(p)} | (set(before) - set(now)))
                report = ingest(pt.workspace, pt.store, paths=moved, use_cargo=use_cargo)
            echo_err(f"pt watch: {report.files_parsed} file(s) re-ingested, {report.files_removed} removed "
                     f"in {report.elapsed_s * 1000:.0f} ms")
            before = now
    except KeyboardInterrupt:
        echo_err("pt watch: stopped")
