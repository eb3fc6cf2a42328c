#!/usr/bin/env python3
"""Context coverage benchmark: how much of an error's two-hop neighbourhood fits in the pack?

For each fault case of the public corpus (`../shared/corpus/`, as bench/localize.py: a real crate
with one injected fault), this script
  1. builds the pristine crate's graph once (shared with bench/localize.py's cache) and, with
     --summarize, gives its leaf items one-line summaries (`pt summarize`'s flow, incremental, so a
     second run costs nothing), reporting the throughput;
  2. materializes the broken crate, ingests it incrementally, re-summarises the nodes whose code
     the fault changed (as a watcher would), runs `cargo check` and maps the errors to seed nodes;
  3. takes the two-hop neighbourhood of the seeds (`retrieval.two_hop` with the context pack's caps,
     files, crates and features left out) and builds the context pack under a budget (3,000 tokens
     by default) three ways: code for every node cut in rank order (pyramid off), the pyramid with
     signatures only, and the pyramid with far nodes as summaries;
  4. reports, per configuration, the share of the neighbourhood that is in the pack at all
     ("covered") and the share shown by something that says what it does - its code or a summary,
     not just a signature ("described") - and the tokens used.

    .venv/bin/python bench/context.py --summarize --crates 'strsim|hex|heck'   # summaries first
    .venv/bin/python bench/context.py --crates 'strsim|hex|heck' --json

Summaries need the extra `local` and `pt models ensure`. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import localize as LZ  # noqa: E402 - the corpus plumbing (cases, seeds, graphs) is shared

CONFIGS = {  # name -> Jinja vars of retrieval.context
    "code": {"pyramid": False},
    "pyramid": {"pyramid": True, "far_summaries": False},
    "pyramid+summaries": {"pyramid": True, "far_summaries": True},
}
SKIP_KINDS = ("file", "crate", "feature")


def log(msg: str) -> None:
    print(f"[context] {msg}", file=sys.stderr, flush=True)


def summarize_graph(db: Path, ws: Path, summarizer, budget_s: float | None) -> dict:
    from parseltongue.adapters.store import open_store
    from parseltongue.runner.api import Pt
    from parseltongue.runner.summarize import summarize_changed

    store = open_store(str(db))
    try:
        pt = Pt(ws, store)
        pt.migrate()
        return summarize_changed(pt, summarizer, budget_s=budget_s)
    finally:
        store.close()


def neighbourhood(pt, seeds: list[str]) -> list[str]:
    rows = pt.query("retrieval.two_hop", seeds=seeds, max_hops=2, cap_per_hop=40, cap_per_node=12)
    return sorted({r["id"] for r in rows if r["hop"] > 0 and r["kind"] not in SKIP_KINDS} - set(seeds))


def run_case(common, meta: dict, work: Path, summarizer, budget: int, limit: int, pristine: dict) -> dict:
    from parseltongue.adapters.store import open_store
    from parseltongue.runner.api import Pt
    from parseltongue.runner.ingest import ingest
    from parseltongue.runner.summarize import summarize_changed

    crate = meta["crate"]
    base_db = LZ.prepare_crate(common, crate, work, None, pristine)
    ws = work / crate / "ws"
    common.materialize_crate(crate, ws)
    LZ.mutated_text(common, ws, meta)
    db = work / crate / "case-context.db"
    shutil.copyfile(base_db, db)
    res = {"id": meta["id"], "crate": crate}
    store = open_store(str(db))
    try:
        pt = Pt(ws, store)
        pt.migrate()
        ingest(ws, store)
        if summarizer is not None:
            res["resummarized"] = summarize_changed(pt, summarizer)["summarized"]
        _, diags, _ = common.cargo_check_json(ws, common.target_dir_for(f"{crate}@pt-localize"))
        errors = LZ.error_diagnostics(diags)
        seeds = LZ.seeds_from(pt, errors, ws)
        query = LZ.text_query(errors)
        hood = neighbourhood(pt, seeds) if seeds else []
        res.update(seeds=len(seeds), neighbourhood=len(hood))
        res["summarized_share"] = round(len(_summarized(pt, hood, summarizer)) / len(hood), 3) if hood else None
        res["configs"] = {}
        for name, vars_ in CONFIGS.items():
            if not seeds:
                break
            rows = pt.run("retrieval.context", {"seeds": seeds, "query": query, "budget_tokens": budget,
                                                "limit": limit}, vars_).dicts()
            shown = {r["id"]: r["tier"] for r in rows if r["kind"] not in SKIP_KINDS}
            covered = [i for i in hood if i in shown]
            described = [i for i in covered if shown[i] in ("code", "summary")]
            res["configs"][name] = {"covered": round(len(covered) / len(hood), 3) if hood else None,
                                    "described": round(len(described) / len(hood), 3) if hood else None,
                                    "tokens": sum(r["tokens"] for r in rows), "nodes": len(rows),
                                    "summaries": sum(1 for t in shown.values() if t == "summary")}
    finally:
        store.close()
    return res


def _summarized(pt, ids: list[str], summarizer) -> list[str]:
    model = summarizer.model_id if summarizer else "gemma3-270m-q4_k_m"
    have = {r["id"] for r in pt.query("summaries.list", model=model) if r["status"] == "ok"}
    return [i for i in ids if i in have]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=LZ.DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, default=LZ.DEFAULT_WORK, help="scratch dir (shared with localize.py)")
    ap.add_argument("--crates", help="regex on crate directory names")
    ap.add_argument("--cases", help="regex on case ids")
    ap.add_argument("--limit", type=int, default=0, help="cases, spread evenly over the list (0: all)")
    ap.add_argument("--budget", type=int, default=3000, help="context pack budget in tokens")
    ap.add_argument("--pack-limit", type=int, default=400, help="ranked candidates the pack may hold")
    ap.add_argument("--summarize", action="store_true", help="summarise the pristine graphs first (slow)")
    ap.add_argument("--summarize-budget-s", type=float, default=None, help="seconds per crate for --summarize")
    ap.add_argument("--summarize-only", action="store_true", help="stop after --summarize (no cases)")
    ap.add_argument("--no-model", action="store_true", help="do not load the summarizer (no re-summarising)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    common = LZ.corpus_lib(args.corpus)
    cases = [c for c in LZ.load_cases(args.corpus, args.cases, 0) if not args.crates or re.search(args.crates, c["crate"])]
    if args.limit and len(cases) > args.limit:
        step = len(cases) / args.limit
        cases = [cases[int(i * step)] for i in range(args.limit)]
    args.work.mkdir(parents=True, exist_ok=True)
    summarizer = None
    if not args.no_model:
        from parseltongue.runner.summarize import Summarizer

        summarizer = Summarizer.load()
    pristine: dict = {}
    throughput = {}
    if args.summarize and summarizer is not None:
        for crate in sorted({c["crate"] for c in cases}):
            db = LZ.prepare_crate(common, crate, args.work, None, pristine)
            rep = summarize_graph(db, args.work / crate / "ws", summarizer, args.summarize_budget_s)
            throughput[crate] = rep
            log(f"{crate}: {rep['summarized']} summarised in {rep['seconds']}s ({rep['nodes_per_s']} nodes/s), "
                f"{rep['by_status']}, {rep['left']} left")
    if args.summarize_only:
        print(json.dumps({"summarize": throughput}, indent=1))
        return
    results = []
    t0 = time.perf_counter()
    for i, meta in enumerate(cases, 1):
        try:
            r = run_case(common, meta, args.work, summarizer, args.budget, args.pack_limit, pristine)
        except Exception as exc:  # noqa: BLE001 - one broken case must not stop the benchmark
            r = {"id": meta["id"], "crate": meta["crate"], "error": f"{type(exc).__name__}: {exc}"}
        results.append(r)
        log(f"[{i}/{len(cases)}] {meta['id']}: " + (r.get("error") or f"hood={r['neighbourhood']} " + " ".join(
            f"{k}={v['covered']}/{v['described']}" for k, v in r["configs"].items())))
    scored = [r for r in results if r.get("configs") and r.get("neighbourhood")]
    summary = {"cases": len(results), "scored": len(scored), "budget_tokens": args.budget,
               "elapsed_s": round(time.perf_counter() - t0, 1), "summarize": throughput,
               "neighbourhood_median": statistics.median([r["neighbourhood"] for r in scored]) if scored else 0,
               "summarized_share_mean": round(statistics.mean([r["summarized_share"] for r in scored]), 3) if scored else 0,
               "configs": {}}
    for name in CONFIGS:
        cov = [r["configs"][name]["covered"] for r in scored]
        des = [r["configs"][name]["described"] for r in scored]
        tok = [r["configs"][name]["tokens"] for r in scored]
        summary["configs"][name] = {"covered_mean": round(statistics.mean(cov), 3) if cov else None,
                                    "described_mean": round(statistics.mean(des), 3) if des else None,
                                    "all_covered": sum(1 for c in cov if c == 1.0),
                                    "tokens_median": statistics.median(tok) if tok else None}
    if summarizer is not None:
        summarizer.close()
    if args.json:
        print(json.dumps({"summary": summary, "cases": results}, indent=1))
        return
    print(f"two-hop neighbourhood in a {args.budget}-token pack, {summary['scored']}/{summary['cases']} cases "
          f"(median neighbourhood {summary['neighbourhood_median']} nodes, "
          f"{summary['summarized_share_mean']:.0%} of them with a summary)")
    print(f"{'configuration':<20}{'covered':>9}{'described':>11}{'all in':>8}{'tokens p50':>12}")
    for name, s in summary["configs"].items():
        print(f"{name:<20}{s['covered_mean']:>9.3f}{s['described_mean']:>11.3f}{s['all_covered']:>8}{s['tokens_median']:>12}")
    for r in results:
        if "error" in r:
            print(f"  error {r['id']}: {r['error']}")


if __name__ == "__main__":
    main()
