"""A rust-analyzer session that outlives a command (a Dobby worker's), kept in step with the disk.

    warm = WarmRa(root)
    session = warm.fresh(ready_timeout=120)   # started the first time; afterwards told what changed
    ...                                       # requests, overlays (adapters/rust_analyzer.py)
    warm.close()

pt's sessions have no file watcher (adapters/rust_analyzer.ra_config), so before each use the
tree is compared with what the session last saw: edited and new `.rs` files are handed to it
(`RaSession.reload`); a deleted `.rs` file or any change to a Cargo.toml / Cargo.lock (the
workspace's shape) starts a new session, as a cold command would.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import rust_analyzer as ra
from .fs import ALWAYS_SKIP, digest

MANIFESTS = ("Cargo.toml", "Cargo.lock")
# A file rewritten within this long of a look may keep its size and mtime: hash it again next time.
RACY_NS = 2_000_000_000


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    hash: str


def _tree(root: Path) -> dict[str, os.stat_result]:
    """The `.rs` files and manifests under root, as the mirror walks a tree (no build output)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ALWAYS_SKIP and not (Path(dirpath) / d / "CACHEDIR.TAG").exists()]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.endswith(".rs") or name in MANIFESTS:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                try:
                    out[rel] = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
    return out


class WarmRa:
    """One root's long-lived session (started on first use) and what it has seen of the tree."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.session: ra.RaSession | None = None
        self.seen: dict[str, _Seen] = {}
        self.looked_ns = 0
        self.starts = 0  # sessions started (the first, and each restart for a changed shape)
        self.reloaded = 0  # files handed to the session since it started

    def fresh(self, ready_timeout: float = 120.0) -> ra.RaSession:
        """The running session, told of every change on disk since it last looked."""
        now = time.time_ns()
        tree = _tree(self.root)
        if self.session is not None and self.session.usable:
            changed, reshaped = self._changes(tree)
            if not reshaped:
                self.session.reload(changed)
                self.reloaded += len(changed)
                self._look(tree, now, changed)
                return self.session
            self.session.shutdown()
            self.session = None
        elif self.session is not None:  # it died for good: a new one
            self.session.shutdown()
            self.session = None
        self.seen = {}
        self._look(tree, now, list(tree))
        self.session = ra.open_session(self.root, ready_timeout=ready_timeout)
        # Loading runs `cargo metadata`, which writes a missing Cargo.lock: that is no change of shape.
        after = {rel: st for rel, st in _tree(self.root).items() if not rel.endswith(".rs")}
        self._look(after, now, list(after))
        self.starts += 1
        self.reloaded = 0
        return self.session

    def _changes(self, tree: dict[str, os.stat_result]) -> tuple[list[str], bool]:
        """(.rs files edited or created since the last look, whether the workspace's shape changed)."""
        if any(rel not in tree for rel in self.seen):
            return [], True  # a deleted file
        changed = []
        for rel, st in tree.items():
            old = self.seen.get(rel)
            if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns and self.looked_ns - st.st_mtime_ns > RACY_NS:
                continue
            if old and old.hash == _hash(self.root / rel):
                continue
            if not rel.endswith(".rs"):
                return [], True  # a manifest
            changed.append(rel)
        return changed, False

    def _look(self, tree: dict[str, os.stat_result], now: int, rels: list[str]) -> None:
        for rel, st in tree.items():
            if rel in rels or rel not in self.seen:
                self.seen[rel] = _Seen(st.st_size, st.st_mtime_ns, _hash(self.root / rel))
            else:
                self.seen[rel].size, self.seen[rel].mtime_ns = st.st_size, st.st_mtime_ns
        self.looked_ns = now

    def describe(self) -> dict:
        s = self.session
        return {"root": str(self.root), "pid": s.pid if s else None, "starts": self.starts, "reloaded": self.reloaded,
                "restarts": s.restarts if s else 0, "binary": str(s.binary.path) if s else "",
                "version": s.binary.version if s else ""}

    def close(self) -> None:
        if self.session is not None:
            self.session.shutdown()
            self.session = None


def _hash(path: Path) -> str:
    try:
        return digest(path.read_bytes())
    except OSError:
        return ""
