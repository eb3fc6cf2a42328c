"""The texts a fix round works on, and rustc's diagnostics as `fix_*` facts.

rustc counts bytes, Cozo's string functions count characters: diagnostics go into the store in
characters (`fix.put_facts`), and the edits patterns propose come back in characters and are
spliced into the round's texts here. Nothing here decides anything.
"""
from __future__ import annotations

from pathlib import Path

from ..adapters import cargo
from .api import Pt
from .flows import flow


class Offsets:
    """Byte <-> character positions of one UTF-8 text."""

    def __init__(self, data: bytes):
        self.text = data.decode("utf-8")
        self.ascii = len(self.text) == len(data)
        if not self.ascii:
            self.char_at = [0] * (len(data) + 1)
            b = 0
            for i, ch in enumerate(self.text):
                n = len(ch.encode("utf-8"))
                for k in range(n):
                    self.char_at[b + k] = i
                b += n
            self.char_at[len(data)] = len(self.text)

    def char(self, byte: int) -> int:
        if byte < 0:
            return -1
        return byte if self.ascii else self.char_at[min(byte, len(self.char_at) - 1)]


class Tree:
    """The round's view of the files: the user's bytes, overlaid by the accepted edits so far."""

    def __init__(self, ws: Path):
        self.ws = ws
        self.disk: dict[str, bytes | None] = {}
        self.changed: dict[str, bytes] = {}

    def on_disk(self, rel: str) -> bytes | None:
        if rel not in self.disk:
            try:
                self.disk[rel] = (self.ws / rel).read_bytes()
            except OSError:
                self.disk[rel] = None
        return self.disk[rel]

    def get(self, rel: str) -> bytes | None:
        return self.changed.get(rel, self.on_disk(rel))


def diag_dict(d: cargo.CompilerDiagnostic) -> dict:
    return {"file": d.file, "line": d.line, "col": d.col, "code": d.code, "message": d.message}


def put_facts(pt: Pt, run_id: str, rnd: int, errors: list, tree: Tree) -> None:
    """Store a round's errors (every span and suggestion, in characters) and the texts they
    point into (`fix.put_facts`)."""
    offsets: dict[str, Offsets | None] = {}

    def off(rel: str) -> Offsets | None:
        if rel not in offsets:
            data = tree.get(rel) if rel else None
            try:
                offsets[rel] = Offsets(data) if data is not None else None
            except UnicodeDecodeError:
                offsets[rel] = None
        return offsets[rel]

    diags, spans = [], []
    for i, d in enumerate(errors):
        o = off(d.file)
        s, e = (o.char(d.byte_start), o.char(d.byte_end)) if o else (-1, -1)
        text = o.text[s:e] if o and s >= 0 else ""
        diags.append([i, d.file, d.code, d.severity, d.message, s, e, d.line, d.col, d.byte_start if o else -1, text])
        for seq, sp in enumerate(d.spans):
            so = off(sp["file"])
            if so is None:
                continue
            a, b = so.char(sp["byte_start"]), so.char(sp["byte_end"])
            rep = sp["replacement"]
            spans.append([i, seq, sp["part"], sp["level"], sp["message"], sp["file"], a, b, sp["line"], sp["is_primary"],
                          sp["label"], so.text[a:b], rep is not None, rep or "", sp["applicability"]])
    said = [d.message for d in errors] + [sp["label"] for d in errors for sp in d.spans if sp["label"]]
    for rel in (r["file_path"] for r in flow("fix").query(pt, "fact_files", messages=said)):
        off(rel)  # a private field's struct (E0616) has no span: its file's text comes from here
    files = [[rel, o.text] for rel, o in sorted(offsets.items()) if o is not None and rel]
    graph_files = [rel for rel, _ in files if rel not in tree.changed]
    flow("fix").run(pt, "facts", {"run_id": run_id, "round": rnd, "diags": diags, "spans": spans, "files": files,
                                  "graph_files": graph_files})


def apply_edits(tree: Tree, edits: list) -> dict | None:
    """The round's texts with the edits [(file, start, end, replacement)] (characters) spliced
    in, or None when they overlap or do not fit."""
    by_file: dict[str, list] = {}
    for f, s, e, r in edits:
        by_file.setdefault(f, []).append((s, e, r))
    out = {}
    for f, es in by_file.items():
        data = tree.get(f)
        if data is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        es.sort()
        for (s1, e1, _), (s2, _, _) in zip(es, es[1:]):
            if s2 < e1 or (s2 == s1 == e1):  # overlapping, or two inserts at one point: order unknown
                return None
        for s, e, r in reversed(es):
            if not (0 <= s <= e <= len(text)):
                return None
            text = text[:s] + r + text[e:]
        new = text.encode("utf-8")
        if new != data:
            out[f] = new
    return out or None
