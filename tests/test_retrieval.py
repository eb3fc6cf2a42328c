"""Retrieval programs (rules/retrieval/) beyond their golden cases: properties that need a bigger or
changing graph - hub capping, the token budget, the text index following edits, the vector flow
with a stand-in encoder - and the `pt context` / `pt query` front ends."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from parseltongue.adapters.embeddings import HashingEncoder, node_text
from parseltongue.runner.embed import embed_changed
from parseltongue.adapters.store import open_store
from parseltongue.runner.api import Pt
from parseltongue.runner.cli_context import context as context_cmd
from parseltongue.runner.context import context_pack, render_text, seed_ids
from parseltongue.runner.ingest import ingest
from parseltongue.runner.cli_models import models as models_cmd
from parseltongue.runner.programs import Registry

from conftest import FIXTURES, REPO


@pytest.fixture
def geo_ws(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    (ws / ".parseltongue").mkdir()
    return ws


@pytest.fixture(params=["mem", "sqlite"])
def geo(request, geo_ws, tmp_path):
    """The ingested fixture with its text index, on both engines."""
    store = open_store("mem" if request.param == "mem" else str(tmp_path / "graph.db"))
    ingest(geo_ws, store)
    pt = Pt(geo_ws, store)  # ingest filled search_text (retrieval.index_text per batch)
    yield pt
    pt.close()


def star(pt: Pt, callers: int) -> None:
    """`leaf` calls `hub`; `callers` functions call `hub`, each also calling its own helper."""
    nodes = [["fn:a.rs::leaf", "fn", "leaf"], ["fn:a.rs::hub", "fn", "hub"]]
    edges = [["fn:a.rs::leaf", "fn:a.rs::hub", "CALLS"]]
    for i in range(callers):
        nodes += [[f"fn:b.rs::c{i}", "fn", f"c{i}"], [f"fn:b.rs::h{i}", "fn", f"h{i}"]]
        edges += [[f"fn:b.rs::c{i}", "fn:a.rs::hub", "CALLS"], [f"fn:b.rs::c{i}", f"fn:b.rs::h{i}", "CALLS"]]
    pt.store.run("?[id, kind, name] <- $rows :put isg_nodes {id => kind, name}", {"rows": nodes})
    pt.store.run("?[id] <- $rows :put node_pos {id}", {"rows": [n[:1] for n in nodes]})  # every node has a position row
    pt.store.run("?[src_id, dst_id, kind] <- $rows :put isg_edges {src_id, dst_id, kind}", {"rows": edges})


# ------------------------------------------------------------------ two_hop

@pytest.mark.parametrize("cap_per_hop,cap_per_node", [(30, 10), (5, 3), (100, 100)])
def test_two_hop_hub_is_capped_per_node_and_per_hop(cap_per_hop, cap_per_node):
    with Pt(Path("."), open_store("mem")) as pt:
        pt.migrate()
        star(pt, 2000)
        rows = pt.query("retrieval.two_hop", seeds=["fn:a.rs::leaf"], cap_per_hop=cap_per_hop,
                        cap_per_node=cap_per_node, direction="both")
        by_hop = {}
        for r in rows:
            by_hop.setdefault(r["hop"], []).append(r["id"])
        assert by_hop[0] == ["fn:a.rs::leaf"] and by_hop[1] == ["fn:a.rs::hub"]
        assert len(by_hop[2]) == min(cap_per_hop, cap_per_node)  # 2,000 callers, never all of them
        assert len(rows) == len({r["id"] for r in rows})  # one row per node, at its nearest hop


def test_two_hop_is_stable_and_ordered(geo):
    a = geo.query("retrieval.two_hop", seeds=["fn:geo/src/lib.rs::total"])
    b = geo.query("retrieval.two_hop", seeds=["fn:geo/src/lib.rs::total"])
    assert a == b
    keys = [(r["hop"], -r["strength"], r["id"]) for r in a]
    assert keys == sorted(keys)


def test_two_hop_directions_partition_the_neighbours(geo):
    seed = ["fn:app/src/main.rs::main"]
    kinds = {"edge_kinds": ["CALLS"]}
    fwd = {r["id"] for r in geo.run("retrieval.two_hop", {"seeds": seed, "max_hops": 1, "direction": "fwd"}, kinds).dicts()}
    rev = {r["id"] for r in geo.run("retrieval.two_hop", {"seeds": seed, "max_hops": 1, "direction": "rev"}, kinds).dicts()}
    both = {r["id"] for r in geo.run("retrieval.two_hop", {"seeds": seed, "max_hops": 1, "direction": "both"}, kinds).dicts()}
    assert "fn:app/src/main.rs::report" in fwd and "fn:app/src/main.rs::report" not in rev
    assert both == fwd | rev


# ------------------------------------------------------------------ text index

def test_text_index_follows_an_edit(geo, geo_ws):
    assert not geo.query("retrieval.search", query="perimeter")
    units = geo_ws / "geo" / "src" / "units.rs"
    units.write_text(units.read_text().replace("pub fn scale(", "/// Outline length.\npub fn perimeter(") + "\n")
    ingest(geo_ws, geo.store, paths=[str(units)])
    hits = geo.query("retrieval.search", query="perimeter")
    assert [h["id"] for h in hits][:1] == ["fn:geo/src/units.rs::perimeter"]
    assert geo.query("retrieval.search", query="outline")[0]["id"] == "fn:geo/src/units.rs::perimeter"
    assert all(h["id"] != "fn:geo/src/units.rs::scale" for h in geo.query("retrieval.search", query="scale"))


def test_pt_ingest_builds_a_deferred_text_index_in_the_background(geo_ws, monkeypatch):
    """A large `pt ingest` defers the full-text index and starts its build in a child process;
    the first search waits for that build instead of building the index itself, and finds what
    an ingest that indexed as it went finds."""
    from click.testing import CliRunner

    from parseltongue.runner import ingest as ingest_mod
    from parseltongue.runner import text_index
    from parseltongue.runner.cli import cli

    monkeypatch.setattr(ingest_mod, "TEXT_DEFER_MIN_FILES", 1)  # the fixture counts as large
    r = CliRunner().invoke(cli, ["-C", str(geo_ws), "ingest", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["text_index"] == "background"
    built_here = []
    monkeypatch.setattr(text_index, "_write", lambda pt: built_here.append(pt))
    pt = Pt.open(geo_ws)
    try:
        hits = [h["id"] for h in pt.query("retrieval.search", query="total")]  # waits for the child
        assert not built_here and not text_index.pending(pt)
        want = open_store("mem")
        try:
            ingest(geo_ws, want)  # small: indexed batch by batch
            assert hits and hits == [h["id"] for h in Pt(geo_ws, want).query("retrieval.search", query="total")]
        finally:
            want.close()
    finally:
        pt.close()


def test_text_rows_are_keyed_by_a_short_integer(geo):
    """Each FTS posting repeats its row's key (rev 14): rows are keyed by the 63-bit hash of the
    node id, one row per node that has text, so the postings carry an integer, not two paths."""
    from parseltongue.runner.text_index import nids

    key = [c for c in geo.store.run("::columns search_text").dicts() if c["is_key"]]
    assert [(c["column"], c["type"]) for c in key] == [("nid", "Int")]
    rows = geo.store.run("?[nid, id] := *search_text{nid, id}").rows
    ids = {r[1] for r in rows}
    assert len(ids) == len(rows) > 10
    assert sorted(map(tuple, rows)) == sorted(map(tuple, ((n, i) for i, n in nids(ids))))


def test_pt_query_during_a_background_build_answers_from_what_is_built(geo_ws, monkeypatch):
    """While another process builds the deferred full-text index, `pt query search` does not wait:
    it answers from the files indexed so far and says how far the build is (stderr and JSON);
    `--wait-index` waits for the build, then answers from all of it."""
    import fcntl
    import os
    import threading

    from click.testing import CliRunner

    from parseltongue.runner import ingest as ingest_mod
    from parseltongue.runner import text_index
    from parseltongue.runner.cli import cli

    monkeypatch.setattr(ingest_mod, "TEXT_DEFER_MIN_FILES", 1)  # deferred; in-process: no child started
    db = str(geo_ws / ".parseltongue" / "graph.db")
    pt = Pt(geo_ws, open_store(db))
    try:
        ingest(geo_ws, pt.store)
        assert text_index.pending(pt)
        # the builder's first batch: one file of the workspace, and its progress
        units = "geo/src/units.rs"
        ids = [r["id"] for r in pt.query("ingest.text_ids", files=[units])]
        pt.run("retrieval.index_text", {"files": [units], "nids": text_index.nids(ids)})
        total = len({r["file_path"] for r in pt.query("ingest.text_ids")}) + 1
        pt.run("ingest.text_index_progress", {"done": 1, "total": total})
    finally:
        pt.close()
    fd = os.open(db + ".text-index.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a build in progress holds this lock
    try:
        run = lambda *a: CliRunner().invoke(cli, ["-C", str(geo_ws), "query", "search", "--json", *a])
        r = run("-p", "query=scale total")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["text_index"] == {"complete": False, "files_done": 1, "files_total": total}
        assert "being built in the background (1 of" in r.stderr
        assert {h["file_path"] for h in doc["rows"]} == {units}  # `total` (geo/src/lib.rs) is not indexed yet
        threading.Timer(0.5, lambda: os.close(fd)).start()  # the build ends (here: lets go of its lock)
        r = run("-p", "query=scale total", "--wait-index")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert "text_index" not in doc and "fn:geo/src/lib.rs::total" in {h["id"] for h in doc["rows"]}
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def test_search_accepts_any_text(geo):
    for q in ['"', "(a OR", "NEAR/2 x", "!!", "`Vec<u8>`::len()", "ünïcödé 名前"]:
        geo.query("retrieval.search", query=q)  # never an FTS syntax error


def test_migration_indexes_an_existing_graph(geo, tmp_path):
    """A database ingested before rev 4 gets search_text filled by the migration itself."""
    old = Pt(geo.workspace, open_store(str(tmp_path / "old.db")))
    for prog in old.schema_programs():
        if prog.schema_rev < 4:
            old.run(prog.id)
    for rel in ("isg_nodes", "node_meta", "code_blobs", "file_state"):  # what an older ingest left
        pos = ", span_start, span_end, line_start, line_end" if rel == "isg_nodes" else ""  # isg_nodes' before rev 13
        res = geo.store.run(f"?[{', '.join(cols(geo, rel))}{pos}] := *{rel}{{{', '.join(cols(geo, rel))}}}"
                            + (f", *node_pos{{id{pos}}}" if pos else ""))
        old.store.run(f"?[{', '.join(res.headers)}] <- $rows :put {rel} {{{', '.join(res.headers)}}}", {"rows": res.rows})
    assert "schema.rev_004" in old.migrate()
    assert old.query("retrieval.search", query="total") == geo.query("retrieval.search", query="total")
    old.close()


def cols(pt: Pt, rel: str) -> list[str]:
    return [c["column"] for c in pt.store.run(f"::columns {rel}").dicts()]


# ------------------------------------------------------------------ ranking and the pack

def test_merge_rank_without_text_or_vectors_still_ranks(geo):
    rows = geo.query("retrieval.merge_rank_context", seeds=["fn:geo/src/units.rs::scale"])
    assert rows[0]["id"] == "fn:geo/src/units.rs::scale" and rows[0]["is_seed"]
    assert [r["rank"] for r in rows] == list(range(len(rows)))
    assert all(r["vector"] == 0.0 for r in rows)
    assert all(r["kind"] not in ("crate", "feature") for r in rows)


@pytest.mark.parametrize("budget", [1, 10, 60, 150, 400, 100000])
def test_context_respects_the_budget_seeds_first(geo, budget):
    seeds = ["fn:app/src/main.rs::main", "fn:geo/src/units.rs::scale"]
    rows = context_pack(geo, seeds, budget, query="scale total")
    assert sum(r["tokens"] for r in rows) <= budget
    assert [r["id"] for r in rows[:2]] == seeds[:len(rows[:2])]
    assert [r["rank"] for r in rows] == list(range(len(rows)))
    assert sum(1 for r in rows if r["truncated"]) <= 1 and (not rows[-1:] or rows == rows[:-1] + rows[-1:])
    if any(r["truncated"] for r in rows):
        assert rows[-1]["truncated"]  # only the last one is cut
    assert context_pack(geo, seeds, budget, query="scale total") == rows  # stable


def test_context_code_is_the_nodes_code(geo):
    rows = context_pack(geo, ["fn:geo/src/units.rs::scale"], 100000)
    code = {r["id"]: r["code"] for r in rows}
    src = (FIXTURES / "ingest_ws" / "geo" / "src" / "units.rs").read_text()
    assert code["fn:geo/src/units.rs::scale"] in src
    assert all(c.endswith("{ ... }") for i, c in code.items() if i.startswith("impl:"))
    text = render_text(rows)
    assert text.startswith("=== CONTEXT START ===") and text.endswith("=== CONTEXT END ===")


def test_seed_ids_from_positions(geo):
    assert seed_ids(geo, ["geo/src/units.rs:5", "geo/src/units.rs:5", "crate:geo"]) == \
        ["fn:geo/src/units.rs::scale", "crate:geo"]


# ------------------------------------------------------------------ vectors (stand-in encoder)

def test_embedding_flow_is_incremental_and_feeds_ann(geo, geo_ws):
    enc = HashingEncoder()
    first = embed_changed(geo, enc, batch=4)
    assert first["embedded"] > 5 and first["batches"] >= 2
    assert embed_changed(geo, enc)["embedded"] == 0  # nothing changed, nothing embedded
    q = enc.encode([node_text({"kind": "fn", "name": "scale", "signature": "pub fn scale(x: f64) -> f64"})])[0]
    hits = geo.query("retrieval.ann_top_k", qvec=q, model=enc.model_id, k_vec=3)
    assert hits[0]["id"] == "fn:geo/src/units.rs::scale"
    units = geo_ws / "geo" / "src" / "units.rs"
    units.write_text(units.read_text().replace("x * one()", "x * one() * 2.0"))
    ingest(geo_ws, geo.store, paths=[str(units)])
    assert embed_changed(geo, enc)["embedded"] == 1  # only the edited fn
    (geo_ws / "geo" / "src" / "units.rs").unlink()
    ingest(geo_ws, geo.store)
    embed_changed(geo, enc)  # prunes vectors of removed nodes
    left = geo.store.run("?[id] := *emb_vec_640{id}").rows
    assert ["fn:geo/src/units.rs::scale"] not in left
    params = {"seeds": ["fn:geo/src/lib.rs::total"], "qvec": q, "model": enc.model_id}
    ranked = geo.run("retrieval.merge_rank_context", params, {"use_vectors": True}).dicts()
    assert any(r["vector"] > 0 for r in ranked)
    assert all(r["vector"] == 0 for r in geo.query("retrieval.merge_rank_context", **params))  # off by default


def test_ann_without_vectors_or_encoder_is_empty(geo):
    assert geo.query("retrieval.ann_top_k", qvec=[]) == []
    assert geo.query("retrieval.ann_top_k", qvec=[0.5] * 640) == []


# ------------------------------------------------------------------ front ends

@pytest.fixture
def cli_with_retrieval_commands():
    """`pt context` / `pt models` as the lead will register them in runner/cli.py."""
    from parseltongue.runner.cli import cli

    added = [c for c in (context_cmd, models_cmd) if c.name not in cli.commands]
    for c in added:
        cli.add_command(c)
    yield
    for c in added:
        cli.commands.pop(c.name, None)


def test_pt_query_two_hop_json_shape(pt, geo_ws):
    assert pt("-C", str(geo_ws), "ingest").code == 0
    r = pt("-C", str(geo_ws), "query", "two_hop", "-p", "seeds=fn:geo/src/lib.rs::total", "-v", "edge_kinds=CALLS,USES",
           "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["program"] == "retrieval.two_hop"
    assert set(doc["rows"][0]) == {"id", "hop", "via", "edge_kind", "direction", "provenance", "strength", "kind",
                                   "name", "file_path", "line_start", "confidence"}


def test_pt_query_context_with_budget(pt, geo_ws):
    assert pt("-C", str(geo_ws), "ingest").code == 0
    r = pt("-C", str(geo_ws), "query", "context", "-p", "seeds=fn:geo/src/units.rs::scale", "-p", "budget_tokens=30",
           "--json")
    assert r.code == 0, r.err
    assert sum(row["tokens"] for row in r.json()["rows"]) <= 30


def test_pt_context_command(pt, geo_ws, cli_with_retrieval_commands):
    assert pt("-C", str(geo_ws), "ingest").code == 0
    r = pt("-C", str(geo_ws), "context", "geo/src/units.rs:5", "--budget", "80", "--no-vectors", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["seeds"] == ["fn:geo/src/units.rs::scale"] and doc["tokens"] <= 80
    r = pt("-C", str(geo_ws), "context", "geo/src/units.rs:999")
    assert r.code == 2 and "lines" in r.err and "Traceback" not in r.err


def test_bad_direction_is_refused(pt, geo_ws):
    assert pt("-C", str(geo_ws), "ingest").code == 0
    r = pt("-C", str(geo_ws), "query", "two_hop", "-p", "seeds=x", "-p", "direction=up")
    assert r.code == 2 and "retrieval.two_hop" in r.err


# ------------------------------------------------------------------ docs

def test_docs_document_every_retrieval_program():
    section = (REPO / "docs" / "retrieval.md").read_text(encoding="utf-8")
    programs = sorted(pid for pid in Registry(None).all() if pid.startswith("retrieval."))
    missing = [p for p in programs if f"`{p.split('.', 1)[1]}`" not in section]
    assert not missing, f"docs/retrieval.md does not document: {missing}"

