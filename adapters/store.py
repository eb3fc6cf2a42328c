"""The one module that talks to Cozo.

Every Cozo call in pt goes through `Store`, so the pinned cozo-embedded 0.7.6 is confined here and
its failure modes (QueryException, and Rust panics surfacing as `BaseException`) become `StoreError`
with a readable message and, when Cozo gives one, the byte offset of the problem in the script.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pycozo.client import Client, QueryException

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
    """Another process holds the database."""


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
                msg = json.loads(own.group(1))
            except ValueError:
                msg = own.group(1)
        if "locked" in msg.lower() or "busy" in msg.lower():
            return StoreLocked(f"database is locked by another process: {msg}", offset, code)
        return StoreError(msg, offset, code)
    if isinstance(exc, QueryException):  # a plain-string response, e.g. '{"ok":false,"message":"database closed"}'
        raw = str(exc.resp)
        try:
            raw = json.loads(raw).get("message", raw)
        except (ValueError, AttributeError):
            pass
        return StoreError(_ANSI.sub("", raw).strip())
    # Cozo's parser can panic (e.g. `%return { query }`); pyo3 raises PanicException, a BaseException.
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return StoreError(f"cozo failed: {first}")


class Store:
    """An open Cozo database (sqlite file or in-memory)."""

    def __init__(self, engine: str = "sqlite", path: str | os.PathLike = ""):
        if engine not in ENGINES:
            raise StoreError(f"unknown engine {engine!r} (use one of {', '.join(ENGINES)})")
        self.engine = engine
        self.path = str(path) if engine == "sqlite" else ""
        if engine == "sqlite":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            _use_wal(self.path)
        try:
            self._db = Client(engine, self.path, dataframe=False)
        except BaseException as exc:  # noqa: BLE001 - see _error_from
            err = _error_from(exc)
            raise StoreError(f"cannot open {engine} database {self.path}: {err.message}") from None

    def run(self, script: str, params: dict | None = None, immutable: bool = False) -> Result:
        try:
            out = self._db.run(script, params or {}, immutable=immutable)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - panics are BaseException
            raise _error_from(exc) from None
        return Result(out.get("headers", []), out.get("rows", []))

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


def _set_journal_reopened(store: Store, mode: str) -> bool:
    store._db.close()
    try:
        return _set_journal(store.path, mode)
    finally:
        try:
            store._db = Client(store.engine, store.path, dataframe=False)
        except BaseException as exc:  # noqa: BLE001 - see _error_from
            raise StoreError(f"cannot reopen sqlite database {store.path}: {_error_from(exc).message}") from None


def _set_journal(path: str, mode: str) -> bool:
    """Set the file's journal mode; False when it could not (another process has it open)."""
    try:
        con = sqlite3.connect(path, timeout=0.5)
        try:
            return con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
        finally:
            con.close()
    except sqlite3.Error:
        return False


def open_store(target: str | os.PathLike) -> Store:
    """`mem` for an in-memory store, anything else is a sqlite file path."""
    if str(target) == "mem":
        return Store("mem")
    return Store("sqlite", target)
