"""PreFlight: prove a candidate compiles before anything touches the user's tree.

A *candidate* is a set of node edits (Edit/Delete at a node's span, Create after a node or at the
end of a file) or a unified diff, turned into full file texts by splicing; its id is the blake3
of the diff set (path, hash before, hash after of every file), so the same id always means the
same bytes checked against the same bytes.

The stages run on a *mirror* of the workspace in pt's cache (`mirror_home`: ~/.cache/parseltongue/
mirror-<hash of the workspace path>/), kept in sync by hash (only changed files are copied) and
built with its own target directory, so checks stay warm and the user's tree is never written:

  1. `ra`    rust-analyzer overlay diagnostics, a fast reject (off by default in the policy)
  2. `cargo` `cargo check --message-format=json`, authoritative and always on
  3. `tests` `cargo test` of the tests that reach an edited node (off by default)

Python only performs the effects (files, processes); the rules decide: which node a change or a
diagnostic belongs to (`preflight.edit_nodes`, `preflight.record_result`), which crates to check
(`preflight.check_scope`), which tests to run (`preflight.impacted_tests`), what is "new"
compared with the baseline of the same tree and whether a stage passed (`record_result` under
`preflight.policy`), and the verdict (`preflight.gate`).

    from parseltongue.runner.preflight import NodeEdit, build_from_nodes, run_preflight
    cand = build_from_nodes(pt, [NodeEdit("fn:src/a.rs::f", "Edit", new_code)])
    report = run_preflight(pt, cand)          # report.verdict == "passed" | "failed"
"""
from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import blake3

from ..adapters import cargo
from .api import STATE_DIR, Pt
from .errors import GateFailed, UsageError

MIRROR_DIR = "mirror"
MIRROR_TARGET = "mirror-target"
MIRROR_MANIFEST = "mirror.json"
MIRROR_LOCK = "mirror.lock"
# Never mirrored: build output, VCS data, pt's own state (the mirror lives in it).
SKIP_DIRS = {"target", ".git", ".hg", ".svn", STATE_DIR, "node_modules"}
# A stat is trusted to mean "unchanged" only for files older than this: a file rewritten within
# the same timestamp tick with the same size would otherwise look unchanged (git's "racy" files).
RACY_NS = 2_000_000_000


