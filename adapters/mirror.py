"""The PreFlight mirror: a copy of the workspace in pt's cache, synced by content hash.

PreFlight checks candidates here so the user's tree is never written. It lives outside the
workspace (`mirror_home`: $PT_CACHE_DIR, else $XDG_CACHE_HOME/parseltongue, else
~/.cache/parseltongue, then mirror-<hash of the workspace path>/): a copy inside the workspace
would show up to every tool that walks it (grep, scorers, editors) as a second set of .rs files.
It builds with its own target directory, so checks stay warm.

A crate may depend on a sibling outside the workspace (`path = "../common"`). Such a directory
is not copied (it is not the workspace's, and pt never edits it): the mirror gets a symlink at
the same relative place, with the mirror's root nested deep enough that `..` stays inside the
mirror's home. A path the mirror cannot place (an ancestor of the workspace itself) is named in
`Mirror.notes`, so a failed check says why rather than blaming the code.

    mirror = Mirror(workspace)
    with mirror.locked():          # one PreFlight at a time per workspace
        rep = mirror.sync()        # the mirror now holds the user's bytes
        mirror.write({"src/a.rs": new_bytes})   # ... and now a candidate's
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import blake3

from .fs import ALWAYS_SKIP, atomic_write, digest

MIRROR_TARGET = "mirror-target"
MIRROR_MANIFEST = "mirror.json"
MIRROR_LINKS = "mirror-links.json"
MIRROR_LOCK = "mirror.lock"
# Never mirrored: build output, VCS data, pt's own state.
SKIP_DIRS = ALWAYS_SKIP | {".hg", ".svn"}
# A stat is trusted to mean "unchanged" only for files older than this: a file rewritten within
# the same timestamp tick with the same size would otherwise look unchanged (git's "racy" files).
RACY_NS = 2_000_000_000
# Directory names on the way down to a nested mirror root (see Mirror.root).
_NEST = "_pt"
_DEP_TABLES = ("dependencies", "dev-dependencies", "build-dependencies")


@dataclass
class SyncReport:
    files: int = 0
    copied: int = 0
    removed: int = 0
    hashed: int = 0
    elapsed_s: float = 0.0
    digest: str = ""


def mirror_home(workspace: Path) -> Path:
    base = os.environ.get("PT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "parseltongue")
    return Path(base) / f"mirror-{digest(str(workspace.resolve()).encode())[:16]}"


def mirror_target_dir(workspace: Path, home: Path) -> Path:
    """Where the mirror builds. With CARGO_TARGET_DIR set (a shared build cache), inside it, keyed
    by the workspace's path, so dependencies stay built across fresh checkouts of the same
    workspace; the mirror's own files are always copied with a fresh mtime, so cargo never takes
    an older build of them for current."""
    shared = os.environ.get("CARGO_TARGET_DIR")
    if shared:
        return Path(shared) / "pt-mirror" / home.name
    return home / MIRROR_TARGET


def _path_deps(manifest: Path) -> list[str]:
    """The `path = ...` values of a Cargo.toml's dependency tables (plain, target-specific,
    workspace-inherited and [patch]); an unreadable manifest has none (cargo reports it)."""
    try:
        doc = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    tables = [doc.get(t) for t in _DEP_TABLES]
    tables += [spec.get(t) for spec in (doc.get("target") or {}).values() if isinstance(spec, dict) for t in _DEP_TABLES]
    tables.append((doc.get("workspace") or {}).get("dependencies"))
    tables += list((doc.get("patch") or {}).values())
    out = []
    for table in tables:
        for dep in (table or {}).values() if isinstance(table, dict) else []:
            if isinstance(dep, dict) and isinstance(dep.get("path"), str):
                out.append(dep["path"])
    return out


def outside_path_deps(workspace: Path, manifests: list[str]) -> tuple[dict[str, str], list[str]]:
    """Directories outside the workspace that its manifests (and, transitively, those
    directories' own manifests) name as path dependencies -> ({path relative to the workspace,
    starting with '..': real directory}, notes on the ones the mirror cannot hold). Paths join
    lexically, as cargo joins them."""
    ws = os.path.normpath(str(workspace.resolve()))
    links: dict[str, str] = {}
    notes: list[str] = []
    queue = [(os.path.join(ws, m), os.path.dirname(m)) for m in manifests]
    while queue:
        manifest, rel_dir = queue.pop()
        for p in _path_deps(Path(manifest)):
            rel = os.path.normpath(os.path.join(rel_dir, p)) if not os.path.isabs(p) else os.path.relpath(p, ws)
            if not rel.startswith(".."):
                continue  # inside the workspace: mirrored as it is
            if any(rel == k or rel.startswith(k + os.sep) for k in links):
                continue  # under a directory already linked
            real = os.path.normpath(os.path.join(ws, rel))
            if all(part == ".." for part in Path(rel).parts) or (ws + os.sep).startswith(real + os.sep):
                notes.append(f"path dependency {p!r} of {os.path.relpath(manifest, ws)} contains the workspace "
                             f"itself; the PreFlight mirror cannot hold it")
                continue
            if not os.path.isdir(real):
                continue  # cargo says that one plainly
            links[rel] = real
            queue.append((os.path.join(real, "Cargo.toml"), rel))
    return links, notes


class Mirror:
    """A copy of the workspace, synced by content hash.

    `mirror.json` records, per file, the source's size and mtime, the source's hash and the hash
    of what the mirror holds. A source file whose stat is unchanged and whose mirror copy matches
    is skipped without reading it; a candidate written into the mirror records its own hash, so
    the next sync copies the user's bytes back. Copies get a fresh mtime on purpose: cargo decides
    what to rebuild by mtime, and a restored file must look newer than the last build."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.state = mirror_home(workspace)
        self.target_dir = mirror_target_dir(workspace, self.state)
        self.manifest_path = self.state / MIRROR_MANIFEST
        self.links_path = self.state / MIRROR_LINKS
        self.manifest: dict[str, list] = {}
        self.links: dict[str, str] = {}  # outside path dependencies: relative path -> real directory
        self.notes: list[str] = []  # why an outside dependency is not in the mirror
        self.depth = 0
        self.root = self._root(0)

    def _root(self, depth: int) -> Path:
        """The mirror's workspace root. With outside dependencies up to `depth` levels above the
        workspace, it sits `depth` directories down, so `../x` lands beside it, in the home."""
        if depth == 0:
            return self.state / "mirror"
        return self.state.joinpath(f"mirror-up{depth}", *([_NEST] * depth))

    @contextlib.contextmanager
    def locked(self) -> Iterator["Mirror"]:
        """One PreFlight at a time per workspace: two would overwrite each other's candidate."""
        self.state.mkdir(parents=True, exist_ok=True)
        with open(self.state / MIRROR_LOCK, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._load()
                yield self
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load(self) -> None:
        self.links, self.notes, self.depth = {}, [], 0
        with contextlib.suppress(OSError, ValueError, TypeError):
            rec = json.loads(self.links_path.read_text(encoding="utf-8"))
            self.links, self.notes, self.depth = dict(rec["links"]), list(rec["notes"]), int(rec["depth"])
        self.root = self._root(self.depth)
        self.manifest = {}
        if self.root.is_dir() and self.manifest_path.is_file():
            try:
                self.manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.manifest = {}  # unreadable: every file is re-hashed and compared

    def _save(self, durable: bool) -> None:
        """A manifest that *overstates* differences is safe (the next sync hashes and copies a
        file more), one that understates them is not. A sync only ever makes the mirror match the
        source, so its record may be lost (plain rename); a candidate's record must be on disk
        before its bytes reach the mirror (fsync'd rename)."""
        data = json.dumps(self.manifest, separators=(",", ":")).encode()
        if durable:
            atomic_write(self.manifest_path, data)
        else:
            tmp = self.manifest_path.with_name(f".{self.manifest_path.name}.{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, self.manifest_path)

    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        ws = self.workspace
        for dirpath, dirnames, filenames in os.walk(ws):
            # A cargo target directory under another name carries CACHEDIR.TAG: never copy builds.
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                                 and not (Path(dirpath) / d / "CACHEDIR.TAG").exists())
            rel_dir = os.path.relpath(dirpath, ws)
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if not (st.st_mode & 0o170000 == 0o100000):  # regular files only (after symlinks)
                    continue
                yield rel, st

    def _unchanged(self, rel: str, st: os.stat_result) -> bool:
        m = self.manifest.get(rel)
        return bool(m and m[0] == st.st_size and m[1] == st.st_mtime_ns and m[2] == m[3])

    def _place_outside_deps(self, files: list) -> None:
        """Recompute the outside path dependencies when a manifest changed (or never before),
        move the root when they need another depth, and keep their symlinks in place."""
        manifests = [rel for rel, st in files if rel.rsplit("/", 1)[-1] == "Cargo.toml"]
        if not self.links_path.is_file() or not all(self._unchanged(rel, st) for rel, st in files
                                                    if rel in manifests):
            self.links, self.notes = outside_path_deps(self.workspace, manifests)
            depth = max((Path(rel).parts.count("..") for rel in self.links), default=0)
            if depth != self.depth:
                self.depth, self.root, self.manifest = depth, self._root(depth), {}
            atomic_write(self.links_path, json.dumps({"depth": self.depth, "links": self.links,
                                                      "notes": self.notes}).encode())
        for rel, real in self.links.items():
            at = Path(os.path.normpath(self.root / rel))
            if at.is_symlink() and os.readlink(at) == real:
                continue
            at.parent.mkdir(parents=True, exist_ok=True)
            if at.is_symlink():
                at.unlink()
            elif at.exists():
                self.notes.append(f"path dependency {rel} collides with {at} in the mirror; not linked")
                continue
            os.symlink(real, at, target_is_directory=True)

    def sync(self) -> SyncReport:
        """Make the mirror hold the user's bytes: copy what differs, remove what is gone."""
        t0 = time.perf_counter()
        rep = SyncReport()
        files = list(self._walk())
        self._place_outside_deps(files)
        if not self.root.is_dir():
            self.manifest = {}
        now_ns = time.time_ns()
        seen, dirty = set(), False
        for rel, st in files:
            seen.add(rel)
            rep.files += 1
            m = self.manifest.get(rel)
            if self._unchanged(rel, st):
                continue
            try:
                data = (self.workspace / rel).read_bytes()
            except OSError:
                continue
            rep.hashed += 1
            h = digest(data)
            size = st.st_size if st.st_mtime_ns < now_ns - RACY_NS else -1
            if not (m and m[3] == h):
                dest = self.root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                rep.copied += 1
            entry = [size, st.st_mtime_ns, h, h]
            dirty = dirty or entry != m
            self.manifest[rel] = entry
        for rel in sorted(set(self.manifest) - seen):
            with contextlib.suppress(FileNotFoundError):
                (self.root / rel).unlink()
            del self.manifest[rel]
            rep.removed += 1
            dirty = True
        if dirty:  # an unchanged tree costs stats only, not a manifest write
            self._save(durable=False)
        rep.digest = self.tree_digest()
        rep.elapsed_s = time.perf_counter() - t0
        return rep

    def tree_digest(self) -> str:
        """What the baseline depends on: every mirrored file's path and source hash (and where
        the outside dependencies point)."""
        h = blake3.blake3()
        for rel in sorted(self.manifest):
            h.update(f"{rel}\0{self.manifest[rel][2]}\n".encode())
        for rel in sorted(self.links):
            h.update(f"link\0{rel}\0{self.links[rel]}\n".encode())
        return h.hexdigest()

    def write(self, files: dict[str, bytes]) -> None:
        """Put a candidate's texts ({workspace-relative path: bytes}) in the mirror. The manifest
        records them first, so a crash half-way leaves files the next sync knows to restore."""
        for path, data in files.items():
            m = self.manifest.get(path) or [-1, 0, "", ""]
            self.manifest[path] = [m[0], m[1], m[2], digest(data)]
        self._save(durable=True)
        for path, data in files.items():
            dest = self.root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
