"""The one module that talks to Cozo.

Every Cozo call in pt goes through `Store`, so the pinned cozo-embedded 0.7.6 is confined here and
its failure modes (QueryException, and Rust panics surfacing as `BaseException`) become `StoreError`
with a readable message and, when Cozo gives one, the byte offset of the problem in the script.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pycozo.client import Client, QueryException

from .quiet import quiet_stderr

ENGINES = ("sqlite", "mem")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ASSERT_MESSAGE = re.compile(r'^assertion failed: \[false, ("(?:[^"\\]|\\.)*")\]$')


class StoreError(Exception):
    """A Cozo error, with the offending byte offset in the script when known."""

    def __init__(self, message: str, offset: int | None = None, code: str = ""):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.code = code


class StoreLocked(StoreError):
    """Another process held the database for longer than the wait."""


class StoreCorrupt(StoreError):
    """The file is not a sound sqlite database (truncated, overwritten)."""


def lock_wait_s() -> float:
    """How long a command waits for another process's write (PT_LOCK_WAIT, seconds) before it
    gives up with StoreLocked: a reader waits for a writer's transaction rather than failing."""
    try:
        return max(0.0, float(os.environ.get("PT_LOCK_WAIT", "10")))
    except ValueError:
        return 10.0


@dataclass
class Result:
    headers: list[str]
    rows: list[list[Any]]
    extra: dict = field(default_factory=dict)

    def dicts(self) -> list[dict]:
        return [dict(zip(self.headers, r)) for r in self.rows]


def _error_from(exc: BaseException) -> StoreError:
    if isinstance(exc, QueryException) and hasattr(exc.resp, "get"):
        resp = exc.resp
        msg = _ANSI.sub("", resp.get("message") or str(resp)).strip()
        offset = None
        for label in resp.get("labels") or []:
            span = label.get("span") or {}
            if "offset" in span:
                offset = span["offset"]
                break
        causes = [c.get("message", "") if isinstance(c, dict) else str(c) for c in resp.get("causes") or []]
        if causes:
            msg += " (" + "; ".join(c for c in causes if c) + ")"
        code = resp.get("code") or ""
        own = _ASSERT_MESSAGE.match(resp.get("help") or "") if code == "eval::throw" else None
        if own:  # a program's own `assert(cond, 'message')`: its message, not "Evaluation of expression failed"
            try:
                return StoreError(json.loads(own.group(1)), offset, code)
            except ValueError:
                return StoreError(own.group(1), offset, code)
        return _classified(msg, offset, code)
    if isinstance(exc, QueryException):  # a plain-string response, e.g. '{"ok":false,"message":"database closed"}'
        raw = str(exc.resp)
        try:
            raw = json.loads(raw).get("message", raw)
        except (ValueError, AttributeError):
            pass
        return _classified(_ANSI.sub("", raw).strip())
    # Cozo's parser can panic (e.g. `%return { query }`), and so does its sqlite storage on a
    # locked or damaged file; pyo3 raises PanicException, a BaseException.
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return _classified(f"cozo failed: {first}")


# sqlite's own words (SQLITE_BUSY / SQLITE_LOCKED; SQLITE_CORRUPT / SQLITE_NOTADB), however Cozo
# wraps them: in a message, or in a panic's `Error { code: Some(5), message: ... }`.
_BUSY = re.compile(r"database is locked|database table is locked|\bbusy\b|code: Some\((5|6)\)", re.I)
_CORRUPT = re.compile(r"malformed|not a database|code: Some\((11|26)\)", re.I)


def _classified(msg: str, offset: int | None = None, code: str = "") -> StoreError:
    if _BUSY.search(msg):
        return StoreLocked(msg, offset, code)
    if _CORRUPT.search(msg):
        quoted = re.search(r'message: Some\("([^"]*)"\)', msg)
        return StoreCorrupt(quoted.group(1) if quoted else msg, offset, code)
    return StoreError(msg, offset, code)