def digest(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


_TUPLE = re.compile(r"but a tuple (\[.*\]) is found")


def gate_reason(exc: GateFailed) -> str:
    """A failed `:assert none` names its tuple; pt's gates put the reason first, then what failed."""
    m = _TUPLE.search(exc.message)
    if not m:
        return exc.message
    try:
        why, what, *rest = json.loads(m.group(1))
    except (ValueError, TypeError):
        return exc.message
    detail = f" ({rest[0]})" if rest and rest[0] else ""
    return f"{why}: {what}{detail}"


# ------------------------------------------------------------------ candidates

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
class Region:
    """A changed byte range: [start, end) of the base text became [new_start, new_end)."""

    start: int
    end: int
    new_start: int
    new_end: int
    node: str = ""


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


def _range(start: int, stop: int) -> str:
    """A unified-diff hunk range (as difflib writes it)."""
    length = stop - start
    if length == 1:
        return f"{start + 1}"
    return f"{start if not length else start + 1},{length}"


def _common_ends(a, b) -> tuple[int, int]:
    """Lengths of the common prefix and (not overlapping it) common suffix of two sequences."""
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return head, tail


def unified_diff(files) -> str:
    """[(path, old bytes or None, new bytes or None)] -> one unified diff, a/ and b/ prefixes.

    difflib costs ~20 ms on a 200 kB file. The lines before the first and after the last
    difference are equal by construction, so only the middle goes through its matcher; the
    equal ends are added back as opcodes and difflib's own grouping picks the 3 lines of context."""
    out = []
    for path, old, new in sorted(files, key=lambda x: x[0]):
        a = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
        b = (new or b"").decode("utf-8", "replace").splitlines(keepends=True)
        if a == b:
            continue
        head, tail = _common_ends(a, b)
        sm = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail])
        codes = [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in sm.get_opcodes()]
        if head:
            codes.insert(0, ("equal", 0, head, 0, head))
        if tail:
            codes.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
        sm.opcodes = codes  # get_grouped_opcodes() reads the cached opcodes
        lines = ["--- /dev/null\n" if old is None else f"--- a/{path}\n",
                 "+++ /dev/null\n" if new is None else f"+++ b/{path}\n"]
        for group in sm.get_grouped_opcodes(3):
            first, last = group[0], group[-1]
            lines.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n")
            for tag, i1, i2, j1, j2 in group:
                if tag == "equal":
                    lines += [" " + ln for ln in a[i1:i2]]
                    continue
                if tag in ("replace", "delete"):
                    lines += ["-" + ln for ln in a[i1:i2]]
                if tag in ("replace", "insert"):
                    lines += ["+" + ln for ln in b[j1:j2]]
        out += [ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n" for ln in lines]
    return "".join(out)


def _rel_path(ws: Path, path: str) -> str:
    """A workspace-relative posix path, refusing anything that leaves the workspace."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(ws)
        except ValueError:
            raise UsageError(f"{path} is outside the workspace {ws}") from None
    rel = p.as_posix()
    if rel.startswith("../") or rel == ".." or "/../" in rel or not rel or rel == ".":
        raise UsageError(f"{path} is outside the workspace {ws}")
    if Path(rel).parts[0] in SKIP_DIRS:
        raise UsageError(f"{path}: pt does not edit files under {Path(rel).parts[0]}/")
    return rel


def _read(ws: Path, rel: str) -> bytes | None:
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

    if not pt.query("ingest.layout"):
        ingest(pt.workspace, pt.store)
        return
    rs = [f for f in files if f.endswith(".rs")]
    if not rs:
        return
    stored = {r["file_path"]: r["hash"] for r in pt.query("ingest.file_hashes", files=rs)}
    stale = []
    for f in rs:
        data = _read(pt.workspace, f)
        if data is not None and stored.get(f) != digest(data):
            stale.append(f)
        elif data is None and f in stored:
            stale.append(f)
    if stale:
        ingest(pt.workspace, pt.store, paths=stale)


def build_from_nodes(pt: Pt, edits: list[NodeEdit]) -> Candidate:
    """Splice node edits into file texts at the nodes' spans (the graph is refreshed first)."""
    if not edits:
        raise UsageError("a candidate needs at least one edit")
    for e in edits:
        if e.action not in ("Edit", "Delete", "Create"):
            raise UsageError(f"{e.id}: action must be Edit, Delete or Create, not {e.action!r}")
        if e.action == "Create" and not (e.after or e.file):
            raise UsageError(f"{e.id}: Create needs `after` (a node id) or `file`")
        if e.action in ("Edit", "Create") and not e.code.strip():
            raise UsageError(f"{e.id}: the new code is empty (to remove a node, Delete it)")
    wanted = sorted({e.id for e in edits} | {e.after for e in edits if e.action == "Create" and e.after})

    def lookup() -> dict:
        return {r["id"]: r for r in pt.query("codegraph.node_spans", ids=wanted)}

    # Freshness first, then the spans again: re-ingesting a changed file moves them.
    spans = lookup()
    ensure_fresh(pt, sorted({r["file_path"] for r in spans.values()}
                            | {_rel_path(pt.workspace, e.file) for e in edits if e.file}))
    spans = lookup()
    for e in edits:
        for need in ([e.id] if e.action != "Create" else [e.after] if e.after else []):
            if need not in spans:
                raise UsageError(f"unknown node {need!r} (see `pt query list_nodes_by_file -p file=...`)")

    # (file -> [(start, end, replacement, node id)]), base coordinates
    splices: dict[str, list] = {}
    nodes: list[NodeRow] = []
    bases: dict[str, bytes | None] = {}

    def base_of(rel: str) -> bytes | None:
        if rel not in bases:
            bases[rel] = _read(pt.workspace, rel)
        return bases[rel]

    for e in edits:
        if e.action in ("Edit", "Delete"):
            sp = spans[e.id]
            rel, s, t = sp["file_path"], sp["span_start"], sp["span_end"]
            data = base_of(rel)
            if data is None:
                raise UsageError(f"{e.id}: its file {rel} no longer exists")
            current = data[s:t].decode("utf-8")
            new = b"" if e.action == "Delete" else e.code.encode("utf-8")
            splices.setdefault(rel, []).append((s, t, new, e.id))
            nodes.append(NodeRow(e.id, e.action, current, "" if e.action == "Delete" else e.code))
        else:
            if e.id in spans:
                raise UsageError(f"{e.id}: node exists; use Edit")
            if e.after:
                sp = spans[e.after]
                rel, at = sp["file_path"], sp["span_end"]
                base_of(rel)
                new = b"\n\n" + e.code.rstrip("\n").encode("utf-8")
            else:
                rel = _rel_path(pt.workspace, e.file)
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


# ------------------------------------------------------------------ unified diffs

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class _Hunk:
    old_start: int  # 1-based line of the first old line (0 for an empty old side)
    lines: list  # (tag, bytes with newline), tag in ' -+'


def _strip_prefix(name: bytes) -> str | None:
    name = name.split(b"\t")[0].strip()
    if name == b"/dev/null":
        return None
    text = name.decode("utf-8", "replace")
    if text.startswith(("a/", "b/")):
        text = text[2:]
    return text


def parse_diff(text: bytes) -> list[tuple[str | None, str | None, list]]:
    """A unified diff -> [(old path or None, new path or None, hunks)]; `git diff` output works."""
    files, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith(b"--- ") and i + 1 < len(lines) and lines[i + 1].startswith(b"+++ "):
            old, new = _strip_prefix(ln[4:]), _strip_prefix(lines[i + 1][4:])
            hunks, i = [], i + 2
            while i < len(lines) and lines[i].startswith(b"@@"):
                m = _HUNK.match(lines[i])
                if not m:
                    raise UsageError(f"patch line {i + 1}: malformed hunk header")
                old_n = int(m.group(2)) if m.group(2) is not None else 1
                new_n = int(m.group(4)) if m.group(4) is not None else 1
                hunk, i = _Hunk(int(m.group(1)), []), i + 1
                seen_old = seen_new = 0
                while i < len(lines) and (seen_old < old_n or seen_new < new_n):
                    body = lines[i]
                    tag = body[:1]
                    if body.startswith(b"\\"):  # "\ No newline at end of file" for the line before
                        i += 1
                        continue
                    if tag not in (b" ", b"-", b"+") and body.strip() == b"":
                        tag, body = b" ", b" " + body  # some tools drop the space of empty context lines
                    if tag not in (b" ", b"-", b"+"):
                        raise UsageError(f"patch line {i + 1}: hunk ends early ({seen_old}/{old_n} old, {seen_new}/{new_n} new lines)")
                    hunk.lines.append((tag.decode(), body[1:]))
                    seen_old += tag in (b" ", b"-")
                    seen_new += tag in (b" ", b"+")
                    i += 1
                    if i < len(lines) and lines[i].startswith(b"\\"):
                        # the line just read had no newline at the end of its file
                        t, b = hunk.lines[-1]
                        hunk.lines[-1] = (t, b[:-1] if b.endswith(b"\n") else b)
                        i += 1
                if seen_old != old_n or seen_new != new_n:
                    raise UsageError(f"patch: hunk at old line {hunk.old_start} is truncated")
                hunks.append(hunk)
            files.append((old, new, hunks))
            continue
        i += 1
    if not files:
        raise UsageError("the patch holds no file changes (expected a unified diff with ---/+++ headers)")
    return files


def _apply_hunks(rel: str, base: bytes, hunks: list) -> tuple[bytes, list]:
    """Apply hunks exactly (context must match; a hunk may sit at another line, as with `patch`,
    but never fuzzily). Returns the new text and the changed regions, trimmed to the bytes that
    actually differ so that each region lands in the innermost node it touches."""
    old_lines = base.splitlines(keepends=True)
    offsets = [0]
    for ln in old_lines:
        offsets.append(offsets[-1] + len(ln))
    out, regions, pos_line, new_len = [], [], 0, 0
    drift = 0
    for n, h in enumerate(hunks, 1):
        old_side = [b for t, b in h.lines if t in " -"]
        want = max(h.old_start - 1, 0) + drift if old_side else h.old_start + drift
        at = None
        for delta in sorted(range(-len(old_lines) - 1, len(old_lines) + 2), key=abs):
            cand = want + delta
            if cand < pos_line or cand + len(old_side) > len(old_lines):
                continue
            if old_lines[cand:cand + len(old_side)] == old_side:
                at = cand
                break
        if at is None:
            raise UsageError(f"patch does not apply to {rel}: hunk {n} (old line {h.old_start}) does not match the file")
        drift = at - (max(h.old_start - 1, 0) if old_side else h.old_start)
        keep = b"".join(old_lines[pos_line:at])
        out.append(keep)
        new_len += len(keep)
        # walk the hunk: runs of -/+ lines between context lines are the changes
        line, k = at, 0
        while k < len(h.lines):
            if h.lines[k][0] == " ":
                out.append(old_lines[line])
                new_len += len(old_lines[line])
                line += 1
                k += 1
                continue
            rem, add = [], []
            while k < len(h.lines) and h.lines[k][0] != " ":
                (rem if h.lines[k][0] == "-" else add).append(h.lines[k][1])
                k += 1
            old_b, new_b = b"".join(rem), b"".join(add)
            start = offsets[line]
            # trim the common prefix and suffix: `x + 1` -> `x + 2` is one byte, inside its fn
            p, q = _common_ends(old_b, new_b)
            regions.append(Region(start + p, start + len(old_b) - q, new_len + p, new_len + len(new_b) - q))
            out.append(new_b)
            new_len += len(new_b)
            line += len(rem)
        pos_line = line
    out.append(b"".join(old_lines[pos_line:]))
    # a -/+ run that rewrote a line to itself changes nothing
    return b"".join(out), [r for r in regions if r.start != r.end or r.new_start != r.new_end]


def build_from_diff(pt: Pt, patch: bytes) -> Candidate:
    """A unified diff relative to the workspace root -> a candidate whose node rows are the
    outermost nodes the changed regions fall in (`preflight.edit_nodes`)."""
    parsed = parse_diff(patch)
    ws = pt.workspace
    changes: list[FileChange] = []
    for old, new, hunks in parsed:
        if new is None:
            raise UsageError(f"the patch deletes {old}; pt does not delete files")
        rel = _rel_path(ws, new)
        if old is not None and _rel_path(ws, old) != rel:
            raise UsageError(f"the patch renames {old} to {new}; pt does not rename files")
        base = _read(ws, rel)
        if old is None:
            if base is not None:
                raise UsageError(f"the patch creates {rel}, which exists")
            text, _ = _apply_hunks(rel, b"", hunks)
            changes.append(FileChange(rel, None, text, [Region(0, 0, 0, len(text), f"file:{rel}")]))
            continue
        if base is None:
            raise UsageError(f"the patch changes {rel}, which does not exist")
        text, regions = _apply_hunks(rel, base, hunks)
        if text != base:
            changes.append(FileChange(rel, base, text, regions))
    if not changes:
        raise UsageError("the patch changes nothing")
    if len({c.path for c in changes}) != len(changes):
        raise UsageError("the patch changes a file twice; merge its hunks")
    ensure_fresh(pt, [c.path for c in changes])

    # Which node each region belongs to: a rule over the (now fresh) graph.
    flat = [(c, r) for c in changes if c.base is not None for r in c.regions]
    rows = pt.query("preflight.edit_nodes", regions=[[i, c.path, r.start, r.end] for i, (c, r) in enumerate(flat)]) if flat else []
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
            ns, nt = _to_new(c, s, after=False), _to_new(c, t, after=True)
            nodes[nid] = NodeRow(nid, "Edit", c.base[s:t].decode("utf-8"), c.new[ns:nt].decode("utf-8"))
    for c in changes:
        if c.base is None:
            nodes[f"file:{c.path}"] = NodeRow(f"file:{c.path}", "Create", "", c.new.decode("utf-8"))
    return Candidate(changes, list(nodes.values()))


def _to_new(c: FileChange, byte: int, after: bool) -> int:
    """A base-text byte at a node boundary in the new text (regions never straddle a boundary of
    the node they were assigned to, so boundaries map by the shifts of the regions before them)."""
    shift = 0
    for r in sorted(c.regions, key=lambda r: r.start):
        if r.end < byte or (r.end == byte and (after or r.start < byte)):
            shift = r.new_end - r.end
    return byte + shift


# ------------------------------------------------------------------ the mirror

@dataclass
class SyncReport:
    files: int = 0
    copied: int = 0
    removed: int = 0
    hashed: int = 0
    elapsed_s: float = 0.0
    digest: str = ""


def mirror_home(workspace: Path) -> Path:
    """The mirror of a workspace lives outside it, in pt's cache ($PT_CACHE_DIR, else
    $XDG_CACHE_HOME/parseltongue, else ~/.cache/parseltongue), keyed by the workspace's path: a
    copy of the sources inside the workspace would show up to every tool that walks it (grep,
    scorers, editors) as a second set of .rs files."""
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


class Mirror:
    """A copy of the workspace under `.parseltongue/mirror/`, synced by content hash.

    `mirror.json` records, per file, the source's size and mtime, the source's hash and the hash
    of what the mirror holds. A source file whose stat is unchanged and whose mirror copy matches
    is skipped without reading it; a candidate written into the mirror records its own hash, so
    the next sync copies the user's bytes back. Copies get a fresh mtime on purpose: cargo decides
    what to rebuild by mtime, and a restored file must look newer than the last build."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.state = mirror_home(workspace)
        self.root = self.state / MIRROR_DIR
        self.target_dir = mirror_target_dir(workspace, self.state)
        self.manifest_path = self.state / MIRROR_MANIFEST
        self.manifest: dict[str, list] = {}

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
            from ..adapters.fs import atomic_write

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

    def sync(self) -> SyncReport:
        t0 = time.perf_counter()
        rep = SyncReport()
        if not self.root.is_dir():
            self.manifest = {}
        now_ns = time.time_ns()
        seen, dirty = set(), False
        for rel, st in self._walk():
            seen.add(rel)
            rep.files += 1
            m = self.manifest.get(rel)
            if m and m[0] == st.st_size and m[1] == st.st_mtime_ns and m[2] == m[3]:
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
        """What the baseline depends on: every mirrored file's path and source hash."""
        h = blake3.blake3()
        for rel in sorted(self.manifest):
            h.update(f"{rel}\0{self.manifest[rel][2]}\n".encode())
        return h.hexdigest()

    def write(self, cand: Candidate) -> None:
        """Put the candidate's texts in the mirror. The manifest records them first, so a crash
        half-way leaves files the next sync knows to restore."""
        for f in cand.files:
            m = self.manifest.get(f.path) or [-1, 0, "", ""]
            self.manifest[f.path] = [m[0], m[1], m[2], f.new_hash]
        self._save(durable=True)
        for f in cand.files:
            dest = self.root / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.new)


