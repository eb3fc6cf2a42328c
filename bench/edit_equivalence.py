#!/usr/bin/env python3
"""One-file updates in part vs whole: the same random edits of real crates, the same graph after.

A re-ingested file may be extracted in part (runner/edit_region.py: only the items an edit
changed). This check makes random edits of real Rust files - a statement on a line of its own or
on an existing line, a body line deleted, a call renamed, a fn added or duplicated between items,
a doc comment added, an item removed, a struct appended - and after each one brings the edit into
two graphs of the same workspace: one by pt's usual path, one with the partial path turned off
(every file extracted whole). Every relation of the two graphs (nodes, positions, code, metadata,
raw facts, edges, full-text rows) must be the same, after the edit and after the file is put back.
It prints how many edits took the partial path and every difference (a wrong row stays, so
later comparisons differ too); exit 1 if there is one.

The crates are Debian `librust-*-dev` packages (bench/setup_corpus.sh installs them), laid out
as one workspace the way bench/ingest.py does; both graphs are in memory.

  .venv/bin/python bench/edit_equivalence.py                    # 200 edits of nom + itertools
  .venv/bin/python bench/edit_equivalence.py -n 500 --seed 3 --packages librust-syn-dev
"""
from __future__ import annotations

import argparse
import random
import re
import sys
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from ingest import crate_dir_of, layout, rust_parser  # noqa: E402  (bench/ingest.py)
from test_ingest import fact_rows  # noqa: E402  (every relation an ingest writes, as sorted rows)

from parseltongue.adapters.store import open_store  # noqa: E402
from parseltongue.runner import edit_region  # noqa: E402
from parseltongue.runner.ingest import ingest  # noqa: E402

KINDS = ["stmt_line", "stmt_same", "del_line", "rename", "new_fn", "dup_fn", "doc", "drop_item", "append"]


def _fn_bodies(node, out: list) -> list:
    if node.type == "function_item" and node.child_by_field_name("body") is not None:
        out.append(node.child_by_field_name("body"))
    for c in node.children:
        _fn_bodies(c, out)
    return out


def random_edit(parser, rng: random.Random, data: bytes, i: int) -> tuple[str, bytes]:
    """One edit of `data` of a random kind (`append` when the kind drawn has nothing to edit)."""
    root = parser.parse(data).root_node
    items = [c for c in root.children if c.type not in ("line_comment", "block_comment")]
    bodies = _fn_bodies(root, [])
    kind = rng.choice(KINDS)
    if kind in ("stmt_line", "stmt_same", "del_line", "rename") and bodies:
        b = rng.choice(bodies)
        if kind.startswith("stmt"):
            at = b.start_byte + 1
            stmt = f"\n    let _pt_{i} = {i};" if kind == "stmt_line" else f" let _pt_{i} = {i};"
            return kind, data[:at] + stmt.encode() + data[at:]
        body = data[b.start_byte:b.end_byte]
        if kind == "del_line":
            lines = body.split(b"\n")
            if len(lines) > 3:
                del lines[rng.randrange(1, len(lines) - 1)]
                return kind, data[:b.start_byte] + b"\n".join(lines) + data[b.end_byte:]
        else:
            calls = list(re.finditer(rb"[a-z_][a-z0-9_]{2,}\(", body))
            if calls:
                at = b.start_byte + rng.choice(calls).end() - 1
                return kind, data[:at] + b"_pt" + data[at:]
    if kind in ("new_fn", "dup_fn", "doc", "drop_item") and items:
        it = rng.choice(items)
        if kind == "new_fn":
            return kind, data[:it.end_byte] + f"\n\nfn _pt_new_{i}() {{ helper_{i}(); }}".encode() + data[it.end_byte:]
        if kind == "doc":
            return kind, data[:it.start_byte] + b"/// pt doc\n" + data[it.start_byte:]
        if kind == "drop_item":
            return kind, data[:it.start_byte] + data[it.end_byte:]
        fns = [x for x in items if x.type == "function_item"]
        if fns:
            f = rng.choice(fns)
            return kind, data[:it.start_byte] + data[f.start_byte:f.end_byte] + b"\n" + data[it.start_byte:]
    return "append", data + f"\npub struct PtNew{i} {{ a: u8 }}\n".encode()


@contextmanager
def whole_files():
    """pt's usual path with the partial one turned off: every file is extracted whole."""
    real = edit_region.region
    edit_region.region = lambda data, stored: None
    try:
        yield
    finally:
        edit_region.region = real


def differences(a, b) -> list[str]:
    fa, fb = fact_rows(a), fact_rows(b)
    out = []
    for rel in fb:
        if fa[rel] != fb[rel]:
            sa, sb = set(fa[rel]), set(fb[rel])
            out.append(f"{rel}: only in part {sorted(sa - sb)[:2]}, only whole {sorted(sb - sa)[:2]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200, help="edits (default 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--packages", default="librust-nom-dev,librust-itertools-dev",
                    help="Debian packages whose crates are edited (comma-separated)")
    ap.add_argument("--ws", type=Path, default=Path("/tmp/pt-bench/edit-equivalence-ws"),
                    help="scratch workspace, laid out anew")
    args = ap.parse_args()

    layout(args.ws, [(p, crate_dir_of(p)) for p in args.packages.split(",")])
    files = sorted(str(p.relative_to(args.ws)) for p in (args.ws / "crates").rglob("*.rs"))
    rng, parser = random.Random(args.seed), rust_parser()
    in_part = []
    real_extract = edit_region.extract

    def counted(rel, data, r):
        facts = real_extract(rel, data, r)
        in_part.append(facts is not None)
        return facts
    edit_region.extract = counted

    usual, whole = open_store("mem"), open_store("mem")
    ingest(args.ws, usual)
    with whole_files():
        ingest(args.ws, whole)
    kinds: dict[tuple[str, bool], int] = {}
    bad = 0
    for i in range(args.n):
        rel = rng.choice(files)
        path = args.ws / rel
        original = path.read_bytes()
        kind, edited = random_edit(parser, rng, original, i)
        for text, what in ((edited, kind), (original, "put back")):
            path.write_bytes(text)
            in_part.clear()
            ingest(args.ws, usual, paths=[rel])
            part = any(in_part)
            with whole_files():
                ingest(args.ws, whole, paths=[rel])
            if what != "put back":
                kinds[(kind, part)] = kinds.get((kind, part), 0) + 1
            diff = differences(usual, whole)
            if diff:
                bad += 1
                print(f"#{i} {what} {rel} ({'in part' if part else 'whole'}): " + "; ".join(diff), flush=True)
        path.write_bytes(original)
    usual.close()
    whole.close()
    taken = sum(n for (_, p), n in kinds.items() if p)
    print(f"{args.n} edits of {len(files)} files ({args.packages}), seed {args.seed}: "
          f"{taken} extracted in part, {args.n - taken} whole; {bad} of {2 * args.n} comparisons differ")
    for (kind, part), n in sorted(kinds.items()):
        print(f"  {kind:10} {'in part' if part else 'whole':8} {n}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
