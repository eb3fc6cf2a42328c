"""A re-ingested file, extracted in part: only the items an edit changed.

An edit of one fn in a 600 KB file leaves the other top-level items byte for byte as the graph
holds them (each node keeps the blake3 hash of its bytes). The stored top-level items are
compared with the new bytes from both ends - an item before the edit at its old offsets, one
after it shifted by the change in length - and what lies between, the region, is the only
part parsed and extracted (`adapters.treesitter.extract_region`); the text between the other
items that is not whitespace is read too, for the file node. The facts handed to
`ingest.replace_files` are the region's and the file node's; the rule keeps the items outside
the region and shifts the positions of those after it. A whole-file extraction is used instead
whenever the result could differ: a file with syntax errors (now or stored) or hydrated by
rust-analyzer since its last ingest, a `use` inside the
region (`raw_uses` rows are per file, not per item), a region item whose id shares a
duplicate counter (`~2`) with an item after it, or a changed `is_test` of the file.

    r = region(data, stored)       # stored: ingest.file_items rows of the file
    facts = extract(rel, data, r)  # None: extract the whole file
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import blake3

from ..adapters.treesitter import FileFacts, extract_region

MAX_FILES = 16  # a re-ingest of up to this many files asks for their stored items
_DUP = re.compile(r"~\d+$")


@dataclass
class Region:
    """The edited part of a file: [start, end) in the new bytes, [old_start, old_end) in the
    stored ones; the items after it moved by `byte_shift` bytes and `line_shift` lines."""
    start: int
    end: int
    old_start: int
    old_end: int
    byte_shift: int
    line_shift: int
    redo: list[str] = field(default_factory=list)     # stored top-level items inside the region
    shifted: list[str] = field(default_factory=list)  # stored top-level items after it
    seen: dict[str, int] = field(default_factory=dict)  # id counters of the items before it
    gaps: list[tuple[int, int]] = field(default_factory=list)  # non-blank text between kept items
    file_test: bool = False


def _h(b: bytes) -> str:
    return blake3.blake3(b).hexdigest()


def region(data: bytes, stored: list[dict]) -> Region | None:
    """The region of `data` that differs from the stored file, or None (extract all of it)."""
    file = next((r for r in stored if r["what"] == "file"), None)
    if file is None or file["n"] or file["hydrated"]:
        # not stored; stored with syntax errors (recovered items can span the edit); or with
        # rust-analyzer's facts, which a re-ingest resets on all of the file's nodes
        return None
    items = sorted((r for r in stored if r["what"] == "item"), key=lambda r: r["span_start"])
    shift = len(data) - file["span_end"]
    i = 0
    while i < len(items) and items[i]["span_end"] <= len(data) and \
            _h(data[items[i]["span_start"]:items[i]["span_end"]]) == items[i]["hash"]:
        i += 1
    start = items[i - 1]["span_end"] if i else 0
    j = len(items)
    while j > i and items[j - 1]["span_start"] + shift >= start and \
            _h(data[items[j - 1]["span_start"] + shift:items[j - 1]["span_end"] + shift]) == items[j - 1]["hash"]:
        j -= 1
    old_end = items[j]["span_start"] if j < len(items) else file["span_end"]
    end = old_end + shift
    if any(start <= u["span_start"] < old_end for u in stored if u["what"] == "use"):
        return None
    line_shift = 0
    if j < len(items):
        line_shift = data.count(b"\n", 0, end) + 1 - items[j]["line_start"]
    seen: dict[str, int] = {}
    for it in items[:i]:
        base = _DUP.sub("", it["id"])
        seen[base] = seen.get(base, 0) + 1
        seen[it["id"]] = 1
    gaps, at = [], 0
    for it in items[:i]:
        gaps.append((at, it["span_start"]))
        at = it["span_end"]
    gaps.append((at, start))
    gaps.append((start, end))
    at = end
    for it in items[j:]:
        gaps.append((at, it["span_start"] + shift))
        at = it["span_end"] + shift
    gaps.append((at, len(data)))
    keep = [(s, e) for s, e in gaps if s < e and (s, e) == (start, end) or data[s:e].strip()]
    return Region(start, end, start, old_end, shift, line_shift,
                  redo=[it["id"] for it in items[i:j]], shifted=[it["id"] for it in items[j:]],
                  seen=seen, gaps=_merged(keep), file_test=bool(file["is_test"]))


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in ranges:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        elif s < e:
            out.append((s, e))
    return out


def extract(rel: str, data: bytes, r: Region) -> FileFacts | None:
    """The region's facts and the file node (the file's own facts), or None: extract it whole."""
    facts = extract_region(rel, data, r.gaps, r.seen, r.end if r.shifted else None)
    if facts is None or facts.nodes[0][13] != r.file_test or any(n[2] == "use" for n in facts.nodes):
        return None
    after = {_DUP.sub("", i) for i in r.shifted}
    if after:
        top = "file:" + rel
        mine = {_DUP.sub("", n[0]) for n in facts.nodes if n[5] == top} | {_DUP.sub("", i) for i in r.redo}
        if mine & after:
            return None  # an id counter the items after the region share: their ids may move
    return facts