# ------------------------------------------------------------------ running the stages

@dataclass
class StageReport:
    stage: str
    passed: bool
    new_errors: int
    new_warnings: int
    elapsed_ms: float
    baseline: str = ""
    note: str = ""


@dataclass
class PreflightReport:
    candidate_id: str
    verdict: str  # passed | failed
    files: list  # [{path, base_hash, new_hash, created}]
    nodes: list  # [{id, action}]
    stages: list  # [StageReport]
    diagnostics: list  # rows of preflight.diagnostics
    failed_stages: list
    missing_stages: list
    scope: list  # crates checked ([] = whole workspace)
    sync: dict
    warnings: list
    diff: str
    elapsed_s: float
    cargo_run: object = None  # cargo.CargoRun of stage 2 (not part of the JSON report)

    def as_dict(self) -> dict:
        run, self.cargo_run = self.cargo_run, None
        try:
            d = asdict(self)
        finally:
            self.cargo_run = run
        d.pop("cargo_run")
        d["stages"] = [asdict(s) for s in self.stages]
        return d


def _policy(pt: Pt) -> dict:
    return {r["key"]: r["value"] for r in pt.query("preflight.policy")}


def _diag_rows(cand: Candidate, diags: list) -> list:
    """cargo diagnostics -> record_result rows, bytes in the user's coordinates."""
    rows = []
    for seq, d in enumerate(diags):
        fc = cand.file(d.file) if d.file else None
        byte, hint = fc.to_base(d.byte_start) if fc else (d.byte_start if d.file else -1, "")
        rows.append([seq, d.file, d.line, d.col, byte, d.severity, d.code, d.message, hint])
    return rows


