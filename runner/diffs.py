"""Pure text diffs: unified diffs out and in, and the byte regions two texts differ in.

Nothing here touches the store, the workspace or a process; PreFlight's candidates
(runner/candidate.py) and the fix flow (runner/fix.py) build on these.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .errors import UsageError


@dataclass
class Region:
    """A changed byte range: [start, end) of the base text became [new_start, new_end); `node` is
    the graph node the change belongs to, once known."""

    start: int
    end: int
    new_start: int
    new_end: int
    node: str = ""


def common_ends(a, b) -> tuple[int, int]:
    """Lengths of the common prefix and (not overlapping it) common suffix of two sequences."""
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    return head, tail


def _line_opcodes(a: list, b: list) -> difflib.SequenceMatcher:
    """difflib costs ~20 ms on a 200 kB file. The lines before the first and after the last
    difference are equal by construction, so only the middle goes through its matcher; the equal
    ends are added back as opcodes (get_grouped_opcodes() reads the cached ones)."""
    head, tail = common_ends(a, b)
    sm = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail])
    codes = [(tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in sm.get_opcodes()]
    if head:
        codes.insert(0, ("equal", 0, head, 0, head))
    if tail:
        codes.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    sm.opcodes = codes
    return sm


def _range(start: int, stop: int) -> str:
    """A unified-diff hunk range (as difflib writes it)."""
    length = stop - start
    if length == 1:
        return f"{start + 1}"
    return f"{start if not length else start + 1},{length}"


def unified_diff(files) -> str:
    """[(path, old bytes or None, new bytes or None)] -> one unified diff, a/ and b/ prefixes,
    3 lines of context."""
    out = []
    for path, old, new in sorted(files, key=lambda x: x[0]):
        a = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
        b = (new or b"").decode("utf-8", "replace").splitlines(keepends=True)
        if a == b:
            continue
        sm = _line_opcodes(a, b)
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


def changed_lines(old: bytes, new: bytes) -> int:
    """How many lines a change touches (the larger side of each changed run)."""
    a, b = old.decode("utf-8").splitlines(), new.decode("utf-8").splitlines()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in _line_opcodes(a, b).get_opcodes() if tag != "equal")


def _trimmed(start: int, old_b: bytes, new_start: int, new_b: bytes) -> Region:
    """A changed run of lines, trimmed to the bytes that differ: `x + 1` -> `x + 2` is one byte,
    inside its fn, so the region lands in the innermost node it touches."""
    p, q = common_ends(old_b, new_b)
    return Region(start + p, start + len(old_b) - q, new_start + p, new_start + len(new_b) - q)


def changed_regions(old: bytes, new: bytes) -> list[Region]:
    """The regions two texts differ in: one per changed run of lines (what a unified diff with
    this change would show between context lines), each trimmed to its differing bytes."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    off_a, off_b = [0], [0]
    for ln in a:
        off_a.append(off_a[-1] + len(ln))
    for ln in b:
        off_b.append(off_b[-1] + len(ln))
    regions = []
    for tag, i1, i2, j1, j2 in _line_opcodes(a, b).get_opcodes():
        if tag != "equal":
            regions.append(_trimmed(off_a[i1], b"".join(a[i1:i2]), off_b[j1], b"".join(b[j1:j2])))
    return [r for r in regions if r.start != r.end or r.new_start != r.new_end]


# ------------------------------------------------------------------ reading unified diffs

_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class Hunk:
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
                hunk, i = Hunk(int(m.group(1)), []), i + 1
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


def apply_hunks(rel: str, base: bytes, hunks: list) -> tuple[bytes, list]:
    """Apply hunks exactly (context must match; a hunk may sit at another line, as with `patch`,
    but never fuzzily). Returns the new text and the changed regions, trimmed to the bytes that
    actually differ."""
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
            regions.append(_trimmed(offsets[line], old_b, new_len, new_b))
            out.append(new_b)
            new_len += len(new_b)
            line += len(rem)
        pos_line = line
    out.append(b"".join(old_lines[pos_line:]))
    # a -/+ run that rewrote a line to itself changes nothing
    return b"".join(out), [r for r in regions if r.start != r.end or r.new_start != r.new_end]