class Store:
    """An open Cozo database (sqlite file or in-memory)."""

    def __init__(self, engine: str = "sqlite", path: str | os.PathLike = ""):
        if engine not in ENGINES:
            raise StoreError(f"unknown engine {engine!r} (use one of {', '.join(ENGINES)})")
        self.engine = engine
        self.path = str(path) if engine == "sqlite" else ""
        if engine == "sqlite":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory of {self.path}: {exc.strerror}") from None
            _use_wal(self.path)
        self._db = self._connect()

    def _connect(self) -> Client:
        """Open the file, waiting while another process writes it: Cozo's sqlite storage panics
        when the file is locked at open (its panic text is kept off stderr; the error says it)."""
        waited = _Backoff()
        while True:
            try:
                with quiet_stderr():
                    return Client(self.engine, self.path, dataframe=False)
            except BaseException as exc:  # noqa: BLE001 - see _error_from
                err = _error_from(exc)
            if isinstance(err, StoreLocked) and waited.again():
                continue
            raise self._explained(err, "cannot open") from None

    def _explained(self, err: StoreError, doing: str) -> StoreError:
        """The error with the file named, and for a locked or damaged file what to do."""
        where = f"{self.engine} database {self.path}".rstrip()
        if isinstance(err, StoreLocked):
            return StoreLocked(f"{where} is busy: another process has been writing it for "
                               f"{lock_wait_s():g}s (set PT_LOCK_WAIT=SECONDS to wait longer)", err.offset, err.code)
        if isinstance(err, StoreCorrupt):
            return StoreCorrupt(f"{where} is damaged ({err.message}): rebuild it with "
                                f"`pt init --rebuild` (the damaged file is kept beside it), then `pt ingest`",
                                err.offset, err.code)
        return type(err)(f"{doing} {where}: {err.message}", err.offset, err.code) if doing else err

    def run(self, script: str, params: dict | None = None, immutable: bool = False) -> Result:
        """Run one script (one transaction). A script that finds the file locked by another
        process's write has changed nothing; it is run again until the wait is over."""
        waited = _Backoff()
        while True:
            try:
                out = self._db.run(script, params or {}, immutable=immutable)
                return Result(out.get("headers", []), out.get("rows", []))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - panics are BaseException
                err = _error_from(exc)
            if isinstance(err, StoreLocked) and waited.again():
                continue
            raise self._explained(err, "") from None

    def relations(self) -> dict[str, list[tuple[str, str, bool]]]:
        """name -> [(column, type, is_key)] for every stored relation."""
        names = [r[0] for r in self.run("::relations").rows]
        out = {}
        for name in names:
            if name.startswith("pt_tmp_"):
                continue
            cols = self.run(f"::columns {name}").dicts()
            out[name] = [(c["column"], c["type"], bool(c["is_key"])) for c in cols]
        return out

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """A large write (a big ingest, the deferred full-text index): with the rollback
        journal, as WAL writes each page twice (log, then checkpoint) and slows a transaction of
        a million pages (measured: the full-text build of a 1.29M-line graph 34 -> 52 s). The
        store is reopened around it; if another process has the file open, it stays WAL."""
        if self.engine != "sqlite" or not _set_journal_reopened(self, "delete"):
            yield
            return
        try:
            yield
        finally:
            _set_journal_reopened(self, "wal")

    @contextmanager
    def page_cache(self, mb: int) -> Iterator[None]:
        """sqlite's page cache raised to `mb` MB around a long write into a large file: the
        full-text build inserts postings all over a B-tree of hundreds of MB, and with the default
        2 MB cache most of them miss (measured on the 1.29M-line graph, two alternating pairs:
        the whole build 97.7 / 88.4 s -> 80.7 / 85.0 s with 256 MB). Cozo gives no way to set a connection's cache_size, so the file's
        stored default (`PRAGMA default_cache_size`, read when a connection opens) is set and the
        store reopened; afterwards sqlite's default is put back. The memory is taken as pages are
        read, so another process that opens the file meanwhile and reads little uses little."""
        if self.engine != "sqlite" or not _set_default_cache(self, mb):
            yield
            return
        try:
            yield
        finally:
            _set_default_cache(self, 0)

    def close(self) -> None:
        try:
            self._db.close()
        except BaseException:  # noqa: BLE001 - closing must not mask the real error
            pass