class _Runner:
    def __init__(self, pt: Pt, cand: Candidate, policy: dict, mirror: Mirror, scope: list, sync: SyncReport,
                 error_gate: str = "", max_new_warnings: int = -2):
        self.pt, self.cand, self.policy, self.mirror, self.scope, self.sync = pt, cand, policy, mirror, scope, sync
        self.error_gate, self.max_new_warnings = error_gate, max_new_warnings
        self.cargo_run: cargo.CargoRun | None = None  # the candidate's stage-2 run (pt run fix reads its diagnostics)
        self.cid = cand.id
        self.stages: list[StageReport] = []
        self.warnings: list[str] = []
        self.in_mirror = False  # does the mirror hold the candidate (True) or the user's tree?
        self.verdict: dict | None = None  # set when the last stage's record also gave the verdict

    def record(self, stage: str, rows: list, elapsed_s: float, baseline: str = "", note: str = "",
               candidate_id: str | None = None, decide: bool = False) -> StageReport:
        """Store a stage's diagnostics; `decide` (the run's last stage) also lets the gate rule
        give the verdict in the same transaction - one SQLite commit less on every PreFlight."""
        res = self.pt.run("preflight.record_result", {
            "candidate_id": candidate_id or self.cid, "stage": stage, "baseline": baseline,
            "diags": rows, "elapsed_ms": round(elapsed_s * 1000.0, 1), "error_gate": self.error_gate,
            "max_new_warnings": self.max_new_warnings},
            vars={"decide": decide}).dicts()[0]
        if decide:
            self.verdict = res
        rep = StageReport(stage, res["passed"], res["new_errors"], res["new_warnings"], res["elapsed_ms"], baseline, note)
        if candidate_id is None:
            self.stages.append(rep)
        return rep

    def to_candidate(self) -> None:
        if not self.in_mirror:
            self.mirror.write(self.cand)
            self.in_mirror = True

    def to_baseline(self) -> None:
        if self.in_mirror:
            self.mirror.sync()
            self.in_mirror = False

    def baseline(self, stage: str, key: str, run) -> str:
        """The stored baseline of this tree for a stage, computed once per tree digest."""
        bid = f"baseline:{self.sync.digest}:{key}"
        if not self.pt.query("preflight.results", candidate_id=bid):
            self.to_baseline()
            out = run()
            self.record(stage, [[i, d.file, d.line, d.col, d.byte_start if d.file else -1, d.severity, d.code, d.message, ""]
                                for i, d in enumerate(out.diagnostics)], out.elapsed_s, candidate_id=bid)
        return bid

    # -- stage 1
    def ra(self) -> StageReport | None:
        from ..adapters import rust_analyzer as ra

        texts = {f.path: f.new.decode("utf-8") for f in self.cand.files if f.path.endswith(".rs")}
        if not texts:
            return None
        t0 = time.perf_counter()
        timeout = float(self.policy["timeout_ra_s"])
        self.to_baseline()  # RA reads every file it is not given from the mirror's disk
        try:
            session = ra.open_session(self.mirror.root, request_timeout=timeout, ready_timeout=timeout)
        except ra.RaError as exc:
            self.warnings.append(f"stage ra skipped: {exc}")
            return None
        try:
            with session.overlay(texts) as ov:
                cand_diags = ov.diagnostics(timeout)
            bases = {f.path: f.base.decode("utf-8") for f in self.cand.files if f.path in texts and f.base is not None}
            base_diags = {}
            if bases:
                with session.overlay(bases) as ov:
                    base_diags = ov.diagnostics(timeout)
        except ra.RaError as exc:
            self.warnings.append(f"stage ra skipped: {exc}")
            return None
        finally:
            session.shutdown()
        elapsed = time.perf_counter() - t0

        def rows(diags: dict, source: dict, mapped: bool) -> list:
            out = []
            for path, ds in sorted(diags.items()):
                index = ra.LineIndex(source[path])
                fc = self.cand.file(path)
                for d in ds:
                    byte = index.offset(d.range.start)
                    b, hint = fc.to_base(byte) if mapped else (byte, "")
                    out.append([len(out), path, d.range.start.line + 1, d.range.start.character + 1, b,
                                d.severity_name if d.severity_name in ("error", "warning") else "info",
                                d.code or "", d.message, hint])
            return out

        bid = f"baseline:ra:{self.cid}"
        self.record("ra", rows(base_diags, bases, False), 0.0, candidate_id=bid)
        return self.record("ra", rows(cand_diags, texts, True), elapsed, baseline=bid)

    # -- stage 2
    def start_cargo(self) -> cargo.CargoJob:
        return cargo.start_check(self.mirror.root, packages=self.scope or None,
                                 all_targets=bool(self.policy["all_targets"]),
                                 target_dir=self.mirror.target_dir, timeout=float(self.policy["timeout_cargo_s"]))

    def cargo(self, meanwhile=None, last: bool = False) -> StageReport:
        """`meanwhile()` runs while rustc does (the graph writes of run_preflight): on two cores
        that bookkeeping is then off the critical path."""
        self.to_candidate()
        job = self.start_cargo()
        try:
            if meanwhile:
                meanwhile()
        except BaseException:
            job.kill()
            raise
        run = job.wait()
        self.cargo_run = run
        baseline = ""
        if run.diagnostics:  # only then is there anything to compare
            baseline = self.baseline("cargo", _cargo_key(self.scope, self.policy), lambda: self.start_cargo().wait())
        return self.record("cargo", _diag_rows(self.cand, run.diagnostics), run.elapsed_s, baseline, decide=last)

    # -- stage 3
    def tests(self) -> StageReport:
        edited = [n.id for n in self.cand.nodes if n.action != "Create"]
        found = self.pt.query("preflight.impacted_tests", nodes=edited, max_depth=int(self.policy["test_depth"])) if edited else []
        if not found:
            return self.record("tests", [], 0.0, note="no test reaches the edited nodes", decide=True)
        crates = sorted({t["crate"] for t in found})
        names = sorted({t["name"] for t in found})
        by_name = {t["name"]: t["id"] for t in found}

        def run_tests():
            return cargo.run_tests(self.mirror.root, packages=crates, filters=names,
                                   target_dir=self.mirror.target_dir, timeout=float(self.policy["timeout_tests_s"]))

        self.to_candidate()
        run = run_tests()
        rows = _diag_rows(self.cand, run.diagnostics)
        for r in rows:  # a failed test belongs to the test's node
            if r[6] == "test-failed":
                name = r[7].split()[1].rsplit("::", 1)[-1]
                r[8] = by_name.get(name, "")
        baseline = ""
        if run.diagnostics:
            baseline = self.baseline("tests", "tests:" + digest(json.dumps([crates, names]).encode())[:16], run_tests)
        return self.record("tests", rows, run.elapsed_s, baseline, decide=True,
                           note=f"{len(run.tests)} tests run: {', '.join(names)}")


