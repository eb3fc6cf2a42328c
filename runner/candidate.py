"""PreFlight candidates: what a change is, built from node edits, a unified diff or new texts.

A *candidate* is the full new text of every file it changes, with the changed regions and the
graph nodes they belong to; its id is the blake3 of the diff set (path, hash before, hash after
of every file), so the same id always means the same bytes checked against the same bytes.

Three ways to build one, each refreshing the graph for the files involved first:

    build_from_nodes(pt, [NodeEdit("fn:src/a.rs::f", "Edit", new_code)])   # node-addressed (agents)
    build_from_diff(pt, patch_bytes)                                        # `pt preflight --diff`
    build_from_texts(pt, {"src/a.rs": new_bytes})                           # `pt run fix`

Which node a changed region belongs to is a rule (`preflight.edit_nodes`); the programs used are
steps of rules/preflight/flow.yaml.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters.fs import digest
from ..adapters.mirror import SKIP_DIRS
from .api import Pt, workspace_path
from .diffs import Region, apply_hunks, changed_regions, parse_diff, unified_diff
from .errors import UsageError
from .flows import flow


@dataclass
class NodeEdit:
    """One node-level edit. Create needs `after` (a node id: insert after its span) or `file`
    (append to that file); Delete ignores `code`."""

    id: str
    action: str = "Edit"
    code: str = ""
    after: str | None = None
    file: str | None = None


@dataclass
class FileChange:
    path: str  # workspace-relative, posix
    base: bytes | None  # None: the file does not exist yet
    new: bytes
    regions: list = field(default_factory=list)

    @property
    def base_hash(self) -> str:
        return "" if self.base is None else digest(self.base)

    @property
    def new_hash(self) -> str:
        return digest(self.new)

    def to_base(self, byte: int) -> tuple[int, str]:
        """A byte of the new text in the base text's coordinates, and the node whose edit covers
        it ('' outside every edit): diagnostics of the candidate are compared with the baseline
        and mapped to nodes in the coordinates the graph knows."""
        if byte < 0:
            return -1, ""
        if self.base is None:
            return -1, self.regions[0].node if self.regions else ""
        regions = sorted(self.regions, key=lambda r: r.new_start)
        shift = 0
        for r in regions:
            if byte < r.new_start:
                break
            if byte < r.new_end or (r.new_start == r.new_end == byte):
                return r.start, r.node
            shift = r.end - r.new_end
        return byte + shift, ""

    def to_new(self, byte: int, after: bool) -> int:
        """A base-text byte at a node boundary in the new text (regions never straddle a boundary
        of the node they were assigned to, so boundaries map by the shifts of the regions before
        them)."""
        shift = 0
        for r in sorted(self.regions, key=lambda r: r.start):
            if r.end < byte or (r.end == byte and (after or r.start < byte)):
                shift = r.new_end - r.end
        return byte + shift


@dataclass
class NodeRow:
    id: str
    action: str  # Create, Edit, Delete
    current_code: str
    future_code: str


@dataclass
class Candidate:
    files: list  # [FileChange]
    nodes: list  # [NodeRow]

    @property
    def id(self) -> str:
        """blake3 of the diff set: the same id always means the same bytes from the same bytes."""
        diff_set = sorted([f.path, f.base_hash, f.new_hash] for f in self.files)
        return digest(json.dumps(diff_set, separators=(",", ":")).encode())

    def file(self, path: str) -> FileChange | None:
        return next((f for f in self.files if f.path == path), None)

    def diff(self) -> str:
        return unified_diff([(f.path, f.base, f.new) for f in self.files])


# ------------------------------------------------------------------ reading the workspace

def rel_path(ws: Path, path: str) -> str:
    """A workspace-relative posix path for a file an edit names (relative to the root), refusing
    anything outside the workspace and the directories pt never edits."""
    rel = workspace_path(ws, path, cwd=ws)
    if not rel:
        raise UsageError(f"{path} is the workspace root, not a file")
    if Path(rel).parts[0] in SKIP_DIRS:
        raise UsageError(f"{path}: pt does not edit files under {Path(rel).parts[0]}/")
    return rel


def read_text_file(ws: Path, rel: str) -> bytes | None:
    """A workspace file's bytes (None when it does not exist); it must be UTF-8 text."""
    path = ws / rel
    if not path.exists():
        return None
    if not path.is_file():
        raise UsageError(f"{rel} is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {rel}: {exc.strerror}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{rel} is not UTF-8; pt only edits UTF-8 text") from None
    return data


