#!/usr/bin/env python3
"""Fault localization benchmark: does the ranked context find the node that was broken?

For each fault case of the public corpus (`../shared/corpus/`: a real crate from Debian's
`librust-*-dev` with one injected fault), this script
  1. materializes the broken crate offline (corpus lib/common.py) and ingests it - incrementally,
     on top of a per-crate graph of the pristine crate, exactly as `pt ingest` after an edit;
  2. runs `cargo check --message-format=json` and maps every error's spans to nodes
     (`ingest.node_at`): primary spans first, in rustc's order, then the other labelled spans;
  3. asks `retrieval.merge_rank_context` for the ranked context under four configurations -
     graph only, graph + full text, graph + full text over the one-line summaries too (--summaries:
     the pristine graph's summaries from bench/context.py --summarize, the fault's changed nodes
     summarised again), graph + full text + vectors - with the identifiers quoted in the
     diagnostics as the text query and the embedded diagnostic as the vector query;
  4. reports recall@1/5/10/20 of the *mutated node*: the innermost node whose span contains the
     mutation's span in the broken file (for a pure deletion, the node around the deletion point).

Nothing here looks at the case's error code, mutation kind or crate: the only inputs to retrieval
are the diagnostics and the graph. The case's answer (mutated file and span) is only used to score.

    .venv/bin/python bench/localize.py                      # 40 cases spread over all crates
    .venv/bin/python bench/localize.py --limit 150 --json   # every case, one JSON object on stdout
    .venv/bin/python bench/localize.py --no-vectors         # skip the encoder (graph, graph+text)
    .venv/bin/python bench/localize.py --cases 'P00[1-9]'   # regex on case ids
    .venv/bin/python bench/localize.py --summaries --no-vectors --crates 'hex|glob'   # with summaries

Vectors need `pip install 'parseltongue[local]'` and `pt models ensure`; without them the
graph+text+vectors column is reported as not run (never silently equal to graph+text).
Progress goes to stderr; every figure printed is measured in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CORPUS = Path(os.environ.get("PT_CORPUS", REPO.parent / "shared" / "corpus"))
DEFAULT_WORK = Path("/tmp/pt-localize")
KS = (1, 5, 10, 20)
CONFIGS = {  # name -> (Jinja vars, extra params) of retrieval.merge_rank_context
    "graph": ({"use_text": False, "use_vectors": False}, {}),
    "graph+text": ({"use_text": True, "use_vectors": False}, {}),
    "graph+text+summaries": ({"use_text": True, "use_vectors": False, "use_summaries": True}, {}),
    "graph+text+vectors": ({"use_text": True, "use_vectors": True}, {}),
}
_TICKED = re.compile(r"`([^`]+)`")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words of rustc's own phrasing inside backticks that name no item (`&`, `mut`, `Self`...).
_NOISE = {"self", "Self", "mut", "fn", "pub", "impl", "dyn", "as", "for", "where", "let", "ref", "crate",
          "super", "use", "str", "String", "Option", "Result", "Vec", "Box", "u8", "u16", "u32", "u64",
          "usize", "i8", "i16", "i32", "i64", "isize", "f32", "f64", "bool", "char", "T", "E", "Some", "None",
          "Ok", "Err", "_", "a", "static"}


def log(msg: str) -> None:
    print(f"[localize] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ corpus

def load_cases(corpus: Path, pattern: str | None, limit: int) -> list[dict]:
    cases = []
    for d in sorted((corpus / "cases").iterdir()):
        f = d / "case.json"
        if f.is_file():
            meta = json.loads(f.read_text())
            if not pattern or re.search(pattern, meta["id"]):
                cases.append(meta)
    if limit and len(cases) > limit:
        # An even spread over the (crate-ordered) list, so every crate and kind shows up.
        step = len(cases) / limit
        cases = [cases[int(i * step)] for i in range(limit)]
    return cases


def corpus_lib(corpus: Path):
    sys.path.insert(0, str(corpus / "lib"))
    import common  # noqa: E402  (the corpus' own materialization and cargo helpers)

    return common


def mutated_text(common, ws: Path, meta: dict) -> tuple[str, int, int]:
    """Apply the case's mutation in `ws`; return (text, byte_start, byte_end) of the mutation in the broken file."""
    f = ws / meta["mutated_file"]
    orig = f.read_text()
    if common.sha256_bytes(orig.encode()) != meta["original_sha"]:
        raise RuntimeError(f"{meta['id']}: {meta['mutated_file']} differs from the recorded original (run corpus setup.sh)")
    m = meta["mutation"]
    text = orig[:m["start"]] + m["new"] + orig[m["end"]:]
    if common.sha256_bytes(text.encode()) != meta["mutated_sha"]:
        raise RuntimeError(f"{meta['id']}: mutation does not reproduce the recorded broken file")
    f.write_text(text)
    b0 = len(text[:m["start"]].encode())
    return text, b0, b0 + len(m["new"].encode())