def _use_wal(path: str) -> None:
    """Put an existing sqlite file in write-ahead-log mode (a setting stored in the file) before
    Cozo opens it. A commit then appends the pages it dirtied to the log once instead of copying
    each to a rollback journal and then into the file, and readers no longer wait for a writer:
    one-changed-file p95 97 -> 88 ms on a 1.29M-line graph. A new file keeps the rollback
    journal for its first process, a bulk load (see Store.bulk); it is switched on the next
    open. Anything odd about the file (a directory, not a database) is left for Cozo to report."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(20)
    except OSError:  # missing (new), a directory, unreadable
        return
    if len(header) == 20 and header.startswith(b"SQLite format 3\0") and header[18] != 2:
        _set_journal(path, "wal")  # (byte 18, the file format read version, is 2 for WAL)


class _Backoff:
    """Sleeps of 10 ms doubling to 200 ms, until lock_wait_s() has passed."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + lock_wait_s()
        self.sleep = 0.01

    def again(self) -> bool:
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(self.sleep, left))
        self.sleep = min(self.sleep * 2, 0.2)
        return True


_HELD: dict[str, tuple[int, bool, int]] = {}  # lock path -> (fd, exclusive, depth) in this process


@contextmanager
def file_lock(db_path: str, exclusive: bool) -> Iterator[None]:
    """An advisory lock on `<db>.lock` around creating and migrating the database: the process
    that creates or migrates it holds it exclusively, one that opens it shares it, so no process
    sees a half-made schema. Waits up to lock_wait_s() (else StoreLocked). A shared request never
    creates the lock file: without one (a database made by an older pt) it does not lock. Nested
    requests of one process share its lock (flock would make a second descriptor wait for the first)."""
    path = db_path + ".lock"
    if path in _HELD:
        fd, held_ex, depth = _HELD[path]
        if exclusive and not held_ex:
            raise StoreError(f"{path}: an exclusive lock was asked for inside a shared one")
        _HELD[path] = (fd, held_ex, depth + 1)
        try:
            yield
        finally:
            _HELD[path] = (fd, held_ex, depth)
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY, 0o644)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        waited = _Backoff()
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited.again():
                    raise StoreLocked(f"sqlite database {db_path} is busy: another process has been "
                                      f"creating or migrating it for {lock_wait_s():g}s "
                                      f"(set PT_LOCK_WAIT=SECONDS to wait longer)") from None
        _HELD[path] = (fd, exclusive, 1)
        yield
    finally:
        _HELD.pop(path, None)
        os.close(fd)  # releases the lock


def _reopened(store: Store, change) -> bool:
    """Close the store's connection, apply `change(path) -> bool` to the file with sqlite itself
    (a setting Cozo offers no way to make), and reopen, so the new connection takes it."""
    store._db.close()
    try:
        return change(store.path)
    finally:
        store._db = store._connect()


def _set_journal_reopened(store: Store, mode: str) -> bool:
    return _reopened(store, lambda path: _set_journal(path, mode))


def _set_default_cache(store: Store, mb: int) -> bool:
    """A page cache of `mb` MB as the file's stored default (0: sqlite's own), taken by the
    reopened store; False when the file could not be written. (The pragma counts pages and keeps
    only the absolute value: a negative "KiB" size would be read as pages.)"""
    def change(path: str) -> bool:
        page = _pragma(path, "page_size")
        return bool(page) and _pragma(path, f"default_cache_size={mb * 2**20 // page}", commit=True) is not None
    return _reopened(store, change)


def _set_journal(path: str, mode: str) -> bool:
    """Set the file's journal mode; False when it could not (another process has it open)."""
    return _pragma(path, f"journal_mode={mode}") == mode


def _pragma(path: str, pragma: str, commit: bool = False):
    """`PRAGMA <pragma>` on the file through sqlite itself: its first value (True when it gives
    none), or None when sqlite refused (the file is locked or is no database)."""
    try:
        con = sqlite3.connect(path, timeout=0.5)
        try:
            row = con.execute(f"PRAGMA {pragma}").fetchone()
            if commit:
                con.commit()
            return row[0] if row else True
        finally:
            con.close()
    except sqlite3.Error:
        return None


def open_store(target: str | os.PathLike) -> Store:
    """`mem` for an in-memory store, anything else is a sqlite file path."""
    if str(target) == "mem":
        return Store("mem")
    return Store("sqlite", target)