def ensure_fresh(pt: Pt, files: list[str]) -> None:
    """Spans are only as good as the graph: re-ingest the given `.rs` files whose bytes differ
    from what was ingested (and the whole workspace if it was never ingested)."""
    from .ingest import ingest

    if not flow("preflight").query(pt, "ingested"):
        ingest(pt.workspace, pt.store)
        return
    rs = [f for f in files if f.endswith(".rs")]
    if not rs:
        return
    stored = {r["file_path"]: r["hash"] for r in flow("preflight").query(pt, "hashes", files=rs)}
    stale = []
    for f in rs:
        data = read_text_file(pt.workspace, f)
        if data is not None and stored.get(f) != digest(data):
            stale.append(f)
        elif data is None and f in stored:
            stale.append(f)
    if stale:
        ingest(pt.workspace, pt.store, paths=stale)


# ------------------------------------------------------------------ node edits

def _check_edits(edits: list[NodeEdit]) -> None:
    if not edits:
        raise UsageError("a candidate needs at least one edit")
    for e in edits:
        if e.action not in ("Edit", "Delete", "Create"):
            raise UsageError(f"{e.id}: action must be Edit, Delete or Create, not {e.action!r}")
        if e.action == "Create" and not (e.after or e.file):
            raise UsageError(f"{e.id}: Create needs `after` (a node id) or `file`")
        if e.action in ("Edit", "Create") and not e.code.strip():
            raise UsageError(f"{e.id}: the new code is empty (to remove a node, Delete it)")


def build_from_nodes(pt: Pt, edits: list[NodeEdit]) -> Candidate:
    """Splice node edits into file texts at the nodes' spans (the graph is refreshed first).
    Unknown nodes, overlapping edits and edits that change nothing are UsageErrors."""
    _check_edits(edits)
    wanted = sorted({e.id for e in edits} | {e.after for e in edits if e.action == "Create" and e.after})

    def lookup() -> dict:
        return {r["id"]: r for r in flow("preflight").query(pt, "spans", ids=wanted)}

    # Freshness first, then the spans again: re-ingesting a changed file moves them.
    spans = lookup()
    ensure_fresh(pt, sorted({r["file_path"] for r in spans.values()}
                            | {rel_path(pt.workspace, e.file) for e in edits if e.file}))
    spans = lookup()
    for e in edits:
        for need in ([e.id] if e.action != "Create" else [e.after] if e.after else []):
            if need not in spans:
                raise UsageError(f"unknown node {need!r} (see `pt query list_nodes_by_file -p file=...`)")

    splices: dict[str, list] = {}  # file -> [(start, end, replacement, node id)], base coordinates
    nodes: list[NodeRow] = []
    bases: dict[str, bytes | None] = {}

    def base_of(rel: str) -> bytes | None:
        if rel not in bases:
            bases[rel] = read_text_file(pt.workspace, rel)
        return bases[rel]

    for e in edits:
        if e.action in ("Edit", "Delete"):
            sp = spans[e.id]
            rel, s, t = sp["file_path"], sp["span_start"], sp["span_end"]
            data = base_of(rel)
            if data is None:
                raise UsageError(f"{e.id}: its file {rel} no longer exists")
            new = b"" if e.action == "Delete" else e.code.encode("utf-8")
            splices.setdefault(rel, []).append((s, t, new, e.id))
            nodes.append(NodeRow(e.id, e.action, data[s:t].decode("utf-8"), "" if e.action == "Delete" else e.code))
            continue
        if e.id in spans:
            raise UsageError(f"{e.id}: node exists; use Edit")
        if e.after:
            sp = spans[e.after]
            rel, at = sp["file_path"], sp["span_end"]
            base_of(rel)
            new = b"\n\n" + e.code.rstrip("\n").encode("utf-8")
        else:
            rel = rel_path(pt.workspace, e.file)
            data = base_of(rel)
            at = len(data or b"")
            sep = b"" if not data or data.endswith(b"\n") else b"\n"
            new = sep + (b"\n" if data else b"") + e.code.rstrip("\n").encode("utf-8") + b"\n"
        splices.setdefault(rel, []).append((at, at, new, e.id))
        nodes.append(NodeRow(e.id, "Create", "", e.code))

    changes = []
    for rel, items in sorted(splices.items()):
        base = bases[rel]
        items.sort(key=lambda x: (x[0], x[1]))
        for (s1, t1, _, n1), (s2, _, _, n2) in zip(items, items[1:]):
            if s2 < t1:
                raise UsageError(f"edits of {n1} and {n2} overlap in {rel}; edit the outer node only")
        out, regions, pos, shift = [], [], 0, 0
        src = base or b""
        for s, t, new, nid in items:
            out.append(src[pos:s])
            regions.append(Region(s, t, s + shift, s + shift + len(new), nid))
            out.append(new)
            shift += len(new) - (t - s)
            pos = t
        out.append(src[pos:])
        changes.append(FileChange(rel, base, b"".join(out), regions))
    changes = [c for c in changes if c.new != c.base]
    if not changes:
        raise UsageError("the edits change nothing")
    return Candidate(changes, nodes)