def _cargo_key(scope: list, policy: dict) -> str:
    """What a stored cargo baseline of one tree is keyed by, besides the tree digest."""
    return "cargo:" + (",".join(scope) or "*") + (":all-targets" if policy["all_targets"] else "")


def _scope(pt: Pt, policy: dict, files: list) -> list:
    """The crates to check for edits of `files` ([] = the whole workspace)."""
    rows = [r["crate"] for r in pt.query("preflight.check_scope", files=files)]
    return [] if (policy["check_scope"] == "workspace" or "*" in rows or not rows) else sorted(rows)


def check_tree(pt: Pt, files: list) -> tuple[cargo.CargoRun, str]:
    """`cargo check` of the user's tree as it is (in the mirror, never in the tree), scoped as a
    candidate editing `files` would be. Stored as that tree's baseline, so the PreFlights that
    follow compare against it without checking the same tree again. -> (run, baseline id)."""
    policy = _policy(pt)
    scope = _scope(pt, policy, files)
    mirror = Mirror(pt.workspace)
    with mirror.locked():
        sync = mirror.sync()
        runner = _Runner(pt, Candidate([], []), policy, mirror, scope, sync)
        out: list = []

        def run():
            out.append(runner.start_cargo().wait())
            return out[0]

        bid = runner.baseline("cargo", _cargo_key(scope, policy), run)
        if not out:  # stored already: the run is needed for its spans and suggestions
            out.append(runner.start_cargo().wait())
    return out[0], bid


