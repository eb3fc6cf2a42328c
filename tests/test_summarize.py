"""One-line summaries (runner/summarize.py, `pt summarize`, rules/summaries/).

The flow tests drive `summarize_changed` with a scripted stand-in for the model (the one faked
component is the language model); the tests marked `needs_local` run the packaged Gemma 3 270M
through llama.cpp, which `scripts/setup.sh --dev` installs, so they run in CI."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from conftest import FIXTURES
from parseltongue.adapters import models as M
from parseltongue.adapters.store import open_store
from parseltongue.runner import summarize as S
from parseltongue.runner.api import Pt
from parseltongue.runner.ingest import ingest

HAVE_LOCAL = (importlib.util.find_spec("llama_cpp") is not None
              and importlib.util.find_spec(M.CATALOGUE[M.DEFAULT_MODEL].module) is not None)
needs_local = pytest.mark.skipif(not HAVE_LOCAL, reason="the extra `local` is not installed "
                                                        "(pip install 'parseltongue[local]')")


class Scripted:
    """Answers like a model would, from a table by node name; records what it was asked."""

    model_id = "scripted"

    def __init__(self, answers: dict[str, str] | None = None, default: str = " returns a value for {name}."):
        self.answers, self.default, self.asked = answers or {}, default, []

    def ask(self, row: dict) -> str:
        self.asked.append(row["id"])
        return self.answers.get(row["name"], self.default.format(name=row["name"]))


@pytest.fixture
def geo(tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    store = open_store(str(tmp_path / "g.db"))
    ingest(ws, store)
    with Pt(ws, store) as pt:
        yield pt


# ------------------------------------------------------------------ cleaning

@pytest.mark.parametrize("raw, status, summary", [
    (" is a function that returns the length of a string.", "ok", "returns the length of a string."),
    (" is a <code>Rust</code> enum that represents an error.\nMore text", "ok", "represents an error."),
    (" returns the area. It is a very useful function.", "ok", "returns the area."),
    ("", "empty", ""),
    ("   \n  ", "empty", ""),
    (" Circle", "garbage", ""),
    ("pub fn area(&self) -> f64 {", "garbage", ""),
    (" is a simple version of insert. is a simple version of insert. is a simple version of insert", "garbage", ""),
    (" ->  {} [] () :: <> &&", "garbage", ""),
    (" is the number of classes in the", "garbage", ""),
    (" is a wrapper for the [`fmt::Display`](https://rust-lang.org/en/docs/rust-lang-lang-lang-lang-lang", "garbage", ""),
    (" checks that a a b is sorted.", "ok", "checks that a a b is sorted."),
])
def test_clean_keeps_one_sentence_and_flags_garbage(raw, status, summary):
    ans = S.clean(raw)
    assert (ans.status, ans.summary) == (status, summary)
    assert "\n" not in ans.raw


def test_clean_bounds_the_line():
    ans = S.clean(" splits " + " ".join("w" + chr(97 + i % 26) + chr(97 + i // 26) for i in range(80)))
    assert ans.status == "ok" and len(ans.summary) <= S.MAX_CHARS + 3 and ans.summary.endswith("...")


def test_prompt_names_the_item_and_bounds_the_code():
    p = S.prompt_for({"kind": "fn", "item_path": "geo::total", "code": "x" * 10000})
    assert "function `geo::total`" in p and p.count("x") == S.CODE_CHARS


# ------------------------------------------------------------------ the incremental flow

def test_summaries_are_incremental_by_code_hash(geo):
    model = Scripted()
    first = S.summarize_changed(geo, model)
    assert first["summarized"] == first["planned"] > 10 and first["left"] == 0
    rows = geo.query("summaries.list", model="scripted")
    assert len(rows) == first["planned"] and all(r["status"] == "ok" for r in rows)
    assert not any(r["id"].startswith(("impl:", "mod:", "file:")) for r in rows)  # leaf items only
    again = S.summarize_changed(geo, Scripted())
    assert again["planned"] == 0 and again["summarized"] == 0
    # Change one fn's code: only it is asked again, and its old row goes.
    f = geo.workspace / "geo" / "src" / "units.rs"
    f.write_text(f.read_text().replace("x * one()", "x * one() * 1.0"))
    ingest(geo.workspace, geo.store)
    third = Scripted()
    rep = S.summarize_changed(geo, third)
    assert third.asked == ["fn:geo/src/units.rs::scale"] and rep["summarized"] == 1
    assert len(geo.store.run("?[h] := *node_summaries{id: 'fn:geo/src/units.rs::scale', model: 'scripted', hash: h}").rows) == 1


def test_empty_and_garbage_answers_are_recorded_not_believed(geo):
    S.summarize_changed(geo, Scripted({"scale": "", "total": "fn total<T: Area>(items: &[T]) -> f64 {"}))
    rows = {r["id"]: r for r in geo.query("summaries.list", model="scripted")}
    assert rows["fn:geo/src/units.rs::scale"]["status"] == "empty"
    total = rows["fn:geo/src/lib.rs::total"]
    assert total["status"] == "garbage" and total["summary"] == "" and total["raw"].startswith("fn total")
    node = geo.query("retrieval.node", id="fn:geo/src/lib.rs::total", model="scripted")[0]
    assert node["summary"] == ""
    assert S.summarize_changed(geo, Scripted())["planned"] == 0  # remembered: not asked again
    stats = {r["status"]: r["count(id)"] for r in geo.query("summaries.stats", model="scripted")}
    assert stats["empty"] == 1 and stats["garbage"] == 1


def test_summaries_are_searched_and_shown(geo):
    S.summarize_changed(geo, Scripted({"scale": " multiplies a length by the unit factor."}))
    hits = geo.query("retrieval.search", query="multiplies factor", model="scripted")
    assert [h["id"] for h in hits] == ["fn:geo/src/units.rs::scale"]
    node = geo.query("retrieval.node", id="fn:geo/src/units.rs::scale", model="scripted")[0]
    assert node["summary"] == "multiplies a length by the unit factor."


class Slow(Scripted):
    def ask(self, row: dict) -> str:
        import time

        time.sleep(0.2)
        return super().ask(row)


def test_budget_and_paths_limit_the_work(geo):
    rep = S.summarize_changed(geo, Scripted(), budget_s=0)
    assert rep["summarized"] == 0 and rep["left"] == rep["planned"] > 0
    # The budget is checked before every node, not only between batches of 8.
    rep = S.summarize_changed(geo, Slow(), budget_s=0.5, batch=8)
    assert 1 <= rep["summarized"] <= 4 and rep["left"] == rep["planned"] - rep["summarized"]
    assert len(geo.query("summaries.list", model="scripted")) == rep["summarized"]
    model = Scripted()
    seen = []
    rep = S.summarize_changed(geo, model, paths=["geo/src/shapes/"], batch=2,
                              progress=lambda done, total, _s: seen.append((done, total)))
    assert model.asked and all(i.split(":", 1)[1].startswith("geo/src/shapes/") for i in model.asked)
    assert seen[-1] == (rep["planned"], rep["planned"]) and len(seen) == (rep["planned"] + 1) // 2


def test_eta_line():
    assert S.eta_line(10, 40, 5.0) == "pt summarize: 10/40 nodes, 2.00 nodes/s, ETA 0m15s"


def test_cli_errors_are_one_line(pt, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", str(tmp_path / "empty-registry"))
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    r = pt("-C", str(ws), "summarize")
    assert r.code == 2 and "pt models ensure" in r.err and "Traceback" not in r.err
    r = pt("-C", str(ws), "summarize", "/etc")
    assert r.code == 2 and "outside the workspace" in r.err
    r = pt("-C", str(ws), "summarize", "geo/src/nope.rs")
    assert r.code == 2 and "does not exist" in r.err


# ------------------------------------------------------------------ the real model

@pytest.fixture(scope="module")
def registry(packaged_registry):
    mp = pytest.MonkeyPatch()
    mp.delenv("PT_MEM_AVAILABLE_MB", raising=False)
    yield packaged_registry
    mp.undo()


@needs_local
def test_pt_summarize_with_the_packaged_model(pt, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", str(registry))
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    assert pt("-C", str(ws), "ingest").code == 0
    r = pt("-C", str(ws), "summarize", "geo/src/shapes/", "--json")
    assert r.code == 0, r.err
    rep = json.loads(r.out)
    assert rep["summarized"] == rep["planned"] == 8 and rep["model"] == M.DEFAULT_MODEL
    assert "pt summarize: 8/8 nodes" in r.err and "ETA" in r.err
    with Pt(ws, open_store(str(ws / ".parseltongue" / "graph.db"))) as p:
        rows = p.query("summaries.list", model=M.DEFAULT_MODEL)
    assert len(rows) == 8 and all(r["file_path"].startswith("geo/src/shapes/") for r in rows)
    for row in rows:  # shape: one bounded line, and the status says whether it is usable
        assert "\n" not in row["raw"] and len(row["raw"]) <= S.MAX_CHARS + 3
        assert (row["status"] == "ok") == bool(row["summary"]) and row["ms"] > 0
    assert sum(1 for row in rows if row["status"] == "ok") >= 4  # most lines of a 270M model are usable
    r = pt("-C", str(ws), "summarize", "geo/src/shapes/", "--json")
    assert json.loads(r.out)["summarized"] == 0  # incremental


@needs_local
def test_the_model_answers_the_same_every_time(registry, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", str(registry))
    rows = [{"id": "a", "kind": "fn", "name": "area", "item_path": "Circle::area",
             "code": "fn area(&self) -> f64 {\n    3.14159 * self.r * self.r\n}"},
            {"id": "b", "kind": "struct", "name": "Circle", "item_path": "Circle", "code": "pub struct Circle { pub r: f64 }"}]
    s = S.Summarizer.load()
    try:
        first = [s.ask(r) for r in rows]
        # Asked in another order (other KV-cache history): the same text, since each ask starts clean.
        second = [s.ask(r) for r in reversed(rows)][::-1]
    finally:
        s.close()
    assert first == second and all(isinstance(t, str) for t in first)


@needs_local
def test_summarize_refuses_to_load_without_memory(pt, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", str(registry))
    monkeypatch.setenv("PT_MEM_AVAILABLE_MB", "256")
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURES / "ingest_ws", ws)
    r = pt("-C", str(ws), "summarize")
    assert r.code == 2 and "256 MB are free" in r.err and "Traceback" not in r.err