# ------------------------------------------------------------------ diagnostics -> seeds, query

def error_diagnostics(diags: list[dict]) -> list[dict]:
    out = []
    for d in diags:
        msg = d.get("message", "")
        if d.get("level") == "error" and not msg.startswith(("aborting due to", "could not compile")):
            out.append(d)
    return out


def _local_spans(diag: dict, ws: Path):
    """(span, is_primary) of a diagnostic and its children, inside the workspace only."""
    for sp in diag.get("spans") or []:
        yield sp, bool(sp.get("is_primary"))
    for ch in diag.get("children") or []:
        for sp in ch.get("spans") or []:
            yield sp, False


def seeds_from(pt, errors: list[dict], ws: Path) -> list[str]:
    """Primary spans of every error first (rustc's order), then every other labelled span."""
    primary, secondary = [], []
    for d in errors:
        for sp, is_primary in _local_spans(d, ws):
            name = sp.get("file_name") or ""
            if os.path.isabs(name) or not (ws / name).is_file():
                continue  # std, dependencies: not in the graph
            rows = pt.query("ingest.node_at", file=name, byte=int(sp["byte_start"]))
            if rows:
                (primary if is_primary else secondary).append(rows[0]["id"])
    out: list[str] = []
    for nid in primary + secondary:
        if nid not in out:
            out.append(nid)
    return out


def text_query(errors: list[dict]) -> str:
    """Identifiers rustc quotes in backticks (messages, labels, notes), minus its own vocabulary."""
    words: list[str] = []

    def take(s: str | None) -> None:
        for quoted in _TICKED.findall(s or ""):
            for w in _IDENT.findall(quoted):
                if w not in _NOISE and len(w) > 1 and w not in words:
                    words.append(w)

    for d in errors:
        take(d.get("message"))
        for sp in d.get("spans") or []:
            take(sp.get("label"))
        for ch in d.get("children") or []:
            take(ch.get("message"))
            for sp in ch.get("spans") or []:
                take(sp.get("label"))
    return " ".join(words)


def vector_query(errors: list[dict]) -> str:
    """What a user would paste: the messages and the source lines they point at."""
    parts = []
    for d in errors[:4]:
        parts.append(d.get("message", ""))
        for sp in d.get("spans") or []:
            if sp.get("is_primary"):
                parts.extend(t.get("text", "").strip() for t in sp.get("text") or [])
                if sp.get("label"):
                    parts.append(sp["label"])
    return "\n".join(p for p in parts if p)


def mutated_node(pt, file: str, b0: int, b1: int) -> str | None:
    """Innermost node containing [b0, b1) (for a deletion, the position b0)."""
    best = None
    for n in pt.query("retrieval.list_nodes_by_file", file=file):
        s, e = n["span_start"], n["span_end"]
        if s <= b0 and (b1 <= e if b1 > b0 else b0 < e):
            if best is None or e - s < best[0]:
                best = (e - s, n["id"])
    return best[1] if best else None


# ------------------------------------------------------------------ the run

def prepare_crate(common, crate: str, work: Path, encoder, pristine_cache: dict) -> Path:
    """A graph of the pristine crate (text index, vectors), built once per crate and reused."""
    from parseltongue.adapters.store import open_store
    from parseltongue.runner.api import Pt
    from parseltongue.runner.ingest import ingest

    base = work / crate
    db = base / ("base-vec.db" if encoder else "base.db")
    if db.exists():
        return db
    ws = base / "ws"
    common.materialize_crate(crate, ws)
    t = time.perf_counter()
    tmp = db.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    store = open_store(str(tmp))
    try:
        rep = ingest(ws, store)  # also fills the full-text index (retrieval.index_text)
        pt = Pt(ws, store)
        n_vec = 0
        if encoder:
            from parseltongue.runner.embed import embed_changed

            n_vec = embed_changed(pt, encoder)["embedded"]
    finally:
        store.close()
    tmp.rename(db)
    pristine_cache[crate] = {"nodes": rep.nodes, "edges": rep.edges, "vectors": n_vec,
                             "build_s": round(time.perf_counter() - t, 1)}
    log(f"{crate}: {rep.nodes} nodes, {rep.edges} edges, {n_vec} vectors in {time.perf_counter() - t:.1f}s")
    return db