def run_preflight(pt: Pt, cand: Candidate, error_gate: str = "", max_new_warnings: int = -2) -> PreflightReport:
    """Queue the candidate, run the enabled stages in the mirror, let the gate decide.
    `error_gate` and `max_new_warnings` override the policy's for this run ('new': errors the tree
    already has do not fail it; -1: any number of new warnings)."""
    t0 = time.perf_counter()
    cid = cand.id
    policy = _policy(pt)
    scope = _scope(pt, policy, [f.path for f in cand.files])

    def register() -> None:
        """The draft tray (current code of the touched nodes, then the proposal) and the queue
        (which also clears results of an earlier run of the same candidate)."""
        current = [[n.id, n.current_code] for n in cand.nodes if n.action != "Create"]
        try:
            if current:
                pt.run("codegraph.upsert_current", {"rows": current})
            pt.run("codegraph.propose_future", {"candidate_id": cid, "rows": [[n.id, n.action, n.future_code] for n in cand.nodes]})
            pt.run("preflight.enqueue", {"candidate_id": cid, "now": time.time(), "files": [
                [f.path, f.base_hash, f.new_hash, f.new.decode("utf-8")] for f in cand.files]})
        except GateFailed as exc:  # the tray refused the proposal: that is bad input, not a failed check
            raise UsageError(f"candidate refused: {gate_reason(exc)}") from None

    mirror = Mirror(pt.workspace)
    with mirror.locked():
        sync = mirror.sync()
        runner = _Runner(pt, cand, policy, mirror, scope, sync, error_gate, max_new_warnings)
        rejected = False
        if policy["stage_ra"]:
            register()
            rep = runner.ra()
            rejected = rep is not None and not rep.passed  # fast reject: cargo is not worth running
            if not rejected:
                rep = runner.cargo(last=not policy["stage_tests"])
        else:
            rep = runner.cargo(meanwhile=register, last=not policy["stage_tests"])
        if not rejected and rep.passed and policy["stage_tests"]:
            runner.tests()

    # The gate (which also stamps the nodes) ran with the last record, unless the run stopped early.
    verdict_row = runner.verdict or pt.query("preflight.gate", candidate_id=cid)[0]
    verdict = verdict_row["verdict"]
    diags = pt.query("preflight.diagnostics", candidate_id=cid)
    return PreflightReport(
        candidate_id=cid, verdict=verdict,
        files=[{"path": f.path, "base_hash": f.base_hash, "new_hash": f.new_hash, "created": f.base is None} for f in cand.files],
        nodes=[{"id": n.id, "action": n.action} for n in cand.nodes],
        stages=runner.stages, diagnostics=diags,
        failed_stages=verdict_row["failed_stages"], missing_stages=verdict_row["missing_stages"],
        scope=scope, sync={"files": sync.files, "copied": sync.copied, "removed": sync.removed,
                           "hashed": sync.hashed, "elapsed_s": round(sync.elapsed_s, 4)},
        warnings=runner.warnings, diff=cand.diff(), elapsed_s=round(time.perf_counter() - t0, 3),
        cargo_run=runner.cargo_run)