# ------------------------------------------------------------------ diffs and texts

def build_from_diff(pt: Pt, patch: bytes) -> Candidate:
    """A unified diff relative to the workspace root -> a candidate whose node rows are the
    outermost nodes the changed regions fall in. A patch that does not apply exactly, renames
    or deletes files, or changes nothing is a UsageError."""
    ws = pt.workspace
    changes: list[FileChange] = []
    for old, new, hunks in parse_diff(patch):
        if new is None:
            raise UsageError(f"the patch deletes {old}; pt does not delete files")
        rel = rel_path(ws, new)
        if old is not None and rel_path(ws, old) != rel:
            raise UsageError(f"the patch renames {old} to {new}; pt does not rename files")
        base = read_text_file(ws, rel)
        if old is None:
            if base is not None:
                raise UsageError(f"the patch creates {rel}, which exists")
            text, _ = apply_hunks(rel, b"", hunks)
            changes.append(FileChange(rel, None, text, [Region(0, 0, 0, len(text), f"file:{rel}")]))
            continue
        if base is None:
            raise UsageError(f"the patch changes {rel}, which does not exist")
        text, regions = apply_hunks(rel, base, hunks)
        if text != base:
            changes.append(FileChange(rel, base, text, regions))
    if not changes:
        raise UsageError("the patch changes nothing")
    if len({c.path for c in changes}) != len(changes):
        raise UsageError("the patch changes a file twice; merge its hunks")
    return _with_nodes(pt, changes)


def build_from_texts(pt: Pt, texts: dict[str, bytes]) -> Candidate | None:
    """{workspace-relative path: new bytes} -> a candidate relative to the files on disk (None
    when no file differs). The regions come straight from the two texts (no diff round trip)."""
    ws = pt.workspace
    changes = []
    for path, new in sorted(texts.items()):
        rel = rel_path(ws, path)
        base = read_text_file(ws, rel)
        if base is None:
            changes.append(FileChange(rel, None, new, [Region(0, 0, 0, len(new), f"file:{rel}")]))
        elif new != base:
            changes.append(FileChange(rel, base, new, changed_regions(base, new)))
    return _with_nodes(pt, changes) if changes else None


def _with_nodes(pt: Pt, changes: list[FileChange]) -> Candidate:
    """The node rows of changed files: which node each region belongs to is a rule over the
    (refreshed) graph, `preflight.edit_nodes`."""
    ensure_fresh(pt, [c.path for c in changes])
    flat = [(c, r) for c in changes if c.base is not None for r in c.regions]
    rows = flow("preflight").query(pt, "edit_nodes", regions=[[i, c.path, r.start, r.end] for i, (c, r) in enumerate(flat)]) if flat else []
    by_region = {r["region"]: r for r in rows}
    # A region outside every node the graph knows (a manifest, a file not ingested, the very end
    # of a file) makes the whole file the edited node - and then every region of that file, or
    # the file's edit and a node's edit would overlap.
    whole = {c.path for i, (c, _) in enumerate(flat) if i not in by_region}
    nodes: dict[str, NodeRow] = {}
    for i, (c, r) in enumerate(flat):
        hit = None if c.path in whole else by_region[i]
        nid, s, t = (hit["id"], hit["span_start"], hit["span_end"]) if hit else (f"file:{c.path}", 0, len(c.base))
        r.node = nid
        if nid not in nodes:
            ns, nt = c.to_new(s, after=False), c.to_new(t, after=True)
            nodes[nid] = NodeRow(nid, "Edit", c.base[s:t].decode("utf-8"), c.new[ns:nt].decode("utf-8"))
    for c in changes:
        if c.base is None:
            nodes[f"file:{c.path}"] = NodeRow(f"file:{c.path}", "Create", "", c.new.decode("utf-8"))
    return Candidate(changes, list(nodes.values()))
