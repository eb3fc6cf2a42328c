"""The full-text index (search_text) a large ingest deferred, built in the background.

A large ingest leaves search_text for later (ingest.defer_text_index): its postings cost about
as much as the rest of a cold ingest. `pt ingest` then starts its build as a process of its own
(`start` runs `pt text-index`) and returns; that writes the index in batches of files
(`retrieval.index_text`), one transaction each, so a `pt watch` or `pt run fix` that writes meanwhile waits for one batch,
not for the whole build; `ingest.build_text_index` then adds what changed meanwhile and clears
the pending mark. The first program that reads search_text (runner/api.py) calls `build`: it
waits for a build in progress (the lock file `<db>.text-index.lock`), then builds what is still
missing itself.

    from parseltongue.runner import text_index
    text_index.start(ws, db)  # after a large ingest: a child process builds it (True if started)
    text_index.build(pt)      # before reading search_text: wait for it, or build it here
(`pt` is a runner.api.Pt; api.py imports this module, not the other way round.)
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

BATCH_FILES = 100  # files per transaction of the background build (a reader waits for one at most)
PAGE_CACHE_MB = 256  # sqlite page cache of the build (Store.page_cache): postings land all over a big B-tree


def nids(ids: Iterable[str]) -> list[list]:
    """[id, nid] for the full-text rows of these nodes: nid, the row's key, is a 63-bit hash of
    the id (Cozo repeats a row's key in each of its FTS postings, so it is kept short; Cozo has
    no hash function of its own). Two ids of one graph colliding is ~1e-8 at a million nodes."""
    return [[i, int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") >> 1] for i in ids]


def pending(pt) -> bool:
    return any(r.get("pending") for r in pt.query("ingest.text_index_state"))


def _lock(db: str, wait: bool) -> int | None:
    """An exclusive lock on `<db>.text-index.lock`: its fd, or None if another process holds it
    and `wait` is False."""
    fd = os.open(db + ".text-index.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def start(workspace: Path, db: str) -> bool:
    """Start the background build of the index a large ingest deferred, in the sqlite file `db`.
    The lock is taken here and handed to the child, so a reader that comes right after waits for
    it instead of building the index a second time. False: a build runs already."""
    fd = _lock(db, wait=False)
    if fd is None:
        return False
    try:
        subprocess.Popen([sys.executable, "-m", "parseltongue.runner.cli", "-C", str(workspace), "--db", db,
                          "text-index", "--lock-fd", str(fd)], pass_fds=(fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.close(fd)  # the child holds the lock now (the same open file description)
    return True


def progress(pt) -> dict:
    """How far the background build is: {"files_done": n, "files_total": m} (m = 0: not started)."""
    done, total = next((r["progress"] for r in pt.query("ingest.text_index_state") if r.get("progress")), [0, 0])
    return {"files_done": done, "files_total": total}


def build(pt, notice=None, held: int | None = None, wait: bool = True) -> dict | None:
    """Make sure search_text is built: wait for a background build, then build what is left.
    `held`: the fd of the lock, already held (the background build, handed it by `start`).
    `wait=False`: while another process builds it, return at once with its progress (the
    reader answers from the files indexed so far); None when the index is complete."""
    fd = held
    try:
        if not pending(pt):
            return None
        if pt.store.engine != "sqlite":
            pt.run("ingest.build_text_index", {"nids": _stale_nids(pt)})
            return
        if fd is None:
            fd = _lock(pt.store.path, wait=False)
        if fd is None and not wait:
            return progress(pt)
        if fd is None:
            if notice:
                notice("waiting for the full-text index (being built in the background after the last large ingest)")
            fd = _lock(pt.store.path, wait=True)
        if pending(pt):
            if notice:
                notice("building the full-text index (deferred by the last large ingest)")
            _write(pt)
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _write(pt) -> None:
    # (rollback journal when no other process has the file open: WAL writes each page twice)
    with pt.store.bulk(), pt.store.page_cache(PAGE_CACHE_MB):
        files = [r["file_path"] for r in pt.query("ingest.files")]
        # The first batch goes in before the nodes of all files are asked for (seconds on a large
        # graph): a `pt query` that does not wait then covers some files almost at once.
        first = files[:BATCH_FILES]
        _index(pt, first, _stale_ids(pt, first), len(first), len(files))
        by_file = _stale_ids(pt, [])
        rest = list(by_file)
        indexed = len(files) - len(rest)  # the first batch, and files a build before this one did
        for i in range(0, len(rest), BATCH_FILES):
            batch = rest[i:i + BATCH_FILES]
            _index(pt, batch, by_file, indexed + i + len(batch), len(files))
        # what changed meanwhile; clears the pending mark
        pt.run("ingest.build_text_index", {"nids": _stale_nids(pt)})


def _index(pt, batch: list[str], by_file: dict[str, list[str]], done: int, total: int) -> None:
    pt.run("retrieval.index_text", {"files": batch, "nids": nids(x for f in batch for x in by_file.get(f, []))})
    pt.run("ingest.text_index_progress", {"done": done, "total": total})


def _stale_ids(pt, files: list[str]) -> dict[str, list[str]]:
    """file -> ids of its nodes whose full-text row is missing or stale (all files: [])."""
    by_file: dict[str, list[str]] = {}
    for r in pt.query("ingest.text_ids", files=files):
        by_file.setdefault(r["file_path"], []).append(r["id"])
    return by_file


def _stale_nids(pt) -> list[list]:
    return nids(i for ids in _stale_ids(pt, []).values() for i in ids)
