"""A re-ingested file extracted in part (runner/edit_region.py): only the items an edit changed
are extracted and handed to the rules, and the graph is the one a whole-file ingest gives."""
from __future__ import annotations

import pytest

from parseltongue.runner import edit_region
from parseltongue.runner.ingest import ingest

from test_ingest import geo_ws, same_as_cold, store  # noqa: F401 (geo_ws, store: fixtures)

LIB = "geo/src/lib.rs"
TOTAL = "pub fn total<T: Area>(items: &[T]) -> f64 {"


@pytest.fixture
def extracted(monkeypatch):
    """The node ids of each file's facts as extracted in part (None: extracted whole)."""
    seen: dict[str, list | None] = {}
    real = edit_region.extract

    def spy(rel, data, r):
        facts = real(rel, data, r)
        seen[rel] = None if facts is None else [n[0] for n in facts.nodes]
        return facts
    monkeypatch.setattr(edit_region, "extract", spy)
    return seen


@pytest.mark.parametrize("edit, redone", [
    (lambda t: t.replace(TOTAL, TOTAL + " let _pt = 1;"), "fn:{}::total"),  # same line: later bytes shift
    (lambda t: t.replace(TOTAL, TOTAL + "\n    let _pt = total(items);"), "fn:{}::total"),  # later lines move
    (lambda t: t.replace("    items.iter().map(|s| s.area()).sum()\n", "    0.0\n"), "fn:{}::total"),  # shorter
    (lambda t: t.replace("    fn area(&self) -> f64;\n", ""), "trait:{}::Area"),  # an item inside one goes
])
def test_an_edit_extracts_only_the_item_it_changed(geo_ws, store, extracted, edit, redone):
    """The edited item (and the file node) are extracted again; the items before and after it
    are not - and the graph is still exactly what a cold ingest of the edited tree gives."""
    ingest(geo_ws, store)
    lib = geo_ws / LIB
    lib.write_text(edit(lib.read_text()))
    report = ingest(geo_ws, store, paths=[LIB])
    assert report.files_parsed == 1
    same_as_cold(geo_ws, store)  # no stale fact of the edited item is kept
    assert extracted[LIB] == [f"file:{LIB}", redone.format(LIB)]  # and the others are not redone


@pytest.mark.parametrize("edit", [
    # a doc comment added right above the next item belongs to it: its span grows
    lambda t: t.replace('#[cfg(feature = "fancy")]', '/// Twice the total.\n#[cfg(feature = "fancy")]'),
    # a second `fancy_total` before the first: the one after the edit becomes `fancy_total~2`
    lambda t: t.replace(TOTAL, "pub fn fancy_total() {}\n" + TOTAL),
    # a `use` in a body: `raw_uses` rows are kept per file, not per item
    lambda t: t.replace(TOTAL, TOTAL + "\n    use std::fmt;"),
    # a syntax error
    lambda t: t.replace(TOTAL, TOTAL + " let = ;"),
])
def test_an_edit_a_region_cannot_hold_extracts_the_whole_file(geo_ws, store, extracted, edit):
    ingest(geo_ws, store)
    lib = geo_ws / LIB
    lib.write_text(edit(lib.read_text()))
    ingest(geo_ws, store, paths=[LIB])
    assert extracted.get(LIB) is None
    same_as_cold(geo_ws, store)


def test_a_file_hydrated_by_rust_analyzer_is_extracted_whole(geo_ws, store, extracted):
    """A re-ingest resets rust-analyzer's facts on every node of the file (a cold ingest has
    none), so the items an edit left as they were are rewritten too."""
    ingest(geo_ws, store)
    store.run(f"?[id, ra_hydrated_ts, ra_signature] := *isg_nodes:by_file{{file_path: '{LIB}', id}}, "
              "ra_hydrated_ts = 1.0, ra_signature = 'sig' :update isg_nodes {id => ra_hydrated_ts, ra_signature}")
    lib = geo_ws / LIB
    lib.write_text(lib.read_text().replace(TOTAL, TOTAL + " let _pt = 1;"))
    ingest(geo_ws, store, paths=[LIB])
    assert LIB not in extracted  # not even asked: the stored items say it was hydrated
    same_as_cold(geo_ws, store)


def test_edits_in_a_row_each_extracted_in_part(geo_ws, store, extracted):
    """Positions shifted by one partial update are where the next one finds its items."""
    ingest(geo_ws, store)
    lib = geo_ws / LIB
    for i in range(3):
        lib.write_text(lib.read_text().replace(TOTAL, TOTAL + f"\n    let _pt{i} = {i};"))
        ingest(geo_ws, store, paths=[LIB])
        assert extracted[LIB] == [f"file:{LIB}", f"fn:{LIB}::total"]
    lib.write_text(lib.read_text().replace("pub trait Area {", "pub trait Area {\n    fn perimeter(&self) -> f64;"))
    ingest(geo_ws, store, paths=[LIB])
    assert extracted[LIB] == [f"file:{LIB}", f"trait:{LIB}::Area", f"fn:{LIB}::Area::perimeter", f"fn:{LIB}::Area::area"]
    same_as_cold(geo_ws, store)