def crate_nodes(common, crate: str, work: Path, pristine: dict) -> int:
    """Node count of the pristine crate's graph (built without vectors; cheap)."""
    from parseltongue.adapters.store import open_store

    store = open_store(str(prepare_crate(common, crate, work, None, pristine)))
    try:
        return store.run("?[count(id)] := *isg_nodes{id}").rows[0][0]
    finally:
        store.close()


def run_case(common, meta: dict, work: Path, encoder, configs: list[str], limit: int, pristine: dict,
             max_nodes: int = 0, summarizer=None) -> dict:
    from parseltongue.adapters.store import open_store
    from parseltongue.runner.api import Pt
    from parseltongue.runner.ingest import ingest

    crate = meta["crate"]
    if encoder and max_nodes and crate_nodes(common, crate, work, pristine) > max_nodes:
        return {"id": meta["id"], "crate": crate, "skipped": f"crate graph above --max-crate-nodes {max_nodes}"}
    base_db = prepare_crate(common, crate, work, encoder, pristine)
    ws = work / crate / "ws"
    common.materialize_crate(crate, ws)  # fresh pristine copy, then the fault
    _, b0, b1 = mutated_text(common, ws, meta)
    db = work / crate / "case.db"
    shutil.copyfile(base_db, db)
    res = {"id": meta["id"], "crate": crate}
    store = open_store(str(db))
    try:
        Pt(ws, store).migrate()  # a cached graph from an older pt: bring its schema up to date
        t = time.perf_counter()
        rep = ingest(ws, store)  # incremental: only the broken file is re-parsed and re-indexed
        pt = Pt(ws, store)
        if encoder:
            from parseltongue.runner.embed import embed_changed

            res["vectors_updated"] = embed_changed(pt, encoder)["embedded"]
        if summarizer is not None:
            from parseltongue.runner.summarize import summarize_changed

            res["summaries_updated"] = summarize_changed(pt, summarizer)["summarized"]
        res["update_s"] = round(time.perf_counter() - t, 3)
        res["files_parsed"] = rep.files_parsed

        rc, diags, _ = common.cargo_check_json(ws, common.target_dir_for(f"{crate}@pt-localize"))
        errors = error_diagnostics(diags)
        res["errors"] = len(errors)
        seeds = seeds_from(pt, errors, ws)
        query = text_query(errors)
        res.update(seeds=len(seeds), query=query)
        qvec = encoder.encode([vector_query(errors)])[0] if encoder and errors else []
        target = mutated_node(pt, meta["mutated_file"], b0, b1)
        res["target"] = target
        res["target_is_seed"] = target in seeds
        res["ranks"] = {}
        for name in configs:
            params = {"seeds": seeds, "query": query, "qvec": qvec, "limit": limit}
            if encoder and "vectors" in name:
                params["model"] = encoder.model_id
            t = time.perf_counter()
            vars_, extra = CONFIGS[name]
            rows = pt.run("retrieval.merge_rank_context", {**params, **extra}, vars_).dicts()
            ids = [r["id"] for r in rows]
            res["ranks"][name] = ids.index(target) + 1 if target in ids else None
            res.setdefault("rank_ms", {})[name] = round((time.perf_counter() - t) * 1000, 1)
    finally:
        store.close()
    return res


