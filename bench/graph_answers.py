#!/usr/bin/env python3
"""The graph's answers, dumped so two versions of pt can be compared row for row.

A change to how the graph is stored (schema, ingest) must not change what it answers. Run this
with each version's venv on the graph that version ingested (each reads its own schema), then
compare the two dumps:

    A/.venv/bin/python bench/graph_answers.py --db A.db --out a.json
    B/.venv/bin/python bench/graph_answers.py --db B.db --out b.json
    python3 bench/graph_answers.py --compare a.json b.json

Dumped: every edge (src, dst, kind, weight, provenance, evidence as file:line), every node's id and position,
`retrieval.two_hop` for N random `fn` seeds in each direction, and `retrieval.context` for the
first N/10 of them (default budget). Seeds are drawn from the sorted fn ids with a fixed seed,
so both runs ask the same questions.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path


def dump(db: Path, n: int, seed: int) -> dict:
    from parseltongue.adapters.store import open_store
    from parseltongue.runner.api import Pt
    from parseltongue.runner.context import context_pack

    store = open_store(str(db))
    pt = Pt(db.parent.parent if db.parent.name == ".parseltongue" else db.parent, store)
    try:
        # positions: isg_nodes' own columns before schema rev 13, node_pos from it on (so a graph
        # of either revision dumps the same rows)
        pos = "*node_pos{id: %s, %s}" if "node_pos" in store.relations() else "*isg_nodes{id: %s, %s}"
        # evidence as file:line (rev 11 stores a heuristic call edge's line relative to its caller: `+N`)
        edges = sorted(map(tuple, store.run(
            "?[s, d, k, w, p, e] := *isg_edges{src_id: s, dst_id: d, kind: k, weight: w, provenance: p, evidence: e}, "
            "!starts_with(e, '+')\n"
            "?[s, d, k, w, p, e] := *isg_edges{src_id: s, dst_id: d, kind: k, weight: w, provenance: p, evidence: e0}, "
            "starts_with(e0, '+'), *isg_nodes{id: s, file_path: f}, " + pos % ("s", "line_start: l") + ", "
            "e = concat(f, ':', to_string(l + to_int(slice_string(e0, 1, length(e0)))))",
            immutable=True).rows))
        nodes = sorted(map(tuple, store.run(
            "?[id, f, k, ss, se, ls, le, m] := *isg_nodes{id, file_path: f, kind: k, module_path: m}, "
            + pos % ("id", "span_start: ss, span_end: se, line_start: ls, line_end: le"), immutable=True).rows))
        ids = sorted(i for i, f, k, *_ in nodes if k == "fn")
        seeds = random.Random(seed).sample(ids, min(n, len(ids)))
        hops = {d: {s: sorted(map(json.dumps, pt.run("retrieval.two_hop", {"seeds": [s], "direction": d}).rows))
                    for s in seeds} for d in ("both", "fwd", "rev")}
        ctx = {s: [json.dumps(r, sort_keys=True) for r in context_pack(pt, [s])] for s in seeds[:max(1, n // 10)]}
        return {"db": str(db), "edges": edges, "nodes": nodes, "two_hop": hops, "context": ctx}
    finally:
        store.close()


def _digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def compare(a: dict, b: dict) -> list[str]:
    out = []
    for key in ("edges", "nodes"):
        ra, rb = set(map(tuple, a[key])), set(map(tuple, b[key]))
        out.append(f"{key}: {len(ra):,} / {len(rb):,} rows, {len(ra - rb)} only in the first, {len(rb - ra)} only in "
                   f"the second ({'identical' if ra == rb else 'DIFFERENT'})")
        for r in sorted(ra - rb)[:5]:
            out.append(f"  - {r}")
        for r in sorted(rb - ra)[:5]:
            out.append(f"  + {r}")
    for d in a["two_hop"]:
        diff = [s for s in a["two_hop"][d] if a["two_hop"][d][s] != b["two_hop"][d].get(s)]
        rows = sum(len(v) for v in a["two_hop"][d].values())
        out.append(f"two_hop {d}: {len(a['two_hop'][d])} seeds, {rows:,} rows, {len(diff)} seeds differ"
                   + (f" (first: {diff[0]})" if diff else ""))
    diff = [s for s in a["context"] if a["context"][s] != b["context"].get(s)]
    out.append(f"context: {len(a['context'])} seeds, {len(diff)} differ" + (f" (first: {diff[0]})" if diff else ""))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, help="graph to dump")
    ap.add_argument("--out", type=Path, help="where the dump goes (JSON)")
    ap.add_argument("-n", type=int, default=300, help="two_hop seeds (context: n/10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two dumps")
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        print("\n".join(compare(a, b)))
        return 0
    if not args.db or not args.out:
        ap.error("--db and --out, or --compare A B")
    args.out.write_text(json.dumps(dump(args.db.resolve(), args.n, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