def summarize(results: list[dict], configs: list[str]) -> dict:
    ok = [r for r in results if "ranks" in r and r.get("target")]
    out = {"cases": len(results), "scored": len(ok), "skipped": sum(1 for r in results if "skipped" in r),
           "no_errors": sum(1 for r in ok if r["errors"] == 0),
           "target_is_seed": sum(1 for r in ok if r["target_is_seed"]), "recall": {}, "mrr": {}}
    for name in configs:
        ranks = [r["ranks"].get(name) for r in ok]
        out["recall"][name] = {f"@{k}": round(sum(1 for x in ranks if x and x <= k) / max(1, len(ranks)), 3) for k in KS}
        out["mrr"][name] = round(statistics.mean([1 / x if x else 0.0 for x in ranks]) if ranks else 0.0, 3)
    ms = [v for r in ok for v in (r.get("rank_ms") or {}).values()]
    if ms:
        out["rank_ms_p50"] = round(statistics.median(ms), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch dir (workspaces, graphs)")
    ap.add_argument("--cases", help="regex on case ids")
    ap.add_argument("--limit", type=int, default=40, help="cases, spread evenly over the list (0: all)")
    ap.add_argument("--context", type=int, default=50, help="ranked nodes asked for")
    ap.add_argument("--no-vectors", action="store_true", help="do not load an encoder")
    ap.add_argument("--summaries", action="store_true",
                    help="also rank with full text over summaries (load the summarizer for the changed nodes)")
    ap.add_argument("--crates", help="regex on crate directory names")
    ap.add_argument("--max-crate-nodes", type=int, default=0,
                    help="with vectors: skip cases whose crate graph has more nodes (embedding is slow)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()

    common = corpus_lib(args.corpus)
    encoder, why = None, ""
    if not args.no_vectors:
        try:
            from parseltongue.adapters.embeddings import load_default_encoder

            encoder = load_default_encoder()
        except Exception as exc:  # noqa: BLE001 - reported, and the vector column is skipped
            why = str(exc)
            log(f"vectors not run: {why}")
    summarizer = None
    if args.summaries:
        from parseltongue.runner.summarize import Summarizer

        summarizer = Summarizer.load()
    configs = [c for c in CONFIGS if (encoder or "vectors" not in c) and (summarizer or "summaries" not in c)]
    cases = load_cases(args.corpus, args.cases, 0 if args.crates else args.limit)
    if args.crates:
        cases = [c for c in cases if re.search(args.crates, c["crate"])]
    args.work.mkdir(parents=True, exist_ok=True)
    log(f"{len(cases)} cases, configurations: {', '.join(configs)}")
    results, pristine = [], {}
    t0 = time.perf_counter()
    for i, meta in enumerate(cases, 1):
        try:
            r = run_case(common, meta, args.work, encoder, configs, args.context, pristine, args.max_crate_nodes,
                         summarizer)
        except Exception as exc:  # noqa: BLE001 - one broken case must not stop the benchmark
            r = {"id": meta["id"], "crate": meta["crate"], "error": f"{type(exc).__name__}: {exc}"}
        results.append(r)
        log(f"[{i}/{len(cases)}] {meta['id']}: " + (r.get("error") or r.get("skipped") or
            " ".join(f"{k}={v}" for k, v in r["ranks"].items()) + f" seeds={r['seeds']} seed_hit={r['target_is_seed']}"))
    summary = summarize(results, configs)
    summary["elapsed_s"] = round(time.perf_counter() - t0, 1)
    summary["vectors"] = {"model": encoder.model_id, "dim": encoder.dim} if encoder else {"skipped": why or "--no-vectors"}
    summary["pristine_graphs"] = pristine
    if args.json:
        print(json.dumps({"summary": summary, "cases": results}, indent=1))
        return
    print(f"fault localization on {summary['scored']}/{summary['cases']} corpus cases "
          f"(mutated node among the ranked context; {summary['target_is_seed']} are diagnostic seeds)")
    print(f"{'configuration':<22}" + "".join(f"{'R@' + str(k):>8}" for k in KS) + f"{'MRR':>8}")
    for name in configs:
        rec = summary["recall"][name]
        print(f"{name:<22}" + "".join(f"{rec['@' + str(k)]:>8.3f}" for k in KS) + f"{summary['mrr'][name]:>8.3f}")
    if not encoder:
        print(f"graph+text+vectors: not run ({summary['vectors']['skipped']})")
    errs = [r for r in results if "error" in r]
    for r in errs:
        print(f"  error {r['id']}: {r['error']}")
    print(f"elapsed {summary['elapsed_s']}s; ranking p50 {summary.get('rank_ms_p50')} ms per query")


if __name__ == "__main__":
    main()
